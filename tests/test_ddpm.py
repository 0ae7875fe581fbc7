"""DDPM: schedules, samplers, prediction targets, guidance, denoisers, training and sampling."""
import pytest
import torch

import mmgen
from mmgen.models.ddpm import DDPM
from mmgen.schedulers import make_scheduler
from mmgen.pipelines import DDPMPipeline, training_samples
from mmgen.models.dit import DiT, DiTConfig
from mmgen.models.unet import UNet, UNetConfig


def _wake(model):
    """Give every zero-initialised weight (output convs, adaLN-Zero) small random values, so
    the network's output depends on all of its inputs."""
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2 and p.abs().max() == 0:
                p.normal_(std=0.05)
    return model


def test_add_noise_statistics():
    """x_t = sqrt(abar) x0 + sqrt(1 - abar) eps: the mean and std over many noise draws."""
    sched = make_scheduler("ddpm", num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    x0 = torch.full((20000, 1), 0.7)
    for t in (0, 250, 600, 999):
        abar = sched.alphas_cumprod[t].item()
        xt = sched.add_noise(x0, torch.randn_like(x0), torch.full((20000,), t))
        assert abs(xt.mean().item() - abar ** 0.5 * 0.7) < 0.02, t
        assert abs(xt.std().item() - (1 - abar) ** 0.5) < 0.02, t
    abar = sched.alphas_cumprod
    assert abar[0] > 0.999 and abar[-1] < 1e-3 and (abar[1:] < abar[:-1]).all()


def sample(model, prompts=None, **kw):
    """The pipeline's float samples (N, C, H, W) in [-1, 1] (no reranking, no prompt checks)."""
    return DDPMPipeline(model, clip=None).sample(prompts, **kw)


def _run(model, scheduler, steps, seed, **kw):
    return sample(model, num_images=2, steps=steps, scheduler=scheduler, seed=seed, **kw)


def test_ddim_eta1_over_all_steps_is_ddpm_ancestral():
    """DDIM with eta = 1 at every training step has DDPM's posterior mean and variance, so given
    the same noise (the same generator) it reproduces ancestral sampling."""
    model = mmgen.create_model("ddpm_unet_tiny", num_train_timesteps=40, beta_schedule="linear").eval()
    _wake(model)  # a denoiser that is not identically 0
    ddpm = _run(model, "ddpm", 40, seed=3)
    ddim = _run(model, "ddim", 40, seed=3, eta=1.0)
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(_run(model, "ddim", 40, seed=3, eta=0.0), ddpm, atol=1e-3)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_prediction_round_trip(prediction):
    """The true eps / v / x0 target given to a sampler step recovers the clean image exactly."""
    sched = make_scheduler("ddim", num_train_timesteps=1000, prediction=prediction, clip_sample=False)
    sched.set_timesteps(10)
    x0, eps = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    t = sched.timesteps[3]
    xt = sched.add_noise(x0, eps, t[None])
    target = {"eps": eps, "x0": x0, "v": sched.get_velocity(x0, eps, t[None])}[prediction]
    out = sched.step(target, t, xt)
    torch.testing.assert_close(out.pred_original_sample, x0, atol=1e-4, rtol=1e-4)
    if prediction == "v":  # v = sqrt(abar) eps - sqrt(1-abar) x0, inverted by hand
        a = sched.alphas_cumprod[t]
        torch.testing.assert_close(a.sqrt() * xt - (1 - a).sqrt() * target, x0, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close((1 - a).sqrt() * xt + a.sqrt() * target, eps, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["ddpm_unet_text_tiny", "ddpm_dit_tiny", "ddpm_unet_class_tiny"])
def test_guidance_scale_one_is_the_conditional_prediction(name):
    model = _wake(mmgen.create_model(name).eval())
    n = 3
    x, t = torch.randn(n, 3, 16, 16), torch.tensor([10.0, 500.0, 900.0])
    prompts = ["a red circle", "a blue square at the top", "a green triangle"] if "class" not in name else None
    labels = torch.tensor([1, 2, 3]) if "class" in name else None
    with torch.no_grad():
        cond = model.encode_condition(prompts, labels)
        uncond = model.encode_condition(unconditional=True, batch_size=n)
        c = model.net(x, t, **cond)
        u = model.net(x, t, **uncond)
        torch.testing.assert_close(model.guided_prediction(x, t, cond, uncond, 1.0), c, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.guided_prediction(x, t, cond, uncond, 0.0), u, atol=1e-5, rtol=1e-4)
        g3 = model.guided_prediction(x, t, cond, uncond, 3.0)
        torch.testing.assert_close(g3, u + 3 * (c - u), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(c, u, atol=1e-4), "the condition does not change the prediction"


def test_attention_rope_gives_the_tokens_positions_and_no_new_weights():
    from mmgen.models.unet import SpatialTransformer
    torch.manual_seed(0)
    plain, rope = SpatialTransformer(16, 2, 4, context_dim=12), SpatialTransformer(16, 2, 4, context_dim=12, rope=True)
    assert plain.state_dict().keys() == rope.state_dict().keys()  # a trained UNet loads into either
    rope.load_state_dict(_wake(plain).state_dict())
    x, ctx = torch.randn(1, 16, 4, 4), torch.randn(1, 3, 12)
    swap = lambda z: z.flip(-2)  # the rows upside down
    with torch.no_grad():
        # without positions the block cannot tell the rows apart: it commutes with the flip
        torch.testing.assert_close(plain(swap(x), ctx), swap(plain(x, ctx)), atol=1e-5, rtol=1e-5)
        assert (rope(swap(x), ctx) - swap(rope(x, ctx))).abs().max() > 1e-2
    net = UNet(UNetConfig(base_ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_res=(8,), num_heads=2, groups=4,
                          attn_rope=True), img_size=16, in_chans=3)
    assert net(torch.randn(2, 3, 16, 16), torch.tensor([3.0, 700.0])).shape == (2, 3, 16, 16)


def test_canonical_relations_read_converse_captions_as_one():
    a, b = "a red circle below a blue square", "a blue square above a red circle"
    plain = mmgen.create_model("ddpm_unet_text_tiny").eval()
    canon = mmgen.create_model("ddpm_unet_text_tiny", canonical_relations=True).eval()
    canon.load_state_dict(plain.state_dict())
    with torch.no_grad():
        ca, cb = (canon.encode_condition([p])["context"] for p in (a, b))
        pa, pb = (plain.encode_condition([p])["context"] for p in (a, b))
    assert torch.equal(ca, cb) and torch.equal(ca, pb)  # "A below B" is read as "B above A"
    assert not torch.allclose(pa, pb)


def test_unet_shapes_and_gradients():
    net = UNet(UNetConfig(base_ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_res=(8,), num_heads=2, groups=4),
               img_size=16, in_chans=3, cond_dim=8, context_dim=12)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    ctx = torch.randn(2, 5, 12, requires_grad=True)
    cond = torch.randn(2, 8, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    _wake(net)  # zero-initialised outputs would block gradients on the first step
    out = net(x, torch.tensor([3.0, 700.0]), cond=cond, context=ctx, context_mask=mask)
    assert out.shape == x.shape
    out.square().mean().backward()
    for name, tensor in (("x", x), ("context", ctx), ("cond", cond)):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, name
    assert ctx.grad[0, 3:].abs().sum() == 0, "padded context tokens must not be attended to"
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="16x16"):
        net(torch.randn(1, 3, 8, 8), torch.tensor([1.0]), cond=cond[:1], context=ctx[:1])
    with pytest.raises(ValueError, match="divisible"):
        UNet(UNetConfig(ch_mult=(1, 2, 2)), img_size=18, in_chans=3)


def test_dit_shapes_and_gradients():
    net = DiT(DiTConfig(patch_size=4, embed_dim=32, depth=2, num_heads=2), img_size=16, in_chans=4, cond_dim=8,
              context_dim=12)
    _wake(net)  # open the adaLN-Zero gates and the zero output layer
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    ctx = torch.randn(2, 5, 12, requires_grad=True)
    out = net(x, torch.tensor([3.0, 700.0]), cond=torch.randn(2, 8), context=ctx)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert x.grad.abs().sum() > 0 and ctx.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        DiT(DiTConfig(patch_size=3), img_size=16, in_chans=3)


def test_dit_zero_init_starts_at_zero_output():
    net = DiT(DiTConfig(patch_size=2, embed_dim=32, depth=2, num_heads=2), img_size=8, in_chans=3)
    assert net(torch.randn(2, 3, 8, 8), torch.tensor([1.0, 2.0])).abs().max() == 0


def test_min_snr_weighting_matches_formula():
    model = mmgen.create_model("ddpm_unet_tiny", loss_weighting="min_snr", prediction="v")
    t = torch.tensor([1, 100, 500, 999])
    snr = model.snr(t)
    a = model.alphas_cumprod[t]
    torch.testing.assert_close(snr, a / (1 - a))
    assert snr[0] > 5 > snr[-1]  # the clamp at gamma = 5 is active at small t only


def test_overfit_one_batch():
    """Class-conditional x0 prediction on two images: the loss goes near zero, which needs the
    class condition (each label has its own image)."""
    torch.manual_seed(0)
    model = mmgen.create_model("ddpm_unet_class_tiny", prediction="x0", cond_dropout=0.0).train()
    g = torch.Generator().manual_seed(0)
    imgs = (torch.rand(2, 3, 16, 16, generator=g) > 0.5).float() * 2 - 1
    batch = {"image": imgs.repeat(4, 1, 1, 1), "label": torch.tensor([0, 1]).repeat(4)}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(150):
        loss, _ = model.loss(batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    losses = [model.loss(batch)[0].item() for _ in range(5)]
    assert sum(losses) / 5 < 0.05 * first, (first, losses)


def test_seeded_sampling_is_deterministic():
    model = _wake(mmgen.create_model("ddpm_unet_text_tiny").eval())
    kw = dict(steps=4, scheduler="ddpm", guidance=2.0)
    a = sample(model, ["a red circle", "a blue square"], seed=7, **kw)
    b = sample(model, ["a red circle", "a blue square"], seed=7, **kw)
    c = sample(model, ["a red circle", "a blue square"], seed=8, **kw)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.shape == (2, 3, 16, 16) and a.min() >= -1 and a.max() <= 1


def test_pipeline_call_contract_and_errors():
    model = mmgen.create_model("ddpm_unet_class_tiny", class_names=tuple(f"c{i}" for i in range(10))).eval()
    out = DDPMPipeline(model)(["c3", "7"], num_images=2, seed=0, guidance=3.0, steps=2)
    assert out.images.shape == (2, 2, 3, 16, 16) and out.images.dtype == torch.uint8 and out.scores is None
    assert out.seed == 0 and out.prompts == ["c3", "7"]
    with pytest.raises(ValueError, match="unknown class"):
        sample(model, ["zebra"], steps=2)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        sample(model, [12], steps=2)
    text = mmgen.create_model("ddpm_unet_text_tiny").eval()
    with pytest.raises(ValueError, match="prompts"):
        sample(text, [], steps=2)
    with pytest.raises(ValueError, match="scheduler must be one of"):
        sample(text, ["a red circle"], steps=2, scheduler="heun")
    with pytest.raises(ValueError, match="prediction must be one of"):
        mmgen.create_model("ddpm_unet_tiny", prediction="score")


def test_bad_arguments_are_refused_before_any_work(monkeypatch):
    pipe = DDPMPipeline(mmgen.create_model("ddpm_unet_text_tiny").eval())
    monkeypatch.setattr(DDPMPipeline, "denoise", lambda *a, **k: pytest.fail("sampled before checking"))
    for bad, msg in (({"guidance": float("nan")}, "finite"), ({"guidance": float("inf")}, "finite"),
                     ({"guidance": -1.0}, ">= 0"), ({"steps": 1001}, "1000 timesteps"), ({"num_images": 0}, ">= 1"),
                     ({"candidates": 0}, ">= 1"), ({"candidates": 2}, "no CLIP reranker"),
                     ({"scheduler": "heun"}, "scheduler must be one of")):
        with pytest.raises(ValueError, match=msg):
            pipe(["a red circle"], **bad)


def test_candidates_rerank_by_clip(tmp_path):
    """DDPM candidates are reranked by CLIP as DALL-E's: here the CLIP whose text tower conditions
    the model, which the pipeline takes as its reranker."""
    clip = mmgen.create_model("clip_tiny").eval()
    clip.save_pretrained(tmp_path / "clip")
    model = _wake(mmgen.create_model("ddpm_unet_text_tiny", text_encoder="clip",
                                     text_encoder_path=str(tmp_path / "clip")).eval())
    pipe = DDPMPipeline(model)
    assert pipe.clip is model.text_encoder.model
    every = pipe(["a red circle"], num_images=4, candidates=1, rerank=False, seed=2, steps=2)
    best = pipe(["a red circle"], num_images=2, candidates=2, rerank=True, seed=2, steps=2)
    top = every.scores[0].argsort(descending=True)[:2]
    torch.testing.assert_close(best.scores[0], every.scores[0, top])
    assert torch.equal(best.images[0], every.images[0, top]) and best.scores[0, 0] >= best.scores[0, 1]


def test_half_precision_checkpoint_round_trip(tmp_path):
    model = _wake(mmgen.create_model("ddpm_unet_text_tiny").eval())
    model.save_pretrained(tmp_path / "m", dtype=torch.float16)
    loaded = mmgen.load_pretrained(tmp_path / "m")
    assert isinstance(loaded, DDPM) and next(loaded.parameters()).dtype == torch.float32
    kw = dict(steps=3, seed=1)
    torch.testing.assert_close(sample(loaded, ["a red circle"], **kw), sample(model, ["a red circle"], **kw),
                               atol=2e-2, rtol=0)


def test_generate_cli(tmp_path, capsys):
    from mmgen.cli import main
    model = mmgen.create_model("ddpm_unet_text_tiny")
    model.save_pretrained(tmp_path / "ckpt", dtype=torch.float16)
    out = tmp_path / "grid.png"
    rc = main(["generate", "a red circle", "a blue square", "-o", str(out), "--model", str(tmp_path / "ckpt"),
               "--num-images", "2", "--steps", "2", "--scheduler", "dpm++", "--guidance", "2", "--quiet", "--raw"])
    assert rc == 0 and out.is_file()
    from PIL import Image
    assert Image.open(out).size == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)  # 2x2 grid with 2 px padding
    for argv, msg in ((["   "], "empty prompt"), (["x", "--model", "nosuchmodel"], "unknown model"),
                      (["x", "--model", str(tmp_path / "missing/")], "does not exist"),
                      (["x", "--model", str(tmp_path)], "no config.json"),
                      (["x", "--model", str(tmp_path / "ckpt"), "--steps", "5000"], "1000 timesteps"),
                      (["x", "--model", str(tmp_path / "ckpt"), "--guidance", "nan"], "finite"),
                      (["x", "--model", str(tmp_path / "ckpt"), "--top-k", "5"], "DALL-E option")):
        with pytest.raises(SystemExit) if "nan" in argv else _nothing():
            assert main(["generate", *argv, "-o", str(out)]) == 2
        assert msg in capsys.readouterr().err, argv
    mmgen.create_model("ddpm_unet_tiny").save_pretrained(tmp_path / "uncond")
    assert main(["generate", "x", "--model", str(tmp_path / "uncond"), "--steps", "1", "--num-images", "1",
                 "-o", str(out), "--quiet"]) == 0


def _nothing():
    import contextlib
    return contextlib.nullcontext()


def test_generate_cli_checks_the_output_before_any_work(tmp_path, capsys, monkeypatch):
    from mmgen.cli import main
    from mmgen.pipelines import Pipeline
    monkeypatch.setattr(Pipeline, "__call__", lambda *a, **k: pytest.fail("generated before checking -o"))
    (tmp_path / "somedir").mkdir()
    for o, msg in ((tmp_path / "somedir", "is a directory"), (tmp_path / "noext", "no image file extension")):
        assert main(["generate", "a red circle", "--model", "ddpm", "-o", str(o)]) == 2
        assert msg in capsys.readouterr().err


def test_generate_cli_rejects_non_generators(tmp_path, capsys):
    from mmgen.cli import main
    mmgen.create_model("clip_tiny").save_pretrained(tmp_path / "m")
    assert main(["generate", "x", "--model", str(tmp_path / "m"), "-o", str(tmp_path / "o.png")]) == 2
    assert "not an image generator" in capsys.readouterr().err
    assert main(["generate", "x", "--model", "ghost", "-o", str(tmp_path / "o.png")]) == 2
    assert "unknown model 'ghost'" in capsys.readouterr().err


def test_latent_dit_on_vae_latents(tmp_path):
    model = _wake(mmgen.create_model("ddpm_dit_latent_tiny"))
    assert (model.latent_chans, model.latent_size) == tuple(model.vae.latent_shape[:2])
    assert not any(p.requires_grad for p in model.vae.parameters())
    loss, _ = model.loss(model.example_batch(2))
    loss.backward()
    assert all(p.grad is None for p in model.vae.parameters())
    model.eval()
    lat = sample(model, [1, 2], steps=2, seed=0, return_latents=True)
    assert lat.shape == (2, *model.vae.latent_shape)
    img = sample(model, [1, 2], steps=2, seed=0)
    assert img.shape == (2, 3, 16, 16)
    torch.testing.assert_close(img, model.vae.decode_latents(lat).clamp(-1, 1))
    model.save_pretrained(tmp_path / "ldm")  # the VAE travels inside the checkpoint
    loaded = mmgen.load_pretrained(tmp_path / "ldm")
    torch.testing.assert_close(sample(loaded, [1, 2], steps=2, seed=0), img)
    with pytest.raises(ValueError, match="clip_sample=False"):
        mmgen.create_model("ddpm_dit_latent_tiny", clip_sample=True)


def test_latent_unet_on_2x2_pixel_latents():
    """The latent shapes UNet runs on vae_32_f2's (4, 16, 16) latents: its two levels are 16 and 8
    (attention at 8), and the images it samples come back at 32 px."""
    model = mmgen.create_model("ddpm_unet_shapes_latent_f2", vae_meta={"preset": "vae_32_f2"})
    assert tuple(model.vae.latent_shape) == (4, 16, 16) and (model.latent_chans, model.latent_size) == (4, 16)
    loss, _ = model.loss(model.example_batch(2))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for p in model.vae.parameters())
    assert sample(model.eval(), ["a red circle", "a blue square"], steps=2, seed=0).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("latent_sample", [True, False])
def test_latent_diffusion_trains_on_posterior_samples_or_means(latent_sample):
    """latent_sample=False trains on the VAE's posterior means: the same images give the same
    (scaled) latents, and the loss does not depend on a posterior draw."""
    model = mmgen.create_model("ddpm_dit_latent_tiny", latent_scale=3.0, latent_sample=latent_sample)
    seen = []
    encode = model.vae.encode_latents
    model.vae.encode_latents = lambda x, sample=False, **kw: seen.append(encode(x, sample=sample, **kw)) or seen[-1]
    batch = model.example_batch(2)
    for _ in range(2):
        model.loss(batch)
    assert torch.equal(seen[0], seen[1]) is (not latent_sample)
    if not latent_sample:
        torch.testing.assert_close(model._vae_encode(batch["image"], sample=False), seen[0] * 3.0)


def test_gpt_hidden_states_as_text_encoder(tmp_path):
    """Text conditioning from a frozen GPT's hidden states; the checkpoint carries the GPT."""
    import shutil
    gpt = mmgen.create_model("gpt_tiny")
    gpt.save_pretrained(tmp_path / "gpt")
    model = mmgen.create_model("ddpm_unet_text_tiny", text_encoder="gpt", text_encoder_path=str(tmp_path / "gpt"))
    assert model.config.text_encoder_meta["model_type"] == "gpt"
    states, mask, pooled = model.text_encoder(["a red circle", "a blue square above a green cross"], "cpu")
    n = len("a red circle") + 2
    assert mask[0].sum() == n and mask[1].sum() == len("a blue square above a green cross") + 2
    with torch.no_grad():
        full = gpt(torch.tensor([[256, *"a red circle".encode(), 257]]), return_hidden=True)[1]
    torch.testing.assert_close(states[0, :n], full[0])  # right padding leaves the causal states alone
    torch.testing.assert_close(pooled[0], full[0, -1])
    loss, _ = model.loss(model.example_batch(2))
    loss.backward()
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert model.text_proj.weight.grad is not None
    model.save_pretrained(tmp_path / "ddpm")
    shutil.rmtree(tmp_path / "gpt")  # self-contained: no reference to the GPT directory is needed
    loaded = mmgen.load_pretrained(tmp_path / "ddpm").eval()
    model.eval()
    kw = dict(steps=2, seed=0)
    torch.testing.assert_close(sample(loaded, ["a red circle"], **kw), sample(model, ["a red circle"], **kw))
    with pytest.raises(TypeError, match="needs a 'clip' checkpoint"):
        mmgen.create_model("ddpm_unet_text_tiny", text_encoder="clip", text_encoder_meta=model.config.text_encoder_meta)


class _Oracle(torch.nn.Module):
    """The perfect denoiser for a data set of one image x0: returns the exact eps / v / x0."""

    def __init__(self, x0, alphas_cumprod, prediction):
        super().__init__()
        self.x0, self.abar, self.prediction = x0, alphas_cumprod, prediction
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # so model.device has a parameter to read

    def forward(self, x, t, **cond):
        a = self.abar[t.round().long()].view(-1, 1, 1, 1)
        x0 = self.x0.expand_as(x)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[self.prediction]


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpm++", "euler"])
def test_every_sampler_lands_on_the_data_with_a_perfect_denoiser(scheduler, prediction):
    model = mmgen.create_model("ddpm_unet_tiny", prediction=prediction).eval()
    x0 = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    model.net = _Oracle(x0, model.alphas_cumprod, prediction)
    out = sample(model, num_images=2, steps=8, scheduler=scheduler, seed=0)
    torch.testing.assert_close(out, x0.expand_as(out), atol=2e-3, rtol=0)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_clip_prediction_keeps_in_range_predictions_and_clips_x0(prediction):
    model = mmgen.create_model("ddpm_unet_tiny", prediction=prediction)
    sched = model.noise_scheduler
    x0, eps, t = torch.rand(2, 3, 4, 4) * 1.8 - 0.9, torch.randn(2, 3, 4, 4), torch.tensor(500)
    xt = sched.add_noise(x0, eps, t[None])
    target = {"eps": eps, "x0": x0, "v": sched.get_velocity(x0, eps, t[None])}[prediction]
    torch.testing.assert_close(model.clip_prediction(target, xt, t), target, atol=1e-5, rtol=1e-5)
    far = {"eps": eps - 5, "x0": x0 + 5, "v": target - 5}[prediction]  # implies x0 far outside [-1, 1]
    clipped = model.clip_prediction(far, xt, t)
    a = model.alphas_cumprod[500]
    implied = {"eps": lambda p: (xt - (1 - a).sqrt() * p) / a.sqrt(), "x0": lambda p: p,
               "v": lambda p: a.sqrt() * xt - (1 - a).sqrt() * p}[prediction](clipped)
    assert implied.abs().max() <= 1 + 1e-5


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_eps_and_x0_recover_the_noise_and_the_image_per_timestep(prediction):
    model = mmgen.create_model("ddpm_unet_tiny", prediction=prediction)
    sched = model.noise_scheduler
    x0, eps, t = torch.rand(3, 3, 4, 4) * 2 - 1, torch.randn(3, 3, 4, 4), torch.tensor([10, 500, 990])
    xt = sched.add_noise(x0, eps, t)
    target = {"eps": eps, "x0": x0, "v": sched.get_velocity(x0, eps, t)}[prediction]
    got_eps, got_x0 = model.eps_and_x0(target, xt, t)
    # eps implied at t=10 and x0 at t=990 divide by a small number: looser there
    torch.testing.assert_close(got_eps[1:], eps[1:], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(got_x0[:2], x0[:2], atol=1e-3, rtol=1e-3)


def test_clip_text_tower_as_text_encoder(tmp_path):
    """Text conditioning from a frozen CLIP text tower: its token states up to EOS, pooled at EOS
    (projected by CLIP, the pooled state is CLIP's text embedding); the DDPM checkpoint carries it."""
    import shutil
    clip = mmgen.create_model("clip_tiny").eval()
    clip.save_pretrained(tmp_path / "clip")
    model = mmgen.create_model("ddpm_unet_text_tiny", text_encoder="clip", text_encoder_path=str(tmp_path / "clip"))
    prompts = ["a red circle", "a blue square above a green cross"]
    states, mask, pooled = model.text_encoder(prompts, "cpu")
    with torch.no_grad():
        ref = clip.encode_text(prompts, normalize=False)
    torch.testing.assert_close(clip.text_proj(pooled), ref, atol=1e-5, rtol=1e-5)
    eos = clip.text.pool_index(clip.tokenize(prompts))  # (B,) position of EOS
    assert mask.sum(1).tolist() == (eos + 1).tolist() and mask[:, 0].all()  # BOS .. EOS, nothing after
    loss, _ = model.loss(model.example_batch(2))
    loss.backward()
    assert all(p.grad is None for p in model.text_encoder.parameters())
    model.save_pretrained(tmp_path / "ddpm", dtype=torch.float16)
    shutil.rmtree(tmp_path / "clip")
    loaded = mmgen.load_pretrained(tmp_path / "ddpm")
    assert loaded.config.text_encoder_meta["model_type"] == "clip"
    assert sample(loaded, prompts, steps=2).shape == (2, 3, 16, 16)


def test_fine_tuned_clip_text_tower(tmp_path):
    """train_text_encoder=True: the CLIP text tower learns with the denoiser (its image tower
    stays frozen), the tuned tower is saved in the DDPM checkpoint, and the pipeline does not
    rerank with a CLIP whose text tower no longer matches its image tower, only with the one
    named in its config (clip_path)."""
    from mmgen.pipelines import DDPMPipeline
    clip = mmgen.create_model("clip_tiny").eval()
    clip.save_pretrained(tmp_path / "clip")
    model = mmgen.create_model("ddpm_unet_text_tiny", text_encoder="clip", text_encoder_path=str(tmp_path / "clip"),
                               train_text_encoder=True).train()
    loss, _ = model.loss(model.example_batch(2))
    loss.backward()
    enc = model.text_encoder.model
    assert all(p.grad is not None for p in enc.text.parameters())
    assert all(p.grad is None and not p.requires_grad for p in enc.visual.parameters())
    with torch.no_grad():
        next(enc.text.parameters()).add_(0.5)  # a "tuned" tower
    model.save_pretrained(tmp_path / "ddpm")
    loaded = mmgen.load_pretrained(tmp_path / "ddpm")
    torch.testing.assert_close(next(loaded.text_encoder.model.text.parameters()), next(enc.text.parameters()))
    assert loaded.text_encoder.trainable
    assert DDPMPipeline(loaded).clip is None
    # a reranker named in the config (clip_path) is found again wherever the two directories move
    import dataclasses
    import json
    import shutil
    from mmgen.pipelines import load_pipeline
    model.config = dataclasses.replace(model.config, clip_path=str(tmp_path / "clip"))
    model.save_pretrained(tmp_path / "runs" / "ddpm")
    assert json.loads((tmp_path / "runs" / "ddpm" / "config.json").read_text())["config"]["clip_path"] == "../../clip"
    shutil.move(tmp_path / "runs", tmp_path / "moved" / "runs")
    shutil.move(tmp_path / "clip", tmp_path / "moved" / "clip")
    pipe = load_pipeline(tmp_path / "moved" / "runs" / "ddpm")
    torch.testing.assert_close(next(pipe.clip.visual.parameters()), next(enc.visual.parameters()))
    out = pipe(["a red circle"], num_images=1, candidates=2, steps=2, seed=0)
    assert out.scores.shape == (1, 1)
    with pytest.raises(ValueError, match="train_text_encoder fine-tunes a CLIP / GPT text encoder"):
        mmgen.create_model("ddpm_unet_text_tiny", train_text_encoder=True)


def test_prompt_the_pruned_text_encoder_cannot_read_is_refused():
    """The shipped shapes model reads text through a CLIP with a pruned vocabulary: a prompt
    with none of its words would be ignored (an unconditional sample), so the pipeline refuses
    it; one known word is enough (with a warning naming the unknown word)."""
    from mmgen.pipelines import load_pipeline
    pipe = load_pipeline("ddpm_shapes")
    tok = pipe.model.text_encoder.model.tokenizer
    with pytest.warns(UserWarning, match="read as <unk>"):
        ids = pipe.model.text_encoder.model.tokenize(["圆", "a red 圆", "zzzz qqqq"])
    assert tok.unreadable(ids).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="no word the CLIP text encoder can read"):
        pipe(["a red circle", "圆"], steps=1, num_images=1)
    notes = pipe.check_prompts(["a red 圆", "a blue square."])  # known words: accepted; a full stop is no word
    assert len(notes) == 1 and "'圆' is not in the vocabulary of the CLIP text encoder" in notes[0]


def test_training_sample_grid_hook_draws_through_the_pipeline():
    model = mmgen.create_model("ddpm_unet_text_tiny", sample_steps=3).train()
    images = training_samples(model, 3, seed=0)
    assert images.shape == (3, 3, 16, 16) and model.training
    torch.testing.assert_close(images, training_samples(model, 3, seed=0))


def test_shipped_text_model_reads_its_captions():
    """The shipped shapes DDPM denoises worse with the batch's captions shuffled or empty: it
    uses the text (measured on 256 test images: 9.7x the loss shuffled, 1.44x empty), and with
    each relation reversed (1.24x; the previous model: 1.00x). Its frozen CoCa text states
    follow a relation change about as much as a colour change (1.31 and 1.43)."""
    from mmgen.data import build_dataset
    from mmgen.metrics.text_use import seeded_loss, text_use
    model = mmgen.load_pretrained("ddpm_shapes").eval()
    ds = build_dataset("shapes", "test", holdout="default")
    items = [ds[i] for i in range(96)]
    images = torch.stack([it["image"] for it in items])
    captions = [it["caption"] for it in items]
    r = text_use(model, images, captions)
    assert r["loss_shuffled"] > 4 * r["loss_true"] and r["loss_empty"] > 1.2 * r["loss_true"], r
    assert r["two_loss_reversed"] > 1.1 * r["two_loss_true"], r  # it reads the relation
    assert r["states_red_green"] > 0.5 and r["states_above_below"] > 0.5, r
    # the same draws for the same captions: the comparison above is between caption sets only
    torch.testing.assert_close(seeded_loss(model, images[:4], captions[:4]), seeded_loss(model, images[:4], captions[:4]))


def test_shipped_emoji_model_reads_its_captions():
    """ddpm_emoji denoises worse with the captions shuffled: on 64 train emoji 1.71x the loss
    (empty captions 1.12x), on 64 test emoji (names it never saw) 1.19x. Same noise and
    timesteps for every caption set."""
    from mmgen.data import build_dataset
    from mmgen.metrics.text_use import seeded_loss
    model = mmgen.load_pretrained("ddpm_emoji").eval()
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()
    ratio = {}
    for split in ("train", "test"):
        ds = build_dataset("emoji", split, image_size=32)
        items = [ds[i] for i in torch.linspace(0, len(ds) - 1, 64).long().tolist()]
        images, captions = torch.stack([it["image"] for it in items]), [it["caption"] for it in items]
        true = seeded_loss(model, images, captions).mean()
        ratio[split] = (float(seeded_loss(model, images, [captions[i] for i in perm]).mean() / true),
                        float(seeded_loss(model, images, [""] * 64).mean() / true))
    assert ratio["train"][0] > 1.4 and ratio["train"][1] > 1.05 and ratio["test"][0] > 1.1, ratio


def test_coca_text_states_keep_the_relation_apart():
    """The conditioning a denoiser reads for "... above ..." and "... below ..." differs clearly
    with the CoCa CLIP's text tower (max per-token change 1.26, about a colour change's 1.43),
    and not with the contrastive-only reranker's (0.083): the captioning loss is what made the
    relation reach the states (docs/clip.md)."""
    from mmgen.checkpoint import find_checkpoint
    from mmgen.metrics.text_use import PROBE, state_change
    change = {}
    for clip in ("clip_shapes_coca", "clip_shapes_reranker"):
        model = mmgen.create_model("ddpm_unet_shapes", text_encoder="clip",
                                   text_encoder_path=str(find_checkpoint(clip))).eval()
        change[clip] = (state_change(model, PROBE, PROBE.replace("above", "below")),
                        state_change(model, PROBE, PROBE.replace("red", "green")))
    relation, colour = change["clip_shapes_coca"]
    assert relation > 0.5 * colour and relation > 5 * change["clip_shapes_reranker"][0], change


def test_reverse_relation():
    from mmgen.data.shapes import reverse_relation
    assert reverse_relation("a red circle above a blue square") == "a red circle below a blue square"
    assert reverse_relation("a red circle left of a blue square") == "a red circle right of a blue square"
    assert reverse_relation("a red circle") == "a red circle"
    with pytest.raises(ValueError, match="shapes grammar"):
        reverse_relation("two red circles")
