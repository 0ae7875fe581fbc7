"""Text encoders, one home for every model that reads text through a transformer:

  TextTower           CLIP's text tower (token embedding + positions -> causal or
                      bidirectional Transformer -> the state at EOS); `encode_states` gives
                      every token's state, used by CLIP (pooled) and DDPM (cross-attention).
  ByteTextEncoder     DDPM's built-in encoder: a small bidirectional transformer over bytes,
                      trained jointly.
  PretrainedTextEncoder
                      a trained mmgen CLIP (its TextTower) or GPT decoder as a
                      conditioning encoder, frozen or fine-tuned with the model that reads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..layers import LearnedPositions, Transformer, TransformerConfig
from ..layers.mlp import MLPS
from ..layers.norm import NORMS

POOLS = ("eos", "argmax", "last", "mean")
TEXT_POS = ("learned", "rope")


@dataclass
class CLIPTextConfig:
    vocab_size: int = 0  # 0: the tokenizer's vocabulary size, filled in when the model is built
    context_length: int = 32  # tokens, BOS and EOS included
    embed_dim: int = 128
    depth: int = 3
    num_heads: int = 4
    mlp: str = "gelu"
    mlp_ratio: float = 4.0
    norm: str = "layernorm"
    pos: str = "learned"  # learned | rope
    causal: bool = True  # CLIP's text tower is causal; False = bidirectional with a padding mask
    # eos (first EOS token) | argmax (open_clip: highest id) | last | mean (of the states up to
    # EOS: every word reaches the embedding directly from the first step, not only through attention)
    pool: str = "eos"
    dropout: float = 0.0
    pad_id: int = -1  # -1: from the tokenizer
    eos_id: int = -1

    def __post_init__(self):
        for name, value, allowed in (("pool", self.pool, POOLS), ("mlp", self.mlp, MLPS),
                                     ("norm", self.norm, NORMS), ("pos", self.pos, TEXT_POS)):
            if value not in allowed:
                raise ValueError(f"text.{name} must be one of {allowed}, got {value!r}")
        if self.context_length < 3:
            raise ValueError(f"text.context_length must hold BOS, a token and EOS (>= 3), got {self.context_length}")
        if not self.causal and self.pool == "last":
            raise ValueError("text.pool='last' reads padding in a bidirectional tower: use pool='eos'")


class TextTower(nn.Module):
    """Token embedding + positions -> causal Transformer (shared blocks, final norm) -> the
    hidden state at the EOS token (CLIP's EOT pooling). Output (B, width)."""

    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.pos = LearnedPositions(cfg.context_length, cfg.embed_dim, std=0.01) if cfg.pos == "learned" else None
        self.transformer = Transformer(TransformerConfig(
            embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp=cfg.mlp, mlp_ratio=cfg.mlp_ratio,
            norm=cfg.norm, causal=cfg.causal, rope="1d" if cfg.pos == "rope" else "none",
            dropout=cfg.dropout, final_norm=True))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.transformer.init_weights(std=0.02)

    def pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B,) position of the token whose hidden state represents the text (pool='mean': the
        last one averaged, the first EOS)."""
        cfg = self.cfg
        if cfg.pool == "argmax":
            return tokens.argmax(dim=-1)
        if cfg.pool == "last":
            return torch.full(tokens.shape[:1], tokens.shape[1] - 1, device=tokens.device, dtype=torch.long)
        is_eos = tokens == cfg.eos_id
        if not bool(is_eos.any(-1).all()):
            bad = (~is_eos.any(-1)).nonzero().flatten().tolist()
            raise ValueError(f"text rows {bad[:8]} have no EOS token (id {cfg.eos_id}); tokenize with "
                             f"model.tokenize(), which adds BOS/EOS")
        return is_eos.int().argmax(dim=-1)  # first EOS

    def encode_states(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) token ids -> (every token's state (B, T, width), the pooled position (B,))."""
        cfg = self.cfg
        if tokens.ndim != 2 or tokens.dtype != torch.long:
            raise ValueError(f"text tokens must be a (batch, seq) LongTensor, got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.shape[1] > cfg.context_length:
            raise ValueError(f"text of {tokens.shape[1]} tokens exceeds the context of {cfg.context_length}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size):
            raise ValueError(f"token ids must be in [0, {cfg.vocab_size}), got [{int(tokens.min())}, "
                             f"{int(tokens.max())}]: was this text tokenized with this model's tokenizer?")
        x = self.token_embedding(tokens)  # (B, T, width)
        if self.pos is not None:
            x = self.pos(x)
        key_padding = None if cfg.causal else tokens != cfg.pad_id  # causal: padding sits after EOS
        return self.transformer(x, key_padding=key_padding), self.pool_index(tokens)

    def pool(self, states: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Every token's state (B, T, width) and pool_index (B,) -> the text's state (B, width)."""
        if self.cfg.pool == "mean":
            real = (torch.arange(states.shape[1], device=states.device)[None] <= idx[:, None])  # (B, T)
            return (states * real[..., None]).sum(1) / real.sum(1, keepdim=True)
        return states[torch.arange(states.shape[0], device=states.device), idx]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> the pooled state (B, width)."""
        return self.pool(*self.encode_states(tokens))


@dataclass
class TextEncoderConfig:
    """The built-in text encoder (used when text_encoder='builtin')."""
    embed_dim: int = 128
    depth: int = 2
    num_heads: int = 4
    context_length: int = 64


class ByteTextEncoder(nn.Module):
    """Bidirectional transformer over bytes -> token states (B, S, dim), mask, pooled (B, dim)."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.cfg = cfg
        from ..text import get_tokenizer
        self.tokenizer = get_tokenizer("byte")  # ids 0..255 bytes, then bos/eos/pad
        self.tok = nn.Embedding(self.tokenizer.vocab_size, cfg.embed_dim)
        self.pos = LearnedPositions(cfg.context_length, cfg.embed_dim)
        self.transformer = Transformer(TransformerConfig(embed_dim=cfg.embed_dim, depth=cfg.depth,
                                                         num_heads=cfg.num_heads))
        nn.init.normal_(self.tok.weight, std=0.02)
        self.transformer.init_weights()

    @property
    def width(self) -> int:
        return self.cfg.embed_dim

    def forward(self, texts: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from ..data.collate import tokenize_captions
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"prompts must be strings, got {type(t).__name__}")
        tok = tokenize_captions(list(texts), self.tokenizer, self.cfg.context_length, on_overflow="truncate",
                                pad_to="longest")  # warns when a prompt is cut
        ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)  # (B, S)
        h = self.transformer(self.pos(self.tok(ids)), key_padding=mask)  # (B, S, dim)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return h, mask, pooled


class PretrainedTextEncoder(nn.Module):
    """A trained mmgen CLIP text tower or GPT decoder as a text encoder, frozen or, with
    trainable=True, fine-tuned together with the model that reads it (a CLIP's image tower
    stays frozen: only the text tower gets gradients).

    clip: the text tower's token states (B, T, width) before its pooling, real up to the EOS
          token; pooled = the state it pools (the EOS token), before CLIP's projection.
    gpt:  the decoder's final hidden states (B, T, dim) over BOS + prompt + EOS (causal, so
          right padding does not change them); pooled = the state at EOS, which has read the
          whole prompt."""

    def __init__(self, kind: str, model: nn.Module, trainable: bool = False):
        super().__init__()
        expected = {"clip": "clip", "gpt": "gpt"}[kind]
        if getattr(model, "model_type", None) != expected:
            raise TypeError(f"text_encoder={kind!r} needs a {expected!r} checkpoint, got a "
                            f"{getattr(model, 'model_type', type(model).__name__)!r} model")
        self.kind, self.trainable = kind, trainable
        self.model = model.eval().requires_grad_(False)
        if trainable:
            (model.text if kind == "clip" else model).requires_grad_(True)
        if kind == "gpt":
            from ..text import get_tokenizer
            self.tokenizer = get_tokenizer("byte")
            if self.tokenizer.vocab_size > model.config.vocab_size:
                raise ValueError(f"the GPT text encoder must be byte-level (vocab >= {self.tokenizer.vocab_size}), "
                                 f"got vocab_size={model.config.vocab_size}")

    @property
    def width(self) -> int:
        return self.model.text.cfg.embed_dim if self.kind == "clip" else self.model.config.block.embed_dim

    def train(self, mode: bool = True):  # eval mode even when fine-tuned: no dropout in the encoder
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, texts, device):
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self._encode(list(texts), device)

    def _encode(self, texts, device):
        if self.kind == "clip":
            tokens = self.model.tokenize(texts).to(device)  # (B, T) with BOS ... EOS pad
            states, eos = self.model.text.encode_states(tokens)  # (B, T, width), (B,)
            pooled = self.model.text.pool(states, eos)  # (B, width)
        else:
            from ..data.collate import tokenize_captions
            tok = tokenize_captions(texts, self.tokenizer, self.model.config.context_length, on_overflow="truncate",
                                    pad_to="longest")
            ids, real = tok["input_ids"].to(device), tok["attention_mask"].to(device)
            _, states = self.model(ids, key_padding=real, return_hidden=True)  # (B, T, dim)
            eos = tok["eot_index"].to(device)
            pooled = states[torch.arange(states.shape[0], device=device), eos]  # (B, width)
        mask = torch.arange(states.shape[1], device=device)[None] <= eos[:, None]  # (B, T) real tokens
        return states.float(), mask, pooled.float()
