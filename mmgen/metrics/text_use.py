"""Does a text-conditional DDPM read its caption, and the relation in it?

* `seeded_loss`: the denoising loss per image at noise and timesteps drawn from a seed, so
  that caption sets (true, shuffled, empty, relation reversed) are compared on the same draws;
* `state_change`: how far the text encoder's token states move between two prompts.

`text_use(model, images, captions)` gathers both on the shapes grammar;
`scripts/text_use.py` runs it on checkpoints.
"""
from __future__ import annotations

import torch

PROBE = "a red circle above a blue square"


@torch.no_grad()
def seeded_loss(model, images: torch.Tensor, captions, t_range: tuple[int, int] = (0, 1000),
                seed: int = 0, space: str = "eps") -> torch.Tensor:
    """(B,) MSE per image (pixels or latents) of the noise (space="eps") or of the clean image
    (space="x0") implied by the denoiser's prediction, whatever it predicts, at noise and
    timesteps in [t_range) drawn from `seed`: the same draws for every caption set. At high
    noise the eps error hides what the x0 error shows: the layout the model has in mind."""
    if space not in ("eps", "x0"):
        raise ValueError(f"space must be 'eps' or 'x0', got {space!r}")
    g = torch.Generator().manual_seed(seed)
    images = images.to(model.device)
    if model.vae is not None:
        images = model._vae_encode(images, sample=False)
    noise = torch.randn(images.shape, generator=g).to(images.device)
    t = torch.randint(*t_range, (len(images),), generator=g).to(images.device)
    xt = model.noise_scheduler.add_noise(images, noise, t)
    out = model.net(xt, t.float(), **model.encode_condition(list(captions)))
    eps, x0 = model.eps_and_x0(out.float(), xt, t)
    return ((eps - noise) if space == "eps" else (x0 - images)).pow(2).mean(dim=(1, 2, 3))


@torch.no_grad()
def state_change(model, a: str, b: str) -> float:
    """Largest relative change, over the tokens, of the text encoder's states from prompt a to b."""
    ctx = model.encode_condition([a, b])["context"].float()  # (2, S, width)
    return float(((ctx[0] - ctx[1]).norm(dim=-1) / ctx[0].norm(dim=-1).clamp_min(1e-8)).max())


def text_use(model, images: torch.Tensor, captions: list[str], t_range: tuple[int, int] = (0, 1000),
             seed: int = 0, space: str = "eps") -> dict[str, float]:
    """Mean losses with the true, shuffled (a fixed permutation), empty and relation-reversed
    captions (the last two over two-object captions only), and the encoder's state change
    for above -> below and red -> green in PROBE."""
    from ..data.shapes import reverse_relation
    n = len(captions)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1)).tolist()
    two = torch.tensor([reverse_relation(c) != c for c in captions])
    loss = {name: seeded_loss(model, images, caps, t_range, seed, space) for name, caps in (
        ("true", captions), ("shuffled", [captions[i] for i in perm]), ("empty", [""] * n),
        ("reversed", [reverse_relation(c) for c in captions]))}
    return {"loss_true": float(loss["true"].mean()), "loss_shuffled": float(loss["shuffled"].mean()),
            "loss_empty": float(loss["empty"].mean()),
            "two_loss_true": float(loss["true"][two].mean()) if two.any() else None,
            "two_loss_reversed": float(loss["reversed"][two].mean()) if two.any() else None,
            "states_above_below": state_change(model, PROBE, reverse_relation(PROBE)),
            "states_red_green": state_change(model, PROBE, PROBE.replace("red", "green"))}
