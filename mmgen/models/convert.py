"""Weights from other libraries: key converters and config readers for timm's and
torchvision's ViT and Swin, and Hugging Face's GPT-2. The models reach them through
`ViT.from_timm` / `from_torchvision`, `Swin.from_timm` / `from_torchvision`,
`GPT.load_hf_gpt2_state_dict`; the functions here are the conversion itself.

    from mmgen.models.convert import convert_timm_vit, vit_config_from_timm, gpt_from_hf_gpt2
"""
from __future__ import annotations

import re

import torch
from torch import nn

from .gpt import GPT, GPTConfig
from .vit import GLOBAL_POOLS

# ------------------------------------------------------------------------------ ViT
def convert_timm_vit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm VisionTransformer keys -> ours. timm's fused `attn.qkv` maps straight onto
    Attention.qkv; blocks move under `encoder.`, the final norm to `encoder.norm`."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("blocks."):
            k = "encoder." + k
        elif k.startswith("norm."):
            k = "encoder." + k
        elif k.startswith(("attn_pool.", "head_dist", "dist_token")):
            raise ValueError(f"timm key {k!r}: attention pooling / distillation heads are not supported")
        out[k] = v
    return out


def convert_torchvision_vit(state_dict: dict[str, torch.Tensor], depth: int | None = None) -> dict[str, torch.Tensor]:
    """torchvision VisionTransformer (vit_b_16 ...) keys -> ours. nn.MultiheadAttention's
    `in_proj` is already the fused [q; k; v] projection."""
    out = {}
    block = re.compile(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)")
    sub = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.in_proj_weight": "attn.qkv.weight",
           "self_attention.in_proj_bias": "attn.qkv.bias", "self_attention.out_proj": "attn.proj",
           "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2", "mlp.linear_1": "mlp.fc1", "mlp.linear_2": "mlp.fc2"}
    top = {"conv_proj": "patch_embed.proj", "class_token": "cls_token", "encoder.pos_embedding": "pos_embed",
           "encoder.ln": "encoder.norm", "heads.head": "head"}
    for k, v in state_dict.items():
        m = block.fullmatch(k)
        if m:
            i, rest = m.groups()
            for a, b in sub.items():
                if rest == a or rest.startswith(a + "."):
                    rest = b + rest[len(a):]
                    break
            else:
                raise ValueError(f"unexpected torchvision ViT key {k!r}")
            out[f"encoder.blocks.{i}.{rest}"] = v
            continue
        for a, b in top.items():
            if k == a or k.startswith(a + "."):
                out[b + k[len(a):]] = v
                break
        else:
            raise ValueError(f"unsupported torchvision ViT key {k!r} (conv stems and pre-logits heads are not supported)")
    return out


def vit_config_from_timm(model: nn.Module) -> dict:
    """ViTConfig fields reproducing a timm VisionTransformer (class token or avg pooling,
    registers, learned positions with or without prefix rows, qk norm, layer scale)."""
    blk = model.blocks[0]
    gp = model.global_pool or "none"
    if gp not in GLOBAL_POOLS:
        raise ValueError(f"timm global_pool={model.global_pool!r} is not supported (token, avg, '')")
    grid = model.patch_embed.grid_size
    if grid[0] != grid[1]:
        raise ValueError(f"only square images are supported, timm model has grid {grid}")
    ls = getattr(blk, "ls1", None)
    has_ls = ls is not None and hasattr(ls, "gamma")
    eps = model.blocks[0].norm1.eps
    has_fc_norm = not isinstance(model.fc_norm, nn.Identity)
    head = model.head
    return dict(
        img_size=model.patch_embed.img_size[0], patch_size=model.patch_embed.patch_size[0],
        in_chans=model.patch_embed.proj.in_channels, num_classes=head.out_features if isinstance(head, nn.Linear) else 0,
        global_pool=gp, class_token=model.cls_token is not None, reg_tokens=model.num_reg_tokens,
        pos="learned" if model.pos_embed is not None else "none", pos_embed_prefix=not model.no_embed_class,
        dynamic_img_size=bool(model.dynamic_img_size), patch_bias=model.patch_embed.proj.bias is not None,
        norm_pre=not isinstance(model.norm_pre, nn.Identity), fc_norm=None if has_fc_norm == (gp == "avg") else has_fc_norm,
        embed_dim=model.embed_dim, depth=len(model.blocks), num_heads=blk.attn.num_heads,
        mlp_ratio=blk.mlp.fc1.out_features / model.embed_dim, qkv_bias=blk.attn.qkv.bias is not None,
        qk_norm=not isinstance(blk.attn.q_norm, nn.Identity), norm_eps=eps,
        layer_scale=1e-5 if has_ls else None)


def vit_config_from_torchvision(model: nn.Module) -> dict:
    """ViTConfig fields reproducing a torchvision VisionTransformer."""
    layer = model.encoder.layers[0]
    heads = model.heads
    if hasattr(heads, "pre_logits"):
        raise ValueError("torchvision ViT with representation_size (a pre-logits layer) is not supported")
    if not isinstance(model.conv_proj, nn.Conv2d):
        raise ValueError("torchvision ViT with a conv stem is not supported")
    return dict(img_size=model.image_size, patch_size=model.patch_size, in_chans=model.conv_proj.in_channels,
                num_classes=heads.head.out_features, global_pool="token", embed_dim=model.hidden_dim,
                depth=len(model.encoder.layers), num_heads=layer.num_heads,
                mlp_ratio=model.mlp_dim / model.hidden_dim, norm_eps=layer.ln_1.eps)


# ------------------------------------------------------------------------------ Swin
_BLOCK_SUBS = {"attn.relative_position_bias_table": "relative_position_bias_table"}


def convert_timm_swin(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm SwinTransformer keys -> ours: `layers.i` -> `stages.i`, the bias table moves from
    the attention to the block, `head.fc` -> `head`; non-persistent index/mask buffers dropped."""
    out = {}
    for k, v in state_dict.items():
        if k.endswith(("relative_position_index", "attn_mask")):
            continue
        if k.startswith("layers."):
            k = "stages." + k[len("layers."):]
            k = k.replace(".attn.relative_position_bias_table", ".relative_position_bias_table")
        elif k.startswith("head.fc."):
            k = "head." + k[len("head.fc."):]
        elif k.startswith("absolute_pos_embed"):
            raise ValueError("timm Swin with an absolute position embedding (ape) is not supported")
        out[k] = v
    return out


def convert_torchvision_swin(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision SwinTransformer (swin_t ...) keys -> ours. torchvision's `features` list
    interleaves [stem, stage 0, merge, stage 1, merge, ...]; its MLP is `mlp.0` / `mlp.3`."""
    out = {}
    for k, v in state_dict.items():
        if k.endswith("relative_position_index"):
            continue
        m = re.fullmatch(r"features\.(\d+)\.(.+)", k)
        if m is None:
            if k.startswith(("norm.", "head.")):
                out[k] = v
                continue
            raise ValueError(f"unexpected torchvision Swin key {k!r}")
        idx, rest = int(m.group(1)), m.group(2)
        if idx == 0:  # stem: Conv2d (0), Permute (1), LayerNorm (2)
            rest = rest.replace("0.", "proj.", 1) if rest.startswith("0.") else rest.replace("2.", "norm.", 1)
            out[f"patch_embed.{rest}"] = v
        elif idx % 2 == 0:  # PatchMerging in front of stage idx // 2
            out[f"stages.{idx // 2}.downsample.{rest}"] = v
        else:
            stage = (idx - 1) // 2
            j, sub = rest.split(".", 1)
            sub = sub.replace("attn.relative_position_bias_table", "relative_position_bias_table")
            sub = sub.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            out[f"stages.{stage}.blocks.{j}.{sub}"] = v
    return out


def swin_config_from_timm(model: nn.Module) -> dict:
    if getattr(model, "absolute_pos_embed", None) is not None:
        raise ValueError("timm Swin with an absolute position embedding (ape) is not supported")
    pe = model.patch_embed
    stages = list(model.layers)
    windows = {blk.attn.window_size[0] for st in stages for blk in st.blocks} | {stages[0].blocks[0].window_size[0]}
    fc = getattr(model.head, "fc", None)
    return dict(img_size=pe.img_size[0], patch_size=pe.patch_size[0], in_chans=pe.proj.in_channels,
                num_classes=fc.out_features if isinstance(fc, nn.Linear) else 0,
                global_pool="avg" if model.global_pool == "avg" else "none", embed_dim=model.embed_dim,
                depths=tuple(len(st.blocks) for st in stages),
                num_heads=tuple(st.blocks[0].attn.num_heads for st in stages),
                window_size=max(windows), mlp_ratio=stages[0].blocks[0].mlp.fc1.out_features / model.embed_dim,
                qkv_bias=stages[0].blocks[0].attn.qkv.bias is not None, norm_eps=model.norm.eps,
                dynamic_img_size=bool(model.dynamic_img_size))


def swin_config_from_torchvision(model: nn.Module, img_size: int = 224) -> dict:
    feats = model.features
    conv = feats[0][0]
    stages = [feats[i] for i in range(1, len(feats), 2)]
    blk = stages[0][0]
    return dict(img_size=img_size, patch_size=conv.kernel_size[0], in_chans=conv.in_channels,
                num_classes=model.head.out_features, embed_dim=conv.out_channels,
                depths=tuple(len(s) for s in stages), num_heads=tuple(s[0].attn.num_heads for s in stages),
                window_size=blk.attn.window_size[0], mlp_ratio=blk.mlp[0].out_features / conv.out_channels,
                qkv_bias=blk.attn.qkv.bias is not None, norm_eps=model.norm.eps)


# ------------------------------------------------------------------------------ GPT-2 (Hugging Face)
def gpt2_config_from_hf(hf_config, **overrides) -> GPTConfig:
    """GPTConfig matching a transformers GPT2Config (pre-norm LayerNorm, tanh GELU, tied)."""
    act = getattr(hf_config, "activation_function", "gelu_new")
    mlp = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu2"}.get(act)
    if mlp is None or act == "relu":
        raise ValueError(f"GPT-2 activation {act!r} has no mmgen equivalent (supported: gelu_new, gelu)")
    kw = dict(vocab_size=hf_config.vocab_size, context_length=hf_config.n_positions, embed_dim=hf_config.n_embd,
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
