"""Shared building blocks of every mmgen model. Imports torch and einops only: never
`mmgen.models`."""
from .attention import Attention, KVCache, attention, attention_math, make_attn_mask
from .block import Transformer, TransformerBlock, TransformerConfig
from .cond import AdaLNModulation, modulate
from .conv import AttnBlock, Downsample, ResBlock, Upsample, group_norm, num_groups
from .drop import DropPath, LayerScale
from .embed import STEMS, FactorisedEmbedding, FactorisedHead, PatchEmbed, TimestepEmbedding, make_patch_embed
from .init import init_linears
from .mlp import GatedMlp, Mlp, make_mlp, mlp_hidden_dim
from .norm import LayerNorm, RMSNorm, make_norm
from .pos import (LearnedPositions, RotaryEmbedding, apply_rope, grid_positions, sincos_1d, sincos_2d,
                  timestep_features)

__all__ = [
    "Attention", "KVCache", "attention", "attention_math", "make_attn_mask",
    "Transformer", "TransformerBlock", "TransformerConfig", "AdaLNModulation", "modulate",
    "AttnBlock", "Downsample", "ResBlock", "Upsample", "group_norm", "num_groups",
    "DropPath", "LayerScale", "init_linears", "FactorisedEmbedding", "FactorisedHead", "PatchEmbed", "STEMS", "make_patch_embed", "TimestepEmbedding", "GatedMlp", "Mlp", "make_mlp",
    "mlp_hidden_dim", "LayerNorm", "RMSNorm", "make_norm", "LearnedPositions", "RotaryEmbedding",
    "apply_rope", "grid_positions", "sincos_1d", "sincos_2d", "timestep_features",
]
