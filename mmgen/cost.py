"""A cost model for any registered preset: parameters, FLOPs, memory, bytes moved per decoded
token, communication per step and MFU.

    from mmgen.cost import estimate
    r = estimate("gpt2_small", batch=8, seq_len=1024, dtype="bf16", devices=8, peak_flops=989e12)
    r["flops"]["train_step"], r["memory"]["activations"], r["comm"]["fsdp"]

Parameters are counted exactly from the model, built on the meta device (no memory, any
size). FLOPs are analytic for the transformer families (GPT and its subclasses, ViT): every
nn.Linear applied to every token (2 * in * out multiply-adds per token), plus the attention
score and value matmuls counted over the full T x S matrix (4 * T * S * heads * head_dim per
layer, as FlopCounterMode and PaLM's 6N + 12LHQT count them; a causal kernel skips half).
A training step is 3x the forward (backward = 2x). Other families fall back to
torch.utils.flop_counter.FlopCounterMode on their `example_batch` (on the meta device, or on
the CPU for models under 200M parameters when the meta run fails), reported as "counted";
if that fails too the FLOPs are "not modelled".

Memory (bytes) for one device without sharding:
* weights: params x bytes(dtype); gradients: trainable params x bytes(dtype);
* optimizer: AdamW keeps two float32 moments (8 B / trainable param), plus a float32 master
  copy (4 B) when training in a 16-bit dtype (mixed precision);
* activations (transformers, Korthikanti et al. 2022 sec. 4 counting, with a fused attention
  kernel that stores no T x T matrix; "attention_math" adds it): per layer and token the
  tensors autograd saves: 2 norm inputs (2d), qkv input d and output q+k+v, attention output
  (heads x head_dim) and the SDPA log-sum-exp, MLP input d, hidden F (x2 when gated) and
  activation output F; plus the logits (T x V in float32 for the loss). With checkpointing
  (one checkpoint per block) only each block's input (d per token) is kept, plus one block's
  activations during its recomputation.
* KV cache: 2 x layers x batch x seq x kv_heads x head_dim x bytes(dtype).

Decoding: FLOPs per generated token at a given cache length; bytes moved = every weight read
once per step (shared by the batch) + the whole KV cache read + the new key/value written,
divided by the batch.

Communication per step and device (ring algorithms, N devices, gradients in `dtype`):
DDP all-reduce of the gradients 2 (N-1)/N x grad bytes; FSDP / ZeRO-3 all-gathers the
weights twice (forward, backward) and reduce-scatters the gradients: 3 (N-1)/N x weight bytes;
Megatron tensor parallelism all-reduces the (batch x seq x dim) activations twice per layer
in the forward and twice in the backward: 4 x layers x 2 (N-1)/N x activation bytes.

MFU = achieved FLOP/s / peak, achieved = training FLOPs per token x tokens/s.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

DTYPE_BYTES = {"fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


def _bytes(dtype: str) -> float:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")
    return DTYPE_BYTES[dtype]


def build_meta(preset: str, **overrides) -> nn.Module:
    import mmgen
    with torch.device("meta"):
        return mmgen.create_model(preset, **overrides)


def count_params(model: nn.Module) -> dict[str, int]:
    """Exact parameter counts: total (tied tensors once), trainable, embeddings (nn.Embedding
    tables and learned position tables), and the matmul weights of nn.Linear modules."""
    from .layers import LearnedPositions
    seen: set[int] = set()
    total = train = emb = 0
    for mod in model.modules():
        for p in mod.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            train += p.numel() if p.requires_grad else 0
            if isinstance(mod, (nn.Embedding, LearnedPositions)):
                emb += p.numel()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return {"total": total, "trainable": train, "embedding": emb, "linear_weights": linear}


def gpt_param_formula(config) -> int:
    """Parameters of a GPT from its config alone (checked against the built model in tests)."""
    c, b = config, config.block_config()
    d, H, Hkv, D, F = b.embed_dim, b.num_heads, b.resolved_kv_heads, b.resolved_head_dim, b.hidden_dim
    norm = d * (2 if b.norm == "layernorm" and b.norm_bias else 1)
    qkv = d * (H + 2 * Hkv) * D + ((H + 2 * Hkv) * D if b.qkv_bias else 0)
    proj = H * D * d + (d if b.proj_bias else 0)
    gated = b.mlp in ("swiglu", "geglu")
    mlp = (3 if gated else 2) * d * F + ((2 * F if gated else F) + d if b.mlp_bias else 0)
    qk = 2 * D * (2 if b.norm == "layernorm" and b.norm_bias else 1) if b.qk_norm else 0
    per_block = 2 * norm + qkv + proj + mlp + qk
    total = c.vocab_size * d + (c.context_length * d if c.pos == "learned" else 0) + b.depth * per_block
    total += norm if b.final_norm and b.norm_place != "post" else 0
    total += 0 if c.tie_weights else c.vocab_size * d
    return total


# ---- analytic FLOPs for transformer families ----------------------------------------------------
def _stack_shape(block_cfg) -> dict[str, int]:
    return {"dim": block_cfg.embed_dim, "depth": block_cfg.depth, "heads": block_cfg.num_heads,
            "kv_heads": block_cfg.resolved_kv_heads, "head_dim": block_cfg.resolved_head_dim,
            "hidden": block_cfg.hidden_dim,
            "gated": int(block_cfg.mlp in ("swiglu", "geglu"))}


def _linear_flops_per_token(module: nn.Module) -> float:
    return 2.0 * sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def transformer_spec(model: nn.Module, seq_len: int | None = None) -> dict[str, Any] | None:
    """The token-level shape of a transformer family, or None when not modelled analytically.
    tokens: tokens per example through the stack; per_token_linear: FLOPs of the linears that
    every token goes through; per_example_linear: FLOPs applied once per example (a
    classifier head on the pooled token)."""
    from .models.gpt import GPT
    from .models.vit import ViT
    if isinstance(model, GPT):
        c = model.config
        T = seq_len or c.context_length
        if T > c.context_length:
            raise ValueError(f"seq_len {T} exceeds the context of {c.context_length} tokens")
        return {"family": "gpt", "tokens": T, "kv_len": T, "shape": _stack_shape(model.transformer.cfg),
                "per_token_linear": _linear_flops_per_token(model.transformer) + 2.0 * model.lm_head.in_features
                * model.lm_head.out_features, "per_example_linear": 0.0, "vocab": c.vocab_size,
                "causal": True, "decoder": True}
    if isinstance(model, ViT):
        c = model.config
        grid = model.patch_embed.grid_size
        n_patch = grid[0] * grid[1]
        T = n_patch + c.num_prefix_tokens
        patch = 2.0 * c.in_chans * c.patch_size ** 2 * c.embed_dim  # the patch conv as a per-patch matmul
        head = _linear_flops_per_token(model.head) if isinstance(model.head, nn.Linear) else 0.0
        per_ex = head * (T if c.global_pool == "none" else 1) + patch * n_patch
        return {"family": "vit", "tokens": T, "kv_len": T, "shape": _stack_shape(model.encoder.cfg),
                "per_token_linear": _linear_flops_per_token(model.encoder), "per_example_linear": per_ex,
                "vocab": c.num_classes, "causal": False, "decoder": False}
    return None


def forward_flops(spec: dict, batch: int) -> float:
    s, T = spec["shape"], spec["tokens"]
    attn = 4.0 * T * T * s["heads"] * s["head_dim"] * s["depth"]  # QK^T and AV, full matrix
    return batch * (T * spec["per_token_linear"] + attn + spec["per_example_linear"])


def decode_flops_per_token(spec: dict, cache_len: int) -> float:
    """Forward FLOPs of one new token that attends to `cache_len` positions (itself included)."""
    s = spec["shape"]
    return spec["per_token_linear"] + 4.0 * cache_len * s["heads"] * s["head_dim"] * s["depth"]


def counted_forward_flops(preset: str, batch: int, overrides: dict | None = None) -> tuple[float | None, str]:
    """FlopCounterMode on the model's example_batch: meta device first, then a real CPU build
    for models under 200M parameters. Returns (forward FLOPs, how) or (None, why not)."""
    from torch.utils.flop_counter import FlopCounterMode
    import mmgen
    errors = []
    for where in ("meta", "cpu"):
        try:
            with torch.device(where):
                model = mmgen.create_model(preset, **(overrides or {}))
            if where == "cpu" and count_params(model)["total"] > 200e6:
                break
            b = model.example_batch(batch, where)
            with FlopCounterMode(display=False) as fc, torch.no_grad():
                model.loss(b)
            return float(fc.get_total_flops()), f"counted (FlopCounterMode, {where})"
        except Exception as e:  # noqa: BLE001 - any failure means: try the next way, then give up
            errors.append(f"{where}: {type(e).__name__}: {str(e)[:80]}")
    return None, "not modelled (" + "; ".join(errors) + ")"


def activation_bytes(spec: dict, batch: int, dtype: str, *, checkpointing: bool = False,
                     attention_math: bool = False) -> float:
    """Bytes autograd keeps for the backward of one training step (see the module doc)."""
    s, T, nb = spec["shape"], spec["tokens"], _bytes(dtype)
    d, H, Hkv, D, F = s["dim"], s["heads"], s["kv_heads"], s["head_dim"], s["hidden"]
    per_token = (2 * d  # norm inputs
                 + d + (H + 2 * Hkv) * D  # qkv input (the normed x) and q, k, v
                 + H * D  # attention output = proj input
                 + d  # MLP input
                 + F * (2 if s["gated"] else 1) + F)  # MLP hidden (gate + up) and activation output
    per_layer = batch * T * per_token * nb + batch * H * T * 4  # + SDPA log-sum-exp (float32)
    if attention_math:
        per_layer += batch * H * T * T * nb * 2  # softmax input and output
    logits = batch * T * spec["vocab"] * 4 if spec.get("decoder") else 0  # float32 logits for the loss
    if checkpointing:
        return s["depth"] * batch * T * d * nb + per_layer + logits
    return s["depth"] * per_layer + logits


def kv_cache_bytes(spec: dict, batch: int, seq: int, dtype: str) -> float:
    s = spec["shape"]
    return 2.0 * s["depth"] * batch * seq * s["kv_heads"] * s["head_dim"] * _bytes(dtype)


def estimate(preset: str, *, batch: int = 1, seq_len: int | None = None, dtype: str = "bf16",
             devices: int = 1, peak_flops: float | None = None, tokens_per_s: float | None = None,
             trainable: float | None = None, overrides: dict | None = None) -> dict[str, Any]:
    """The full cost report of a preset (a nested dict; `format_report` prints it).
    trainable: the trainable parameter count when fine-tuning (default: all parameters);
    tokens_per_s: a measured training throughput, for MFU against peak_flops."""
    if batch < 1 or devices < 1:
        raise ValueError(f"batch and devices must be >= 1, got batch={batch}, devices={devices}")
    nb = _bytes(dtype)
    model = build_meta(preset, **(overrides or {}))
    params = count_params(model)
    n_train = params["total"] if trainable is None else int(trainable)
    spec = transformer_spec(model, seq_len)
    out: dict[str, Any] = {"preset": preset, "family": getattr(model, "model_type", type(model).__name__),
                           "batch": batch, "dtype": dtype, "devices": devices, "params": params}
    if spec is not None:
        fwd = forward_flops(spec, batch)
        out["seq_len"] = spec["tokens"]
        out["flops"] = {"method": "analytic", "forward": fwd, "train_step": 3 * fwd,
                        "train_per_token": 3 * fwd / (batch * spec["tokens"])}
        if spec["decoder"]:
            out["flops"]["decode_per_token"] = decode_flops_per_token(spec, spec["tokens"])
    else:
        fwd, how = counted_forward_flops(preset, batch, overrides)
        out["seq_len"] = None
        out["flops"] = {"method": how, "forward": fwd, "train_step": None if fwd is None else 3 * fwd}
    master = 4 if nb < 4 else 0
    mem = {"weights": params["total"] * nb, "gradients": n_train * nb, "optimizer": n_train * (8 + master)}
    if spec is not None:
        mem["activations"] = activation_bytes(spec, batch, dtype)
        mem["activations_checkpointed"] = activation_bytes(spec, batch, dtype, checkpointing=True)
        mem["total_train"] = mem["weights"] + mem["gradients"] + mem["optimizer"] + mem["activations"]
        if spec["decoder"]:
            mem["kv_cache"] = kv_cache_bytes(spec, batch, spec["tokens"], dtype)
            kv_read = mem["kv_cache"] / batch  # per sequence, at the full length
            s = spec["shape"]
            kv_write = 2.0 * s["depth"] * s["kv_heads"] * s["head_dim"] * nb
            out["decode"] = {"bytes_per_token": params["total"] * nb / batch + kv_read + kv_write,
                             "weight_bytes_per_step": params["total"] * nb,
                             "kv_bytes_per_token": kv_read + kv_write,
                             "arithmetic_intensity": out["flops"]["decode_per_token"] /
                             (params["total"] * nb / batch + kv_read + kv_write)}
    out["memory"] = mem
    N = devices
    ring = (N - 1) / N
    comm = {"ddp": 2 * ring * n_train * nb, "fsdp": 3 * ring * params["total"] * nb}
    if spec is not None:
        comm["tensor_parallel"] = 4 * spec["shape"]["depth"] * 2 * ring * batch * spec["tokens"] * spec["shape"]["dim"] * nb
        comm["fsdp_memory_per_device"] = (mem["weights"] + mem["gradients"] + mem["optimizer"]) / N + mem["activations"]
    out["comm"] = comm
    if peak_flops:
        f = out["flops"]
        out["mfu"] = {"peak_flops": peak_flops}
        if f.get("train_step"):
            out["mfu"]["step_time_at_peak_s"] = f["train_step"] / (peak_flops * N)
        if tokens_per_s and f.get("train_per_token"):
            out["mfu"]["mfu"] = tokens_per_s * f["train_per_token"] / (peak_flops * N)
    return out


def _h(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    for scale, pre in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {pre}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def format_report(r: dict) -> str:
    p = r["params"]
    lines = [f"{r['preset']} ({r['family']}): batch {r['batch']}, seq {r['seq_len']}, {r['dtype']}, {r['devices']} device(s)",
             f"  params            {p['total']:,} (trainable {p['trainable']:,}; embeddings {p['embedding']:,})"]
    f = r["flops"]
    lines.append(f"  FLOPs [{f['method']}]  forward {_h(f['forward'])}, train step {_h(f['train_step'])}"
                 + (f", train/token {_h(f['train_per_token'])}" if "train_per_token" in f else "")
                 + (f", decode/token {_h(f['decode_per_token'])}" if "decode_per_token" in f else ""))
    m = r["memory"]
    lines.append("  memory            " + ", ".join(f"{k} {_h(v, 'B')}" for k, v in m.items()))
    if "decode" in r:
        d = r["decode"]
        lines.append(f"  decode            {_h(d['bytes_per_token'], 'B')} moved/token "
                     f"(weights {_h(d['weight_bytes_per_step'], 'B')}/step, KV {_h(d['kv_bytes_per_token'], 'B')}/token), "
                     f"{d['arithmetic_intensity']:.3g} FLOP/B")
    lines.append("  comm/step/device  " + ", ".join(f"{k} {_h(v, 'B')}" for k, v in r["comm"].items()))
    if "mfu" in r:
        lines.append("  MFU               " + ", ".join(f"{k} {v:.3g}" for k, v in r["mfu"].items()))
    return "\n".join(lines)


def saved_tensor_bytes(fn, exclude: list[torch.Tensor] | tuple = ()) -> int:
    """Bytes of the distinct storages autograd saves for the backward while `fn()` runs
    (the measured activation memory of a training step), leaving out `exclude` (the
    parameters, which are saved by reference)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip and t.device.type != "meta":
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def markdown_table(reports: list[dict]) -> str:
    """One row per report: the figures the README table shows."""
    head = ("| preset | params | seq | train FLOPs / step | decode FLOPs / token | weights | grads + AdamW | "
            "activations (ckpt) | KV cache | decode bytes / token | DDP / FSDP comm per step |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in reports:
        f, m, c = r["flops"], r["memory"], r["comm"]
        acts = (f"{_h(m['activations'], 'B')} ({_h(m['activations_checkpointed'], 'B')})"
                if "activations" in m else "not modelled")
        method = "" if f["method"] == "analytic" else (" (counted)" if f["forward"] is not None else "")
        lines.append(
            f"| {r['preset']} | {r['params']['total'] / 1e6:.3f}M | {r['seq_len'] or '-'} | {_h(f['train_step'])}{method} | "
            f"{_h(f.get('decode_per_token')) if 'decode_per_token' in f else '-'} | {_h(m['weights'], 'B')} | "
            f"{_h(m['gradients'] + m['optimizer'], 'B')} | {acts} | "
            f"{_h(m['kv_cache'], 'B') if 'kv_cache' in m else '-'} | "
            f"{_h(r['decode']['bytes_per_token'], 'B') if 'decode' in r else '-'} | "
            f"{_h(c['ddp'], 'B')} / {_h(c['fsdp'], 'B')} |")
    return "\n".join(lines)
