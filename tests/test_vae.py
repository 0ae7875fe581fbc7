"""Gaussian VAE: ELBO terms by hand, KL of N(0, I) is 0, discretised likelihoods normalise,
KL schedules, latent shapes, sampling/interpolation, overfit, save/load, errors."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import mmgen
from mmgen.models.vae import VAE, DiagonalGaussian, discretized_log_likelihood, gaussian_kl, kl_beta


def test_kl_of_standard_normal_is_zero():
    mean, logvar = torch.zeros(3, 4, 2, 2), torch.zeros(3, 4, 2, 2)
    assert torch.equal(gaussian_kl(mean, logvar), torch.zeros(3))
    assert torch.equal(DiagonalGaussian(mean, logvar).kl(), torch.zeros(3))


def test_kl_matches_hand_and_torch_distributions():
    mean = torch.tensor([[0.5, -1.0]])
    logvar = torch.tensor([[math.log(0.25), math.log(2.0)]])
    hand = 0.5 * ((0.25 + 0.25 - 1 - math.log(0.25)) + (1.0 + 2.0 - 1 - math.log(2.0)))
    assert gaussian_kl(mean, logvar).item() == pytest.approx(hand, rel=1e-6)
    ref = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum()
    assert gaussian_kl(mean, logvar).item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["gaussian", "logistic"])
def test_discretized_likelihood_is_a_distribution_over_256_levels(kind):
    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1  # every 8-bit value in [-1, 1]
    for mean, log_scale in ((0.1, -2.0), (-0.97, -5.0), (0.5, 0.5), (1.3, -3.0)):
        lp = discretized_log_likelihood(levels, torch.tensor(mean), torch.tensor(log_scale), kind)
        assert lp.logsumexp(0).exp().item() == pytest.approx(1.0, abs=1e-4)


def test_discretized_gaussian_matches_hand_cdf():
    # float64 reference with plain CDF differences
    x = torch.tensor([-1.0, -0.2, 0.0, 0.6, 1.0])
    x = ((x + 1) * 127.5).round() / 127.5 - 1
    mean = torch.tensor([-0.9, -0.1, 0.05, 0.7, 0.8])
    s = 0.1
    n = Normal(mean.double(), s)
    upper = n.cdf(x.double() + 1 / 255)
    lower = n.cdf(x.double() - 1 / 255)
    ref = torch.stack([upper[0].log(), *(upper[1:4] - lower[1:4]).log(), (1 - lower[4]).log()])
    got = discretized_log_likelihood(x, mean, torch.tensor(math.log(s)), "gaussian")
    assert torch.allclose(got.double(), ref, atol=1e-4)
    # far in the tail the log-space form stays finite and accurate (naive float32 gives -inf)
    far = discretized_log_likelihood(torch.tensor([0.0]), torch.tensor([0.9]), torch.tensor(math.log(0.05)))
    assert torch.isfinite(far).all() and far.item() < -150


def test_elbo_terms_against_hand_computation():
    model = mmgen.create_model("vae_tiny", log_scale_init=-1.5)
    x = model.example_batch(2)["image"]
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(2, *model.latent_shape, generator=g), torch.randn(2, *model.latent_shape, generator=g)
    recon = x + 0.1 * torch.randn(2, 3, 16, 16, generator=g)
    terms = model.elbo_terms(x, recon, DiagonalGaussian(mean, logvar))
    # by hand: Gaussian bin masses (float64 CDFs), sum of per-dim KLs
    xq = ((x.double() + 1) * 127.5).round() / 127.5 - 1
    n = Normal(recon.double(), math.exp(-1.5))
    upper, lower = n.cdf(xq + 1 / 255), n.cdf(xq - 1 / 255)
    mass = torch.where(xq < -1 + 1e-6, upper, torch.where(xq > 1 - 1e-6, 1 - lower, upper - lower))
    nll = -mass.log().flatten(1).sum(1)
    kl = 0.5 * (mean.double() ** 2 + logvar.double().exp() - 1 - logvar.double()).flatten(1).sum(1)
    assert torch.allclose(terms["nll"].double(), nll, rtol=1e-4)
    assert torch.allclose(terms["kl"].double(), kl, rtol=1e-5)
    assert torch.allclose(terms["bpd"].double(), (nll + kl) / (3 * 16 * 16 * math.log(2)), rtol=1e-4)


def test_loss_is_nll_plus_beta_kl_per_dim():
    model = mmgen.create_model("vae_tiny", kl_schedule="constant", beta=0.5).train()
    x = model.example_batch(2)
    torch.manual_seed(1)
    recon, post = model(x["image"])
    terms = model.elbo_terms(x["image"], recon, post)
    hand = (terms["nll"] + 0.5 * terms["kl"]).mean() / (3 * 16 * 16)
    torch.manual_seed(1)
    loss, logs = model.loss(x)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    assert logs["beta"] == 0.5 and int(model.step) == 1


def test_kl_schedules():
    cfg = mmgen.registry.preset_config("vae_tiny", kl_schedule="linear", kl_warmup_steps=100, beta=2.0)
    assert [kl_beta(s, cfg) for s in (0, 50, 100, 500)] == [0.0, 1.0, 2.0, 2.0]
    cfg = mmgen.registry.preset_config("vae_tiny", kl_schedule="cyclical", kl_warmup_steps=50,
                                       kl_cycle_steps=100, kl_num_cycles=2, beta=1.0)
    assert [kl_beta(s, cfg) for s in (0, 25, 50, 99, 100, 125, 200, 250)] == [0, 0.5, 1, 1, 0, 0.5, 1, 1]
    cfg = mmgen.registry.preset_config("vae_tiny", kl_schedule="constant", beta=0.3)
    assert kl_beta(0, cfg) == 0.3


def test_every_parameter_gets_a_gradient():
    model = mmgen.create_model("vae_tiny").train()
    model.step.fill_(100)  # past warm-up so the KL term is on
    loss, logs = model.loss(model.example_batch(2))
    loss.backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    assert set(logs) >= {"recon", "kl", "beta", "bpd", "psnr"}


def test_vae_32_latent_shapes_sampling_interpolation():
    model = mmgen.create_model("vae_32").eval()
    assert model.latent_shape == (4, 8, 8)
    x = model.example_batch(2)["image"]
    z = model.encode_latents(x)
    assert z.shape == (2, 4, 8, 8)
    assert model.decode_latents(z).shape == (2, 3, 32, 32)
    s1, s2 = model.sample(3, seed=7), model.sample(3, seed=7)
    assert s1.shape == (3, 3, 32, 32) and torch.equal(s1, s2) and s1.abs().max() <= 1
    assert torch.equal(model.sample_images(3, seed=7), s1)
    path = model.interpolate(x[:1], x[1:], steps=5)
    assert path.shape == (1, 5, 3, 32, 32)
    rec = model.reconstruct(x)
    assert torch.allclose(path[0, 0], rec[0], atol=1e-4) and torch.allclose(path[0, -1], rec[1], atol=1e-4)
    assert model.interpolate(x[:1], x[1:], steps=3, mode="lerp").shape == (1, 3, 3, 32, 32)


def test_overfit_one_batch():
    torch.manual_seed(0)
    model = mmgen.create_model("vae_tiny", kl_schedule="constant", beta=0.1)
    batch = model.example_batch(4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = model.evaluate(batch)
    model.train()
    for _ in range(150):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = model.eval().evaluate(batch)
    assert end["psnr"] > 24 and end["psnr"] > start["psnr"] + 8, (start, end)
    assert end["bpd"] < start["bpd"] - 2, (start, end)


def test_save_load_round_trip(tmp_path):
    model = mmgen.create_model("vae_tiny").train()
    model.loss(model.example_batch(2))
    model.save_pretrained(tmp_path / "vae")
    loaded = mmgen.load_pretrained(tmp_path / "vae")
    assert isinstance(loaded, VAE) and int(loaded.step) == 1
    x = model.example_batch(2)["image"]
    assert torch.equal(model.eval().encode_latents(x), loaded.encode_latents(x))
    assert torch.equal(model.sample(2, seed=0), loaded.sample(2, seed=0))


def test_clear_errors():
    model = mmgen.create_model("vae_tiny")
    with pytest.raises(ValueError, match="expected 3 image channels, got 1"):
        model.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"expected latents \(B, 2, 4, 4\)"):
        model.decode(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="likelihood must be one of"):
        mmgen.create_model("vae_tiny", likelihood="bernoulli")
    with pytest.raises(ValueError, match="kl_warmup_steps <= kl_cycle_steps"):
        mmgen.create_model("vae_tiny", kl_schedule="cyclical", kl_warmup_steps=500, kl_cycle_steps=100)
    with pytest.raises(ValueError, match="'image' entry"):
        model.loss({"img": torch.zeros(1, 3, 16, 16)})
