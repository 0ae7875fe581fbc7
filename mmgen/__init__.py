"""mmgen: small multimodal generative models from one library of transformer blocks."""
from .checkpoint import PretrainedMixin, load_pretrained
from .registry import create_model, list_models, register_model, register_preset


def _keep_old_names_on_shared_configs() -> None:
    """TransformerConfig is built directly too (not only inside a registered model's config):
    its old field names (`dim`) read and construct with a FutureWarning from the start."""
    from .config import keep_old_attribute_names
    from .layers import TransformerConfig
    keep_old_attribute_names(TransformerConfig)


_keep_old_names_on_shared_configs()

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_pretrained", "register_model", "register_preset",
           "PretrainedMixin", "__version__"]
