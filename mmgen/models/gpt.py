"""GPT: a decoder-only transformer built from `mmgen.layers.Transformer` (causal).

The config picks positions (learned table or RoPE), norm kind and placement, MLP kind,
num_kv_heads (MHA / GQA / MQA), sliding-window attention, weight tying and dropout; the
presets cover a tiny test model, char-level Shakespeare, GPT-2 small and a LLaMA-shaped
model. Generation (`generate`, `stream_generate`) runs on a preallocated KV cache with the
sampler of `mmgen.text.sampling`; ragged prompt batches are left-padded with a key padding
mask and per-row positions, so each row decodes exactly as it would alone.

Pieces a multimodal subclass (DALL-E) overrides or reuses: `embed(input_ids, positions)`,
`head(hidden)`, `forward(..., return_hidden=True)`, `make_cache(batch, max_len)`.
"""
from __future__ import annotations


from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import KVCache, LearnedPositions, Transformer, TransformerConfig
from ..registry import register_model, register_preset
from ..text.sampling import SamplingParams, StopChecker, make_generator, sample_next
from .base import Model

POSITIONS = ("learned", "rope")
OVERFLOW = ("error", "slide")


@dataclass
class GPTConfig:
    vocab_size: int = 259  # byte-level: 256 bytes + bos, eos, pad (mmgen.text ByteTokenizer)
    context: int = 256  # block size: the most positions the model attends over
    dim: int = 256
    depth: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None  # None = num_heads (MHA); 1 = MQA; in between = GQA
    head_dim: int | None = None  # None = dim // num_heads
    pos: str = "learned"  # learned (absolute table) | rope
    rope_theta: float = 10000.0
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    norm_place: str = "pre"  # pre | post | sandwich
    mlp: str = "gelu"  # gelu | gelu_tanh | relu2 | swiglu | geglu
    mlp_ratio: float = 4.0
    mlp_hidden: int | None = None  # exact MLP width (overrides mlp_ratio)
    mlp_multiple_of: int = 8  # gated MLP width rounded up to this (LLaMA)
    bias: bool = True  # biases in the linears and LayerNorms (GPT-2: yes; LLaMA: no)
    qk_norm: bool = False
    window: int | None = None  # sliding-window attention: each token sees the last `window` tokens
    tie_weights: bool = True  # share the token embedding with the output head
    dropout: float = 0.0  # embeddings, attention output and MLP (nanoGPT's one knob)
    attn_dropout: float = 0.0  # on the attention probabilities
    attn_impl: str = "sdpa"  # sdpa (fused) | math (reference)
    init_std: float = 0.02  # GPT-2 init: N(0, std), residual projections / sqrt(2 * depth)

    def __post_init__(self):
        if self.pos not in POSITIONS:
            raise ValueError(f"pos must be one of {POSITIONS}, got {self.pos!r}")
        if self.vocab_size < 1 or self.context < 1:
            raise ValueError(f"vocab_size and context must be >= 1, got {self.vocab_size}, {self.context}")
        block = self.block_config()  # validates the transformer fields
        if self.pos == "rope" and block.dim_head % 2:
            raise ValueError(f"pos='rope' needs an even head dim, got {block.dim_head}")

    @property
    def block(self) -> TransformerConfig:
        """Read-only view of the block stack's config (`config.block.dim`); set the flat fields."""
        return self.block_config()

    def block_config(self) -> TransformerConfig:
        """The causal TransformerConfig of the block stack."""
        return TransformerConfig(
            dim=self.dim, depth=self.depth, num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim, mlp=self.mlp, mlp_ratio=self.mlp_ratio, mlp_multiple_of=self.mlp_multiple_of,
            mlp_hidden=self.mlp_hidden, norm=self.norm, norm_eps=self.norm_eps, norm_bias=self.bias,
            norm_place=self.norm_place, final_norm=True, qkv_bias=self.bias, proj_bias=self.bias,
            mlp_bias=self.bias, qk_norm=self.qk_norm, causal=True, window=self.window,
            rope="1d" if self.pos == "rope" else "none", rope_theta=self.rope_theta, dropout=self.dropout,
            attn_dropout=self.attn_dropout, attn_impl=self.attn_impl)


@register_model("gpt")
class GPT(Model):
    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        c = config
        d = c.dim
        self.tok_embed = nn.Embedding(c.vocab_size, d)
        self.pos_embed = LearnedPositions(c.context, d) if c.pos == "learned" else None
        self.drop = nn.Dropout(c.dropout)
        self.transformer = Transformer(c.block_config())
        self.lm_head = nn.Linear(d, c.vocab_size, bias=False)
        self.init_weights()
        if c.tie_weights:
            self.lm_head.weight = self.tok_embed.weight

    def init_weights(self) -> None:
        """GPT-2 initialisation: N(0, init_std) everywhere, zero biases, and the attention /
        MLP output projections scaled by 1 / sqrt(2 * depth)."""
        std = self.config.init_std
        self.transformer.init_weights(std=std, residual_scale=True)
        nn.init.normal_(self.tok_embed.weight, std=std)
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed.weight, std=std)
        if not self.config.tie_weights:
            nn.init.normal_(self.lm_head.weight, std=std)

    # ---- the forward pieces ---------------------------------------------------------------
    def default_positions(self, batch: int, T: int, start: int = 0) -> torch.Tensor:
        return torch.arange(start, start + T, device=self.tok_embed.weight.device).expand(batch, T)

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Token (+ learned position) embeddings: ids (B, T), positions (B, T) -> (B, T, dim)."""
        x = self.tok_embed(input_ids)
        if self.pos_embed is not None:
            if int(positions.max()) >= self.config.context:
                raise ValueError(f"position {int(positions.max())} is outside the learned table of "
                                 f"context={self.config.context} positions")
            x = x + self.pos_embed.weight[positions].to(x.dtype)
        return self.drop(x)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, dim) -> logits (B, T, vocab)."""
        return self.lm_head(hidden)

    def forward(self, input_ids: torch.Tensor, *, positions: torch.Tensor | None = None,
                key_padding: torch.Tensor | None = None, cache: list[KVCache] | None = None,
                start: int = 0, return_hidden: bool = False):
        """input_ids (B, T) -> logits (B, T, vocab) [and the final hidden states (B, T, dim)].

        positions: (B, T) or (T,) absolute positions (default start + arange(T)); left-padded
        rows pass their own. key_padding: (B, start + T) with a cache, else (B, T); True
        marks real tokens. cache + start: decode incrementally (see `make_cache`)."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq) token ids, got shape {tuple(input_ids.shape)}")
        if input_ids.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
        B, T = input_ids.shape
        if positions is None:
            positions = self.default_positions(B, T, start)
        elif positions.ndim == 1:
            positions = positions.expand(B, T)
        x = self.embed(input_ids, positions)  # (B, T, dim)
        h = self.transformer(x, positions=positions if self.config.pos == "rope" else None,
                             key_padding=key_padding, cache=cache, start=start)
        logits = self.head(h)
        return (logits, h) if return_hidden else logits

    def make_cache(self, batch: int, max_len: int | None = None, *, dtype=None, device=None) -> list[KVCache]:
        """Preallocated per-layer KV caches of `max_len` positions (default: the context)."""
        return self.transformer.make_cache(batch, max_len or self.config.context, dtype=dtype,
                                           device=device or self.tok_embed.weight.device)

    # ---- training contract -----------------------------------------------------------------
    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """batch {"input_ids" (B, T), "labels" (B, T)}: labels[t] is the target of position t
        (the next token, already shifted); -100 is ignored. Mean cross-entropy in nats/token."""
        input_ids, labels = batch["input_ids"], batch["labels"]
        if labels.shape != input_ids.shape:
            raise ValueError(f"labels {tuple(labels.shape)} must have the shape of input_ids {tuple(input_ids.shape)}")
        logits = self(input_ids)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self, batch: dict) -> dict[str, float]:
        """Validation logs: loss, token_acc (argmax = label over the labelled positions) and
        seq_exact (rows whose every labelled token is the argmax: for one answer per row, the
        greedy exact-match rate); with a ``task`` list of strings, seq_exact per task too."""
        logits = self(batch["input_ids"])
        labels = batch["labels"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        scored = labels != -100
        right = (logits.argmax(-1) == labels) & scored  # (B, T)
        rows = scored.any(1)
        exact = ((right | ~scored).all(1) & rows).float()  # (B,)
        logs = {"loss": loss.item(), "token_acc": (right.sum() / scored.sum().clamp(min=1)).item(),
                "seq_exact": (exact.sum() / rows.sum().clamp(min=1)).item()}
        tasks = batch.get("task")
        if isinstance(tasks, (list, tuple)) and len(tasks) == len(exact):
            for name in sorted(set(tasks)):
                sel = torch.tensor([t == name for t in tasks], device=exact.device)
                logs[f"seq_exact_{name}"] = exact[sel].mean().item()
        return logs

    def example_batch(self, batch_size: int = 2, device="cpu") -> dict:
        T = min(self.config.context, 16)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, self.config.vocab_size, (batch_size, T + 1), generator=g).to(device)
        return {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B / nanoGPT:
        6 * (matmul params: blocks + head) + 12 * depth * seq_len * dim (attention scores)."""
        c, T = self.transformer.cfg, seq_len or self.config.context
        n = sum(p.numel() for p in self.transformer.parameters()) + self.lm_head.weight.numel()
        return 6.0 * n + 12.0 * c.depth * T * c.num_heads * c.dim_head

    # ---- generation ------------------------------------------------------------------------
    def _rows(self, prompts, tokenizer=None) -> list[list[int]]:
        if isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts and isinstance(prompts[0], str)):
            if tokenizer is None:
                raise ValueError("text prompts need tokenizer=...; or pass token ids")
            prompts = [prompts] if isinstance(prompts, str) else prompts
            rows = [tokenizer.encode(p) for p in prompts]
        elif isinstance(prompts, torch.Tensor):
            if prompts.ndim == 1:
                prompts = prompts[None]
            if prompts.ndim != 2:
                raise ValueError(f"prompt ids must be (T,) or (batch, T), got shape {tuple(prompts.shape)}")
            rows = prompts.tolist()
        elif isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], int):
            rows = [list(prompts)]
        elif isinstance(prompts, Sequence) and prompts:
            rows = [list(map(int, r)) for r in prompts]
        else:
            raise ValueError(f"prompts must be token ids (a list, a list of lists or a tensor) or text, "
                             f"got {type(prompts).__name__} {prompts!r:.40}")
        V = self.config.vocab_size
        for i, r in enumerate(rows):
            if not r:
                raise ValueError(f"prompt {i} is empty: every prompt needs at least one token (e.g. a BOS id)")
            bad = [t for t in r if not 0 <= t < V]
            if bad:
                raise ValueError(f"prompt {i} has token ids {bad[:5]} outside the vocabulary [0, {V})")
        return rows

    @torch.no_grad()
    def stream_generate(self, prompts, max_new_tokens: int = 64, *, temperature: float = 1.0,
                        top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
                        repetition_penalty: float = 1.0, stop=None, eos_id: int | None = None,
                        seed: int | None = None, generator: torch.Generator | None = None,
                        tokenizer=None, use_cache: bool = True, overflow: str = "error",
                        pad_id: int = 0, logits_processor=None) -> Iterator[list[int | None]]:
        """Yield, per step, a list with the new token of every row (None for rows that have
        stopped). Stops after `max_new_tokens` or when every row hit `eos_id` or one of
        `stop` (token-id sequences, or strings with `tokenizer`); the stop tokens are emitted.

        prompts: ids (list, list of lists of different lengths, (B, T) tensor) or text with
        `tokenizer`. overflow: when prompt + max_new_tokens exceeds the context, "error"
        raises; "slide" keeps going, re-encoding the most recent context // 2 tokens each
        time the window fills (every token then sees between context/2 and context tokens).
        logits_processor: optional `fn(logits (B, V), step) -> logits`, applied before the
        sampler (e.g. to restrict a multimodal vocabulary to image tokens).
        """
        if overflow not in OVERFLOW:
            raise ValueError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty)
        rows = self._rows(prompts, tokenizer)
        ctx, V, dev = self.config.context, self.config.vocab_size, self.tok_embed.weight.device
        B, P = len(rows), max(len(r) for r in rows)
        if P + max_new_tokens > ctx:
            if overflow == "error" or P > ctx:
                raise ValueError(
                    f"prompt of {P} tokens + max_new_tokens={max_new_tokens} = {P + max_new_tokens} exceeds the "
                    f"context of {ctx} tokens; shorten the prompt, lower max_new_tokens"
                    + (" or pass overflow='slide'" if P <= ctx else ""))
        gen = generator if generator is not None else make_generator(seed, dev)
        stopper = StopChecker(B, stop, eos_id=eos_id, tokenizer=tokenizer)
        was_training = self.training
        self.eval()
        try:
            # left-pad: (B, P) ids and a True-for-real mask
            ids = torch.full((B, P), pad_id, dtype=torch.long, device=dev)
            mask = torch.zeros(B, P, dtype=torch.bool, device=dev)
            for b, r in enumerate(rows):
                ids[b, P - len(r):] = torch.tensor(r, device=dev)
                mask[b, P - len(r):] = True
            seen = torch.zeros(B, V + 1, dtype=torch.bool, device=dev)
            seen.scatter_(1, ids.masked_fill(~mask, V), True)
            seen = seen[:, :V]  # (B, V): tokens present in each row
            done = torch.zeros(B, dtype=torch.bool, device=dev)

            def prefill(ids, mask):
                positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T) per-row positions
                cache = self.make_cache(B, min(ctx, ids.shape[1] + max_new_tokens)) if use_cache else None
                kp = None if bool(mask.all()) else mask
                logits = self(ids, positions=positions, key_padding=kp, cache=cache)
                return logits[:, -1], cache, positions[:, -1]

            logits, cache, last_pos = prefill(ids, mask)
            # a vocabulary padded past the tokenizer's (e.g. to a multiple of 64) never emits the extra ids
            tok_vocab = getattr(tokenizer, "vocab_size", V)
            for step in range(max_new_tokens):
                if tok_vocab < V:
                    logits = logits.masked_fill(torch.arange(V, device=dev) >= tok_vocab, float("-inf"))
                if logits_processor is not None:
                    logits = logits_processor(logits, step)
                nxt = sample_next(logits, params, seen, gen)  # (B,)
                nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
                seen[torch.arange(B, device=dev), nxt] |= ~done
                out: list[int | None] = []
                for b, t in enumerate(nxt.tolist()):
                    if done[b]:
                        out.append(None)
                        continue
                    out.append(t)
                    if stopper.update(b, t):
                        done[b] = True
                yield out
                if bool(done.all()) or step == max_new_tokens - 1:
                    return
                ids = torch.cat([ids, nxt[:, None]], 1)
                mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
                last_pos = last_pos + 1
                if ids.shape[1] > ctx or (not use_cache):
                    if ids.shape[1] > ctx:  # overflow == "slide": keep the newest half of the window
                        keep = max(ctx // 2, 1)
                        ids, mask = ids[:, -keep:], mask[:, -keep:]
                    logits, cache, last_pos = prefill(ids, mask)
                    continue
                T = ids.shape[1]
                kp = None if bool(mask.all()) else mask
                logits = self(nxt[:, None], positions=last_pos[:, None], key_padding=kp, cache=cache,
                              start=T - 1)[:, -1]
        finally:
            self.train(was_training)

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens: int = 64, **kwargs) -> list[list[int]]:
        """The continuation ids of every prompt (stop tokens included); options as
        `stream_generate`. Seeded runs (`seed=`) are reproducible."""
        rows = None
        for step in self.stream_generate(prompts, max_new_tokens, **kwargs):
            if rows is None:
                rows = [[] for _ in step]
            for r, t in zip(rows, step):
                if t is not None:
                    r.append(t)
        if rows is None:
            rows = [[] for _ in self._rows(prompts, kwargs.get("tokenizer"))]
        return rows

    def generate_text(self, prompts: str | list[str], tokenizer, max_new_tokens: int = 64, **kwargs):
        """Text in, text continuations out (a str for one prompt, else a list)."""
        out = self.generate(prompts, max_new_tokens, tokenizer=tokenizer, **kwargs)
        texts = [tokenizer.decode(r) for r in out]
        return texts[0] if isinstance(prompts, str) else texts

    def load_hf_gpt2_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Copy a transformers GPT-2 state dict into this model (every weight must fit)."""
        try:
            ours = convert_hf_gpt2_state_dict(sd, self.config.depth)
            missing, unexpected = self.load_state_dict(ours, strict=False)
        except (KeyError, RuntimeError) as e:
            raise ValueError(f"GPT-2 state dict does not fit this GPT ({self.config.depth} layers, "
                             f"dim {self.config.dim}, vocab {self.config.vocab_size}): {e}"[:600]) from None
        if missing or unexpected:
            raise ValueError(f"GPT-2 state dict does not fit this GPT: missing {missing[:8]}, "
                             f"unexpected {unexpected[:8]}")


# ---- interop: Hugging Face GPT-2 -------------------------------------------------------------
def gpt2_config_from_hf(hf_config, **overrides) -> GPTConfig:
    """GPTConfig matching a transformers GPT2Config (pre-norm LayerNorm, tanh GELU, tied)."""
    act = getattr(hf_config, "activation_function", "gelu_new")
    mlp = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu2"}.get(act)
    if mlp is None or act == "relu":
        raise ValueError(f"GPT-2 activation {act!r} has no mmgen equivalent (supported: gelu_new, gelu)")
    kw = dict(vocab_size=hf_config.vocab_size, context=hf_config.n_positions, dim=hf_config.n_embd,
              depth=hf_config.n_layer, num_heads=hf_config.n_head, mlp=mlp,
              mlp_hidden=getattr(hf_config, "n_inner", None) or 4 * hf_config.n_embd, norm="layernorm",
              norm_eps=hf_config.layer_norm_epsilon, norm_place="pre", bias=True, pos="learned",
              tie_weights=getattr(hf_config, "tie_word_embeddings", True))
    kw.update(overrides)
    return GPTConfig(**kw)


def convert_hf_gpt2_state_dict(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """A transformers GPT2LMHeadModel / GPT2Model state dict -> GPT's names. HF's Conv1D
    stores weights as (in, out): they are transposed to nn.Linear's (out, in)."""
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    out = {"tok_embed.weight": sd["wte.weight"], "pos_embed.weight": sd["wpe.weight"],
           "transformer.norm.weight": sd["ln_f.weight"], "transformer.norm.bias": sd["ln_f.bias"]}
    out["lm_head.weight"] = sd.get("lm_head.weight", sd["wte.weight"])
    names = {"ln_1": "norm1", "ln_2": "norm2", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i in range(depth):
        for hf, ours in names.items():
            w, b = sd[f"h.{i}.{hf}.weight"], sd[f"h.{i}.{hf}.bias"]
            out[f"transformer.blocks.{i}.{ours}.weight"] = w if hf.startswith("ln") else w.t().contiguous()
            out[f"transformer.blocks.{i}.{ours}.bias"] = b
    return out


def gpt_from_hf_gpt2(hf_model_or_state_dict, hf_config=None) -> GPT:
    """Build a GPT from a transformers GPT2LMHeadModel (or its state dict + config)."""
    if isinstance(hf_model_or_state_dict, nn.Module):
        hf_config = hf_model_or_state_dict.config
        sd = hf_model_or_state_dict.state_dict()
    else:
        sd = hf_model_or_state_dict
        if hf_config is None:
            raise ValueError("loading a GPT-2 state dict needs its hf_config (a transformers GPT2Config)")
    model = GPT(gpt2_config_from_hf(hf_config))
    model.load_hf_gpt2_state_dict(sd)
    return model.eval()




# ---- presets ---------------------------------------------------------------------------------
LLAMA = dict(pos="rope", norm="rmsnorm", norm_eps=1e-6, mlp="swiglu", bias=False, tie_weights=False)

register_preset("gpt_tiny", GPT, "2-layer 64-wide byte-level GPT for tests",
                vocab_size=259, context=64, dim=64, depth=2, num_heads=4)
register_preset("gpt_llama_tiny", GPT, "LLaMA-shaped tiny GPT (RoPE, RMSNorm, SwiGLU, GQA 4:2, no biases, untied)",
                vocab_size=259, context=64, dim=64, depth=2, num_heads=4, num_kv_heads=2, **LLAMA)
register_preset("gpt_char_shakespeare", GPT,
                "nanoGPT's shakespeare_char shape (6 layers, 6 heads, 384 wide, context 256, dropout 0.2), "
                "byte-level vocabulary", vocab_size=259, context=256, dim=384, depth=6, num_heads=6, dropout=0.2)
register_preset("gpt_char_shakespeare_cpu", GPT,
                "char-level Shakespeare model sized for minutes of CPU training (4 layers, 128 wide, context 128)",
                vocab_size=259, context=128, dim=128, depth=4, num_heads=4)
register_preset("gpt2_small", GPT, "GPT-2 small shape (124M; loads HF GPT-2 weights)",
                vocab_size=50257, context=1024, dim=768, depth=12, num_heads=12, mlp="gelu_tanh")
register_preset("gpt_llama_d768_l12_gqa4", GPT,
                "LLaMA-shaped 12 x 768 decoder: RoPE, RMSNorm, SwiGLU, GQA (12 query / 4 kv heads), "
                "no biases, untied, 32k vocabulary",
                vocab_size=32000, context=2048, dim=768, depth=12, num_heads=12, num_kv_heads=4,
                mlp_multiple_of=256, **LLAMA)
