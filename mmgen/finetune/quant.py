"""Weight-only quantisation of linear layers: int8 per output channel, and group-wise 4-bit.

`QuantLinear` stores the weight as integers plus float scales (buffers, not parameters: the
base is frozen by construction) and computes `x @ dequant(W).T + b` in the input's dtype.

* int8: symmetric per output row, scale = max|W_row| / 127, q = round(W / scale) in
  [-127, 127]. Per element |W - q*scale| <= scale / 2. On CPU the matmul runs on the int8
  weight directly through `torch._weight_int8pack_mm` when this torch build has it
  (float32/bf16 activations), else it dequantises.
* int4: symmetric per group of `group_size` input columns, scale = max|W_group| / 7,
  q in [-7, 7] stored as q + 8 in two nibbles per uint8. Per element |W - q*scale| <= scale / 2.

`quantize_model(model, bits=8, targets=["*"])` swaps every matching nn.Linear (fnmatch on
module names); it is the base of QLoRA here: quantise, then `apply_lora` on top, so the base
weights are frozen integers and only the adapters train.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .lora import _set_module, match_modules

BITS = (8, 4)


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float -> int8 (out, in), scale (out,) float32."""
    w = w.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_int4(w: torch.Tensor, group_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float -> packed uint8 (out, in // 2), scale (out, in // group_size) float32."""
    out_f, in_f = w.shape
    if in_f % group_size or group_size % 2:
        raise ValueError(f"int4 quantisation needs in_features ({in_f}) divisible by an even group_size "
                         f"({group_size}); pick a group_size that divides it")
    g = w.detach().float().reshape(out_f, in_f // group_size, group_size)  # (out, groups, group)
    scale = g.abs().amax(dim=-1).clamp(min=1e-12) / 7.0  # (out, groups)
    q = torch.round(g / scale[..., None]).clamp(-7, 7).to(torch.int16) + 8  # [1, 15]
    q = q.reshape(out_f, in_f).to(torch.uint8)
    packed = q[:, 0::2] | (q[:, 1::2] << 4)  # (out, in / 2): even column low nibble, odd high
    return packed, scale


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, group_size: int, dtype=torch.float32) -> torch.Tensor:
    out_f = packed.shape[0]
    q = torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(out_f, -1).to(torch.int16) - 8  # (out, in)
    w = q.reshape(out_f, -1, group_size).to(torch.float32) * scale[..., None]
    return w.reshape(out_f, -1).to(dtype)


_INT8_MM = getattr(torch, "_weight_int8pack_mm", None)


class QuantLinear(nn.Module):
    """A frozen weight-only quantised linear (int8 per channel or 4-bit per group)."""

    def __init__(self, in_features: int, out_features: int, *, bits: int = 8, group_size: int = 64,
                 bias: bool = True, device=None):
        super().__init__()
        if bits not in BITS:
            raise ValueError(f"bits must be one of {BITS}, got {bits}")
        self.in_features, self.out_features, self.bits, self.group_size = in_features, out_features, bits, group_size
        if bits == 8:
            self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
            self.register_buffer("scale", torch.ones(out_features, device=device))
        else:
            if in_features % group_size or group_size % 2:
                raise ValueError(f"int4: in_features ({in_features}) must be divisible by an even group_size "
                                 f"({group_size})")
            self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8,
                                                        device=device))
            self.register_buffer("scale", torch.ones(out_features, in_features // group_size, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False) if bias else None
        self.use_kernel = True  # int8 on CPU: torch._weight_int8pack_mm when available

    @classmethod
    def from_linear(cls, lin: nn.Linear, bits: int = 8, group_size: int = 64) -> "QuantLinear":
        q = cls(lin.in_features, lin.out_features, bits=bits, group_size=group_size, bias=lin.bias is not None,
                device=lin.weight.device)
        qw, s = quantize_int8(lin.weight) if bits == 8 else quantize_int4(lin.weight, group_size)
        q.qweight.copy_(qw)
        q.scale.copy_(s)
        if lin.bias is not None:
            q.bias.data.copy_(lin.bias.detach().float())
        return q

    def dequantize(self, dtype=torch.float32) -> torch.Tensor:
        if self.bits == 8:
            return (self.qweight.to(torch.float32) * self.scale[:, None]).to(dtype)
        return dequantize_int4(self.qweight, self.scale, self.group_size, dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised float32 weight (out, in): for code that reads `.weight` (dtype,
        device, a KV cache's dtype); a copy, so writing to it does not change the layer."""
        return self.dequantize()

    def error_bound(self) -> torch.Tensor:
        """Per-element bound on |W - dequant(W)|: half a quantisation step, (out, in)."""
        s = self.scale[:, None] if self.bits == 8 else self.scale.repeat_interleave(self.group_size, dim=1)
        return (s / 2).expand(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.bits == 8 and self.use_kernel and _INT8_MM is not None and x.device.type == "cpu"
                and x.dtype in (torch.float32, torch.bfloat16) and not torch.is_grad_enabled()):
            try:
                y = _INT8_MM(x.reshape(-1, self.in_features).contiguous(), self.qweight,
                             self.scale.to(x.dtype)).reshape(*x.shape[:-1], self.out_features)
                return y if self.bias is None else y + self.bias.to(y.dtype)
            except RuntimeError:
                self.use_kernel = False  # this build / shape has no kernel: dequantise from now on
        w = self.dequantize(x.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.bits == 4 else ""
        return f"in={self.in_features}, out={self.out_features}, bits={self.bits}{g}, bias={self.bias is not None}"


def quantize_model(model: nn.Module, bits: int = 8, *, targets=("*",), exclude=(), group_size: int = 64,
                   skip_tied: bool = True) -> list[str]:
    """Replace matching nn.Linear modules by QuantLinear in place; return their names.
    skip_tied leaves a linear whose weight is shared with another module (GPT's tied
    lm_head / token embedding) in float, since the embedding still needs the float table.
    Linears whose in_features the int4 group size does not divide are left in float."""
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits}")
    targets = [targets] if isinstance(targets, str) else list(targets)
    counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    done = []
    for name in match_modules(model, targets, exclude):
        lin = model.get_submodule(name)
        if skip_tied and counts.get(id(lin.weight), 1) > 1:
            continue
        if bits == 4 and lin.in_features % group_size:
            continue
        _set_module(model, name, QuantLinear.from_linear(lin, bits, group_size))
        done.append(name)
    if not done:
        raise ValueError(f"no nn.Linear matched {targets} (minus {list(exclude)}) for {bits}-bit quantisation")
    return done


def model_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and persistent buffers (each shared tensor once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total
