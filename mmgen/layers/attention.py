"""Multi-head attention: self or cross, MHA / GQA / MQA via `num_kv_heads`, masks (causal,
sliding window, padding, additive bias), optional q/k norm, RoPE and a preallocated KV cache.

`Attention` is about projections, positions and the cache; which kernel computes
softmax(q k^T) v -- fused SDPA, the float32 reference, or batched matmuls -- is decided in one
function, `choose_kernel`, and run by `run_kernel`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .autograd import records_grad
from .norm import make_norm, upcast
from .pos import apply_rope

ATTN_IMPLS = ("sdpa", "math")


def check_heads(dim: int, num_heads: int, num_kv_heads: int | None, head_dim: int | None) -> tuple[int, int]:
    """Validate head counts; return (num_kv_heads, head_dim)."""
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    kv = num_heads if num_kv_heads is None else num_kv_heads
    if kv < 1 or num_heads % kv:
        raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({kv})")
    if head_dim is None:
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads}), or set head_dim")
        head_dim = dim // num_heads
    return kv, head_dim


class KVCache(nn.Module):
    """Preallocated keys and values (B, Hkv, max_len, D) for one attention layer, written at
    absolute positions [start, start + T) and read back as [0, start + T)."""

    def __init__(self, batch: int, max_len: int, num_kv_heads: int, head_dim: int, *, dtype=None, device=None):
        super().__init__()
        self.max_len = max_len
        shape = (batch, num_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds max_len={self.max_len} positions; writing up to position {end}")
        if k.shape[0] != self.k.shape[0]:
            raise ValueError(f"KV cache was made for batch {self.k.shape[0]}, got batch {k.shape[0]}")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


def make_attn_mask(
    T: int,
    S: int,
    *,
    causal: bool = False,
    window: int | None = None,
    q_offset: int = 0,
    key_padding: torch.Tensor | None = None,
    device=None,
) -> torch.Tensor | None:
    """Boolean mask (True = may attend), broadcastable to (B, H, T, S), or None if all is
    allowed. Queries sit at absolute positions q_offset + [0, T), keys at [0, S).

    causal: key position <= query position. window: only the `window` most recent keys
    (|q - k| < window when not causal). key_padding: (B, S), True for real tokens.
    A query row left with no key (a padding query) is opened fully so softmax stays finite;
    its output is garbage by construction and must be ignored by the caller."""
    mask = None
    if causal or window is not None:
        q = torch.arange(q_offset, q_offset + T, device=device)[:, None]
        k = torch.arange(S, device=device)[None, :]
        mask = torch.ones(T, S, dtype=torch.bool, device=device)
        if causal:
            mask &= k <= q
        if window is not None:
            mask &= (q - k < window) if causal else ((q - k).abs() < window)
        mask = mask[None, None]  # (1, 1, T, S)
    if key_padding is not None:
        if key_padding.ndim != 2 or key_padding.shape[1] != S:
            raise ValueError(f"key padding mask must be (batch, {S}), got {tuple(key_padding.shape)}")
        pad = key_padding.bool()[:, None, None, :]  # (B, 1, 1, S)
        mask = pad if mask is None else mask & pad
    if mask is not None and key_padding is not None:
        mask = mask | ~mask.any(-1, keepdim=True)
    return mask


def merge_mask_and_bias(mask: torch.Tensor | None, bias: torch.Tensor | None, dtype, *,
                        matmul: bool = False) -> torch.Tensor | None:
    """One attention mask: a bool mask alone, or an additive float bias with -inf where
    masked. For SDPA the bias is cast to the query dtype; for the matmul path (`matmul=True`)
    it keeps float32, as the scores are added to it in float32 (casting to bf16 first is
    slower there and loses precision)."""
    if bias is None:
        return mask
    bias = bias.to(torch.promote_types(bias.dtype, dtype) if matmul else dtype)
    if mask is None:
        return bias
    if mask.dtype == torch.bool:
        return bias.masked_fill(~mask, float("-inf"))
    return bias + mask.to(bias.dtype)


def attention_math(q, k, v, mask=None, is_causal=False, dropout_p=0.0, scale=None):
    """Reference attention: softmax(q k^T * scale + mask) v, at least in float32. q (B,H,T,D), k/v (B,Hkv,S,D)."""
    H, Hkv = q.shape[1], k.shape[1]
    if Hkv != H:  # GQA: each group of H/Hkv query heads shares one kv head
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (upcast(q) @ upcast(k).transpose(-2, -1)) * scale  # (B, H, T, S)
    if is_causal:
        T, S = scores.shape[-2:]
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.to(scores.dtype)
    attn = scores.softmax(-1)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    return (attn @ upcast(v)).to(q.dtype)


def attention_matmul(q, k, v, bias, dropout_p=0.0, scale=None):
    """softmax(q k^T * scale + bias) v with batched matmuls in the input dtype, the scores
    promoted to the bias dtype (float32) for the softmax. Used where SDPA is the slower
    choice: a learned bias that needs a gradient (SDPA falls back to its math kernel), and
    tiny windows on CPU. bias: additive, or bool (True = attend), broadcastable to the scores."""
    H, Hkv = q.shape[-3], k.shape[-3]
    if Hkv != H:
        k = k.repeat_interleave(H // Hkv, dim=-3)
        v = v.repeat_interleave(H // Hkv, dim=-3)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = q @ k.transpose(-2, -1)  # (..., H, T, S), unscaled
    if not records_grad(q, k, v, bias) and dropout_p == 0 and bias is not None and bias.is_floating_point():
        # inference: the same steps in place, in one float32 buffer (two fewer fresh buffers,
        # whose page faults cost more than the arithmetic in tiny windows on CPU)
        scores = scores.to(torch.promote_types(scores.dtype, bias.dtype))
        torch.add(bias, scores, alpha=scale, out=scores)
        return torch.softmax(scores, -1, out=scores).to(v.dtype) @ v
    if bias is None or bias.dtype == torch.bool:
        scores = scores * scale
        if bias is not None:
            scores = scores.masked_fill(~bias, float("-inf"))
    else:
        scores = torch.add(bias, scores, alpha=scale)  # bias + scale * scores in one pass
    attn = scores.softmax(-1)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    return attn.to(v.dtype) @ v


# Grouped (window) attention over at most this many tokens per group runs as batched matmuls
# on CPU, where SDPA's fused kernel is the slower one in bf16: 1.3-1.5x at 9-25 tokens, 1.1x at
# 36, while from 49 tokens on SDPA wins (python -m bench.bench_block --windows, projections
# included). float32 keeps SDPA at every size (it wins from 9 tokens on).
CPU_MATMUL_MAX_TOKENS = {torch.bfloat16: 36, torch.float16: 36}
# Training (forward + backward) in half precision on CPU over at most this many keys runs the
# float32 reference (attention_math): SDPA's fused CPU kernel computes in float32 too, with the
# same error against a float32 result, but its half-precision backward is slow at small sizes:
# 4-7x slower at 41-64 keys, 2.2-2.7x at 65-100 (UNet, DiT, ViT, DALL-E sizes), 1.5-1.7x at 144,
# while from 196 keys on SDPA is as fast or faster (python -m bench.bench_block --train-kernels).
# Inference keeps SDPA.
CPU_HALF_TRAIN_MATH_MAX_TOKENS = 128
KERNELS = ("sdpa", "math", "matmul")


def choose_kernel(impl: str, *, device: torch.device, dtype: torch.dtype, tokens: int, bias_grad: bool = False,
                  is_causal: bool = False, grouped: bool = False, grad: bool = False) -> str:
    """The attention kernel for one call, every choice in one place:
      math    impl="math": the float32 reference (attention_math); or a training step
              (`grad`: autograd records q, k or v) in half precision on CPU over at most
              CPU_HALF_TRAIN_MATH_MAX_TOKENS keys, where it is faster than SDPA's backward;
      matmul  a bias that needs a gradient (SDPA would fall back to its slow math kernel), or
              grouped (window) attention over at most CPU_MATMUL_MAX_TOKENS tokens on CPU
              in half precision (attention_matmul);
      sdpa    otherwise: torch's fused scaled_dot_product_attention."""
    if impl == "math":
        return "math"
    if bias_grad and not is_causal:
        return "matmul"
    cpu_half = device.type == "cpu" and dtype in (torch.bfloat16, torch.float16)
    if grouped and cpu_half and tokens <= CPU_MATMUL_MAX_TOKENS.get(dtype, 0):
        return "matmul"
    if grad and cpu_half and tokens <= CPU_HALF_TRAIN_MATH_MAX_TOKENS:
        return "math"
    return "sdpa"


def run_kernel(kernel: str, q, k, v, mask=None, is_causal=False, dropout_p=0.0, scale=None):
    """Run a kernel of `choose_kernel`. q (..., H, T, D), k/v (..., Hkv, S, D) -> (..., H, T, D)."""
    if kernel == "math":
        return attention_math(q, k, v, mask, is_causal, dropout_p, scale)
    if kernel == "matmul":
        return attention_matmul(q, k, v, mask, dropout_p, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal,
                                          scale=scale, enable_gqa=k.shape[-3] != q.shape[-3])


def attention(q, k, v, mask=None, is_causal=False, dropout_p=0.0, impl="sdpa", scale=None):
    """Attention with the kernel `choose_kernel` picks. q (B,H,T,D), k/v (B,Hkv,S,D) -> (B,H,T,D)."""
    kernel = choose_kernel(impl, device=q.device, dtype=q.dtype, tokens=k.shape[-2], bias_grad=records_grad(mask),
                           is_causal=is_causal, grad=records_grad(q, k, v))
    return run_kernel(kernel, q, k, v, mask, is_causal, dropout_p, scale)


class Attention(nn.Module):
    """Self-attention (fused `qkv` projection) or cross-attention (`q` from x, `kv` from a
    context of width `context_dim`), with `num_kv_heads` < num_heads for GQA / MQA."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        context_dim: int | None = None,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: str | None = None,
        norm_eps: float = 1e-6,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
        impl: str = "sdpa",
        rope_dims: int = 1,
    ):
        super().__init__()
        if impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {impl!r}")
        self.num_heads = num_heads
        self.num_kv_heads, self.head_dim = check_heads(dim, num_heads, num_kv_heads, head_dim)
        self.impl, self.attn_dropout, self.rope_dims = impl, attn_dropout, rope_dims
        self.is_cross = context_dim is not None
        q_out, kv_out = num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if self.is_cross:
            self.q = nn.Linear(dim, q_out, bias=qkv_bias)
            self.kv = nn.Linear(context_dim, 2 * kv_out, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, q_out + 2 * kv_out, bias=qkv_bias)
        self.q_norm = make_norm(qk_norm, self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = make_norm(qk_norm, self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(q_out, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        """x (B, T, dim); context (B, S, context_dim) for cross-attention; mask bool (True =
        attend) or additive, broadcastable to (B, H, T, S); bias additive (e.g. relative
        position bias); is_causal uses SDPA's built-in causal mask (no cache offset);
        rope (cos, sin) for the T query positions; cache + start for incremental decoding.

        Grouped self-attention: x (B, G, T, dim) attends within each of G independent groups
        (Swin's windows); mask / bias then broadcast to (B, G, H, T, T). The groups are folded
        into the head axis, (B, G*H, T, D), so one mask per group is shared across the batch
        without being copied B times."""
        if x.ndim == 4:
            return self._grouped(x, mask=mask, bias=bias, rope=rope, cache=cache, context=context)
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        if self.is_cross:
            if context is None:
                raise ValueError("cross-attention needs a context tensor (B, S, context_dim)")
            q = rearrange(self.q(x), "b t (h d) -> b h t d", h=H)
            k, v = rearrange(self.kv(context), "b s (two h d) -> two b h s d", two=2, h=Hkv)
        else:
            q, k, v = self.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
            q = rearrange(q, "b t (h d) -> b h t d", h=H)
            k = rearrange(k, "b t (h d) -> b h t d", h=Hkv)
            v = rearrange(v, "b t (h d) -> b h t d", h=Hkv)
        q, k = self._qk_transform(q, k, rope)
        if cache is not None:
            k, v = cache.update(start, k, v)  # (B, Hkv, start + T, D)
        attn_mask = merge_mask_and_bias(mask, bias, q.dtype, matmul=records_grad(bias))
        out = attention(q, k, v, attn_mask, is_causal and attn_mask is None,
                        self.attn_dropout if self.training else 0.0, self.impl)
        return self.proj_drop(self.proj(rearrange(out, "b h t d -> b t (h d)")))

    def _grouped(self, x, *, mask, bias, rope, cache, context):
        if self.is_cross or cache is not None or context is not None:
            raise ValueError("grouped attention (x of shape (B, G, T, dim)) is self-attention without a KV cache")
        B, G, T, _ = x.shape
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        if Hkv != H:
            raise ValueError("grouped attention needs num_kv_heads == num_heads")
        dropout = self.attn_dropout if self.training else 0.0
        qkv = self.qkv(x)  # (B, G, T, 3 * H * D)
        kernel = choose_kernel(self.impl, device=qkv.device, dtype=qkv.dtype, tokens=T, bias_grad=records_grad(bias),
                               grouped=True, grad=records_grad(qkv))
        if kernel != "sdpa":
            # one copy to (3, B, G, H, T, D): the batched matmuls then copy nothing and
            # broadcast the per-group mask over the batch
            q, k, v = rearrange(qkv, "b g t (three h d) -> three b g h t d", three=3, h=H).contiguous().unbind(0)
            q, k = self._qk_transform(q, k, rope)
            attn_mask = merge_mask_and_bias(mask, bias, q.dtype, matmul=True)  # -> (B, G, H, T, T)
            out = run_kernel(kernel, q, k, v, attn_mask, dropout_p=dropout)  # (B, G, H, T, D)
            out = rearrange(out, "b g h t d -> b g t (h d)")
        else:
            # fused SDPA on (B*G, H, T, D) views of the projection: no copy in, and its output
            # is laid out (B*G, T, H, D), so no copy out. A per-group mask is expanded over
            # the batch (timm's layout; folding the groups into the heads instead to share
            # one mask was 1.5x slower: two copies and a slower kernel)
            q, k, v = rearrange(qkv, "b g t (three h d) -> three (b g) h t d", three=3, h=H).unbind(0)
            q, k = self._qk_transform(q, k, rope)
            attn_mask = merge_mask_and_bias(mask, bias, q.dtype)
            if attn_mask is not None:
                while attn_mask.ndim < 5:
                    attn_mask = attn_mask[None]
                if attn_mask.shape[:2] == (1, 1):  # the same for every window: broadcasts as is
                    attn_mask = attn_mask[0]
                else:
                    attn_mask = attn_mask.expand(B, G, *attn_mask.shape[2:]).reshape(B * G, *attn_mask.shape[2:])
            out = run_kernel(kernel, q, k, v, attn_mask, dropout_p=dropout)  # (B*G, H, T, D)
            out = rearrange(out, "(b g) h t d -> b g t (h d)", b=B)
        return self.proj_drop(self.proj(out))

    def _qk_transform(self, q, k, rope):
        """q/k norm, then RoPE on the queries and, in self-attention, the keys (a cross-
        attention context has no positions on the query's axis)."""
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q = apply_rope(q, *rope, dims=self.rope_dims)
            if not self.is_cross:
                k = apply_rope(k, *rope, dims=self.rope_dims)
        return q, k

    def make_cache(self, batch: int, max_len: int, *, dtype=None, device=None) -> KVCache:
        device = device or self.proj.weight.device
        return KVCache(batch, max_len, self.num_kv_heads, self.head_dim,
                       dtype=dtype or self.proj.weight.dtype, device=device)
