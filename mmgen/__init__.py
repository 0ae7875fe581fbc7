"""mmgen: small multimodal generative models from one library of transformer blocks."""
from .checkpoint import PretrainedMixin, load_pretrained
from .registry import create_model, list_models, register_model, register_preset

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_pretrained", "register_model", "register_preset",
           "PretrainedMixin", "__version__"]
