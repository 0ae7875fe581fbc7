"""P-tuning (Liu et al., 2021, "GPT Understands, Too"): trainable virtual-token embeddings,
produced by a small prompt encoder, inserted before the tokens at the input of a frozen
`mmgen.layers.Transformer`.

`PromptEncoder(num_virtual, dim, encoder="mlp" | "lstm" | "none")` holds one input vector per
virtual token and maps them through the encoder (P-Tuning's reparametrisation: an MLP, or a
2-layer bidirectional LSTM and an MLP head, as in the paper; "none" is plain prompt tuning).
The encoder's output is added to its input and its last layer starts at zero, so the
prompt starts exactly at its input vectors (`init_from_tokens` sets those to the base
model's embeddings of a text). After training only the P x dim output matters:
`save_prompt` writes that table (and, with `with_encoder=True`, the encoder to keep
training), `load_prompt` reads it back.

`PTuningGPT(gpt, num_virtual)` wraps a GPT: the base is frozen, `loss(batch)` trains the
prompt only, `generate(prompt, ...)` decodes on a KV cache holding the virtual tokens first.
`add_ptuning(model, "text.transformer", 8)` does the same to any model built on the shared
Transformer (CLIP's text tower) through forward hooks, with no change to the model's code.

Positions: the real tokens keep their own positions 0..T-1 (a learned position table is
added by the model's embedding before the virtual tokens are inserted, and they take none);
under RoPE the virtual tokens sit at positions 0..P-1 and the real tokens at 0..T-1. So
P-tuning costs none of the model's context and a frozen model sees its tokens exactly where
it was trained to; what changes is that every token also attends to the P virtual tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .virtual import VirtualTokenGPT

ENCODERS = ("mlp", "lstm", "none")
PROMPT_WEIGHTS = "prompt.safetensors"
PROMPT_CONFIG = "prompt_config.json"


class PromptEncoder(nn.Module):
    """num_virtual trainable input vectors -> (num_virtual, dim) virtual-token embeddings.

    mlp:  e + MLP(e), MLP = Linear(dim, h) -> ReLU -> Linear(h, h) -> ReLU -> Linear(h, dim)
    lstm: e + MLP(biLSTM(e)), a 2-layer bidirectional LSTM of width h per direction, then
          Linear(2h, h) -> ReLU -> Linear(h, dim): each virtual token sees all the others
    none: e (prompt tuning). The last Linear is zero-initialised: the output starts at e."""

    def __init__(self, num_virtual: int, dim: int, *, encoder: str = "mlp", hidden: int | None = None,
                 init_std: float = 0.02):
        super().__init__()
        if num_virtual < 1:
            raise ValueError(f"num_virtual must be >= 1, got {num_virtual}")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        self.num_virtual, self.dim, self.encoder = num_virtual, dim, encoder
        self.hidden = hidden or dim
        h = self.hidden
        self.embedding = nn.Parameter(torch.randn(num_virtual, dim) * init_std)
        self.lstm = None
        if encoder == "mlp":
            self.mlp = nn.Sequential(nn.Linear(dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, dim))
        elif encoder == "lstm":
            self.lstm = nn.LSTM(dim, h, num_layers=2, bidirectional=True, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, dim))
        else:
            self.mlp = None
        if self.mlp is not None:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self) -> torch.Tensor:
        """The virtual-token embeddings (num_virtual, dim)."""
        e = self.embedding
        if self.encoder == "none":
            return e
        h = self.lstm(e[None])[0][0] if self.lstm is not None else e  # (P, 2h) or (P, dim)
        return e + self.mlp(h)

    @torch.no_grad()
    def init_from_embeddings(self, emb: torch.Tensor) -> None:
        """Start from given embeddings (num_virtual, dim) (e.g. the base model's of a text)."""
        if emb.shape != self.embedding.shape:
            raise ValueError(f"init embeddings have shape {tuple(emb.shape)}, expected {tuple(self.embedding.shape)}")
        self.embedding.copy_(emb)

    def extra_repr(self) -> str:
        return f"num_virtual={self.num_virtual}, dim={self.dim}, encoder={self.encoder!r}, hidden={self.hidden}"


class _Prompt(nn.Module):
    """A fixed table of virtual-token embeddings (a loaded prompt without its encoder)."""

    def __init__(self, table: torch.Tensor, trainable: bool = True):
        super().__init__()
        self.embedding = nn.Parameter(table.clone(), requires_grad=trainable)
        self.num_virtual, self.dim, self.encoder = table.shape[0], table.shape[1], "none"

    def forward(self) -> torch.Tensor:
        return self.embedding


def insert_virtual(x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """x (B, T, dim), prompt (P, dim) -> (B, P + T, dim), the virtual tokens first."""
    B = x.shape[0]
    return torch.cat([prompt.to(x.dtype).expand(B, *prompt.shape), x], 1)


def virtual_positions(P: int, positions: torch.Tensor | None, T: int, device) -> torch.Tensor:
    """RoPE positions for [virtual; real]: 0..P-1, then the real tokens' own (default 0..T-1)."""
    if positions is None:
        positions = torch.arange(T, device=device)
    pv = torch.arange(P, device=positions.device)
    if positions.ndim == 1:
        return torch.cat([pv, positions])
    return torch.cat([pv.expand(positions.shape[0], P), positions], 1)  # (B, P + T)


class PTuningGPT(VirtualTokenGPT):
    """A frozen GPT with P trainable virtual tokens before its input (training contract:
    loss / example_batch / evaluate; `generate` decodes with them)."""

    def __init__(self, gpt: nn.Module, num_virtual: int = 16, *, encoder: str = "mlp", hidden: int | None = None):
        super().__init__()
        self.gpt = gpt.requires_grad_(False)
        self.prompt = PromptEncoder(num_virtual, gpt.config.embed_dim, encoder=encoder, hidden=hidden)
        self.prompt.to(gpt.tok_embed.weight.device)
        self.config = gpt.config

    @property
    def num_virtual(self) -> int:
        return self.prompt.num_virtual

    @torch.no_grad()
    def init_from_text(self, ids: list[int]) -> None:
        """Start the virtual tokens at the base model's token embeddings of `ids`."""
        ids = self._check_init_ids(ids, "prompt")
        ids_t = torch.tensor(ids, device=self.gpt.tok_embed.weight.device)
        self.prompt.init_from_embeddings(self.gpt.tok_embed(ids_t))

    def _run(self, input_ids, positions, cache=None, start: int = 0, prompt: torch.Tensor | None = None):
        """Embed `input_ids` at `positions` (B, T); with `prompt`, put the virtual tokens first."""
        g = self.gpt
        x = g.embed(input_ids, positions)  # (B, T, dim)
        rope_pos = positions if g.config.pos == "rope" else None
        if prompt is not None:
            x = insert_virtual(x, prompt)  # (B, P + T, dim)
            if rope_pos is not None:
                rope_pos = virtual_positions(prompt.shape[0], rope_pos, input_ids.shape[1], x.device)
        h = g.transformer(x, positions=rope_pos, cache=cache, start=start)
        return g.head(h)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, vocab) of the real tokens."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        pos = torch.arange(T, device=input_ids.device).expand(B, T)
        return self._run(input_ids, pos, prompt=self.prompt())[:, self.num_virtual:]

    def _prefill(self, ids, max_new_tokens):
        B, T = ids.shape
        cache = self.gpt.make_cache(B, self.num_virtual + T + max_new_tokens)
        pos = torch.arange(T, device=ids.device).expand(B, T)
        return self._run(ids, pos, cache=cache, prompt=self.prompt())[:, -1], cache

    def _decode(self, tok, pos, cache, start):
        return self._run(tok, pos, cache=cache, start=start)[:, -1]

    def save_prompt(self, path: str | Path, *, with_encoder: bool = False) -> Path:
        return save_prompt(self.prompt, path, with_encoder=with_encoder)

    def load_prompt(self, path: str | Path) -> None:
        self.prompt = load_prompt(path, self.prompt)


# ---- any model on the shared Transformer: forward hooks -----------------------------------
def add_ptuning(model: nn.Module, transformer: str, num_virtual: int = 8, *, encoder: str = "mlp",
                hidden: int | None = None, freeze_base: bool = True) -> PromptEncoder:
    """P-tune any model built on `mmgen.layers.Transformer` without touching its code:
    `add_ptuning(clip, "text.transformer", 8)` (CLIP's text tower), `add_ptuning(gpt, "transformer")`.

    A forward pre-hook on the named Transformer puts the P virtual tokens before its input
    (B, T, dim) -> (B, P + T, dim), extends a key-padding mask with P always-visible
    positions and gives RoPE positions 0..P-1 then the tokens' own; a forward hook drops the
    P virtual outputs again, so the model's pooling / head sees (B, T, dim) as before. The
    encoder is registered on the model as `ptuning` (its parameters are the model's
    trainable ones and are saved with it); with freeze_base everything else is frozen.
    Calls with a KV cache are left alone: decode P-tuned GPTs with PTuningGPT.generate."""
    tr = model.get_submodule(transformer)
    if not hasattr(tr, "blocks") or not hasattr(tr, "make_cache"):
        raise ValueError(f"{transformer!r} is a {type(tr).__name__}, not an mmgen.layers.Transformer")
    if freeze_base:
        model.requires_grad_(False)
    dim = tr.cfg.embed_dim
    w = next(tr.parameters())
    enc = PromptEncoder(num_virtual, dim, encoder=encoder, hidden=hidden).to(w.device)
    model.ptuning = enc
    P = num_virtual
    state = {"active": False}

    def pre_hook(mod, args, kwargs):
        state["active"] = False
        if kwargs.get("cache") is not None:
            return None
        x = args[0] if args else kwargs.pop("x")
        B, T = x.shape[0], x.shape[1]
        kwargs = dict(kwargs)
        x = insert_virtual(x, model.ptuning())
        if mod.rope is not None:
            kwargs["positions"] = virtual_positions(P, kwargs.get("positions"), T, x.device)
        kp = kwargs.get("key_padding")
        if kp is not None:
            kwargs["key_padding"] = torch.cat([torch.ones(B, P, dtype=torch.bool, device=kp.device), kp.bool()], 1)
        if kwargs.get("attn_mask") is not None:
            raise ValueError("add_ptuning: a Transformer called with an explicit attn_mask cannot take virtual "
                             "tokens; pass key_padding instead")
        state["active"] = True
        return (x, *args[1:]), kwargs

    def post_hook(mod, args, kwargs, out):
        if not state["active"]:
            return None
        state["active"] = False
        if isinstance(out, tuple):  # (x, hidden) with return_hidden=True
            x, hidden = out
            return x[:, P:], [h[:, P:] for h in hidden]
        return out[:, P:]

    enc._hooks = (tr.register_forward_pre_hook(pre_hook, with_kwargs=True),
                  tr.register_forward_hook(post_hook, with_kwargs=True))
    return enc


def remove_ptuning(model: nn.Module) -> None:
    enc = getattr(model, "ptuning", None)
    if enc is None:
        raise ValueError("this model has no P-tuning prompt (add_ptuning was not called)")
    for h in enc._hooks:
        h.remove()
    del model.ptuning


# ---- save / load just the prompt ------------------------------------------------------------
def save_prompt(enc: nn.Module, path: str | Path, *, with_encoder: bool = False) -> Path:
    """Write `prompt.safetensors` ("prompt": the (P, dim) virtual tokens; with_encoder adds
    the encoder's tensors as "encoder.*") and `prompt_config.json`."""
    from safetensors.torch import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        tensors = {"prompt": enc().detach().float().cpu().contiguous()}
    if with_encoder:
        tensors.update({f"encoder.{k}": v.detach().cpu().contiguous() for k, v in enc.state_dict().items()})
    save_file(tensors, str(path / PROMPT_WEIGHTS))
    cfg = {"num_virtual": enc.num_virtual, "dim": enc.dim, "encoder": enc.encoder,
           "hidden": getattr(enc, "hidden", None), "with_encoder": with_encoder}
    (path / PROMPT_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
    return path


def load_prompt(path: str | Path, like: nn.Module | None = None, *, trainable: bool = True) -> nn.Module:
    """The saved prompt as a module returning (P, dim): the encoder itself when the file has
    it (and `like`, if given, is one of the same shape: it is loaded in place), else a fixed
    table (a parameter; `trainable` says whether it keeps training)."""
    from safetensors.torch import load_file
    f = Path(path) / PROMPT_WEIGHTS
    if not f.exists():
        raise FileNotFoundError(f"no {PROMPT_WEIGHTS} in {path}")
    sd = load_file(str(f))
    cfg = json.loads((Path(path) / PROMPT_CONFIG).read_text()) if (Path(path) / PROMPT_CONFIG).exists() else {}
    table = sd["prompt"]
    if like is not None and (like.num_virtual, like.dim) != tuple(table.shape):
        raise ValueError(f"saved prompt has {table.shape[0]} virtual tokens of width {table.shape[1]}; this model "
                         f"expects {like.num_virtual} x {like.dim}")
    device = next(like.parameters()).device if like is not None else "cpu"
    enc_sd = {k.removeprefix("encoder."): v for k, v in sd.items() if k.startswith("encoder.")}
    if enc_sd:
        enc = like if isinstance(like, PromptEncoder) and like.encoder == cfg.get("encoder") else \
            PromptEncoder(cfg["num_virtual"], cfg["dim"], encoder=cfg["encoder"], hidden=cfg.get("hidden"))
        enc.load_state_dict(enc_sd)
        return enc.to(device).requires_grad_(trainable)
    return _Prompt(table.to(device), trainable)
