"""Fine-tuning for every mmgen model: LoRA, weight-only quantisation (QLoRA-style bases),
freezing, prefix tuning, P-tuning, DPO and a Bradley-Terry reward model. See docs/llm.md."""
from .dpo import DPOModel, collate_preferences, dpo_loss, sequence_logprobs
from .freeze import freeze, freeze_layers, trainable_names, unfreeze
from .lora import (LoRAConfig, LoRALinear, apply_lora, load_adapter, lora_state_dict, merge_and_unload,
                   merge_lora, save_adapter, trainable_summary, unmerge_lora)
from .prefix import PrefixGPT, PrefixTuning, add_prefix, remove_prefix
from .ptuning import PromptEncoder, PTuningGPT, add_ptuning, load_prompt, remove_ptuning, save_prompt
from .quant import QuantLinear, model_bytes, quantize_model
from .reward import RewardModel, bradley_terry_loss

__all__ = ["LoRAConfig", "LoRALinear", "apply_lora", "merge_lora", "unmerge_lora", "merge_and_unload",
           "save_adapter", "load_adapter", "lora_state_dict", "trainable_summary", "QuantLinear",
           "quantize_model", "model_bytes", "freeze", "unfreeze", "freeze_layers", "trainable_names",
           "PrefixTuning", "PrefixGPT", "add_prefix", "remove_prefix",
           "PromptEncoder", "PTuningGPT", "add_ptuning", "remove_ptuning", "save_prompt", "load_prompt", "DPOModel", "dpo_loss", "sequence_logprobs", "collate_preferences",
           "RewardModel", "bradley_terry_loss"]
