"""VQ-VAE / dVAE tokenizer: EMA codebook step by hand, dead-code restart, straight-through
gradient, token API shapes/determinism, Gumbel schedules, overfit, save/load, errors."""
import math

import pytest
import torch

import mmgen
from mmgen.models.vq import EMAVectorQuantizer, VQModel, codebook_stats


def test_ema_update_matches_hand_step():
    q = EMAVectorQuantizer(3, 2, decay=0.9, eps=0.1, dead_code_threshold=0.0)
    q.embed.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    q.embed_avg.copy_(torch.tensor([[0.0, 0.0], [2.0, 2.0], [5.0, 5.0]]))
    q.cluster_size.copy_(torch.tensor([1.0, 2.0, 1.0]))
    q.initted.fill_(True)
    # z in (B=1, D=2, h=1, w=3): vectors (0.2, -0.1) -> code 0, (1.2, 0.8) -> 1, (0.9, 1.1) -> 1
    z = torch.tensor([[0.2, -0.1], [1.2, 0.8], [0.9, 1.1]]).t().reshape(1, 2, 1, 3)
    z_q, tokens, commit, logs = q(z, update=True)
    assert tokens.tolist() == [[[0, 1, 1]]]
    # the quantised output uses the codebook *before* the update
    assert torch.allclose(z_q, torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]).t().reshape(1, 2, 1, 3))
    # hand step: N = 0.9 N + 0.1 counts, m = 0.9 m + 0.1 sums
    N = [0.9 * 1 + 0.1 * 1, 0.9 * 2 + 0.1 * 2, 0.9 * 1 + 0.1 * 0]  # [1.0, 2.0, 0.9]
    m = [[0.9 * 0 + 0.1 * 0.2, 0.9 * 0 + 0.1 * -0.1],
         [0.9 * 2 + 0.1 * 2.1, 0.9 * 2 + 0.1 * 1.9],
         [0.9 * 5, 0.9 * 5]]
    n = sum(N)
    Ns = [(Nk + 0.1) / (n + 3 * 0.1) * n for Nk in N]
    expect = torch.tensor([[mk / Nk for mk in row] for row, Nk in zip(m, Ns)])
    assert torch.allclose(q.cluster_size, torch.tensor(N))
    assert torch.allclose(q.embed_avg, torch.tensor(m))
    assert torch.allclose(q.embed, expect, atol=1e-6)
    # commitment: mean squared distance to the (old) codes
    hand = ((0.2 ** 2 + 0.1 ** 2) + (0.2 ** 2 + 0.2 ** 2) + (0.1 ** 2 + 0.1 ** 2)) / 6
    assert math.isclose(commit.item(), hand, rel_tol=1e-5)
    assert logs["usage"] == pytest.approx(2 / 3)


def test_dead_codes_are_restarted_from_encoder_outputs():
    q = EMAVectorQuantizer(4, 2, decay=0.99, dead_code_threshold=1.0)
    q.embed.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0], [-100.0, 100.0]]))
    q.embed_avg.copy_(q.embed * 5)
    q.cluster_size.fill_(5.0)
    q.cluster_size[2:] = 0.5  # codes 2 and 3 are dead (and far from all data)
    q.initted.fill_(True)
    z = torch.randn(2, 2, 4, 4) * 0.1 + 0.5
    q(z, update=True)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    for k in (2, 3):  # restarted onto an encoder output
        assert (flat - q.embed[k]).abs().sum(1).min() < 1e-6
        assert q.cluster_size[k] == 1.0
    assert q.last_restarts == 2
    assert q.embed[:2].abs().max() < 2  # live codes only moved by the EMA


def test_first_training_batch_initialises_codebook_from_data():
    q = EMAVectorQuantizer(8, 3, dead_code_threshold=0.0)
    z = torch.randn(2, 3, 4, 4) + 10.0
    q(z, update=True)
    assert bool(q.initted) and q.embed.mean() > 5  # codes moved onto the data
    q2 = EMAVectorQuantizer(8, 3)
    before = q2.embed.clone()
    q2.eval()
    q2(z)  # no update outside training
    assert torch.equal(q2.embed, before) and not bool(q2.initted)


def test_straight_through_gradient_reaches_encoder():
    model = mmgen.create_model("vq_tiny").train()
    x = model.example_batch(4)["image"]
    recon, tokens, commit, _ = model(x)
    torch.nn.functional.mse_loss(recon, x).backward()  # reconstruction only, no commitment term
    g = model.encoder.conv_in.weight.grad
    assert g is not None and g.abs().sum() > 0


@pytest.mark.parametrize("name", ["vq_tiny", "dvae_tiny"])
def test_loss_backward_every_parameter_and_logs(name):
    model = mmgen.create_model(name).train()
    loss, logs = model.loss(model.example_batch(2))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert torch.isfinite(loss)
    for key in ("recon", "usage", "perplexity", "psnr"):
        assert key in logs
    assert ("commit" if name.startswith("vq") else "kl") in logs
    assert 0 < logs["usage"] <= 1 and 1 <= logs["perplexity"] <= model.codebook_size + 1e-3
    assert int(model.step) == 1


def test_vq_32_tokenizer_shapes_and_determinism():
    model = mmgen.create_model("vq_32")
    assert model.codebook_size == 512 and model.token_shape == (8, 8)
    x = model.example_batch(2)["image"]
    model.train()
    model.loss(x)  # initialise the codebook from data
    state = {k: v.clone() for k, v in model.state_dict().items()}
    t1 = model.encode_tokens(x)
    model.eval()
    t2 = model.encode_tokens(x)
    assert t1.dtype == torch.long and t1.shape == (2, 8, 8) and torch.equal(t1, t2)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # no codebook update
    img = model.decode_tokens(t1)
    assert img.shape == (2, 3, 32, 32) and img.min() >= -1 and img.max() <= 1
    assert torch.equal(img, model.decode_tokens(t1.flatten(1)))  # (B, h*w) raster order accepted
    assert torch.equal(img, model.decode_tokens(t1))


def test_dvae_schedules_and_tokens():
    model = mmgen.create_model("dvae_tiny", gumbel_tau_start=1.0, gumbel_tau_end=0.0625,
                               gumbel_anneal_steps=100, gumbel_kl_weight=0.01, gumbel_kl_warmup=10)
    assert model.tau() == pytest.approx(1.0) and model.kl_weight() == 0.0
    model.step.fill_(50)
    assert model.tau() == pytest.approx(0.25)  # geometric midpoint of 1 and 1/16
    assert model.kl_weight() == pytest.approx(0.01)
    model.step.fill_(1000)
    assert model.tau() == pytest.approx(0.0625)
    x = model.example_batch(3)["image"]
    t = model.encode_tokens(x)
    assert t.shape == (3, 4, 4) and torch.equal(t, model.encode_tokens(x))
    assert model.decode_tokens(t).shape == (3, 3, 16, 16)
    # KL(q || uniform) of uniform logits is 0
    _, _, kl, _ = model.quantizer(torch.zeros(1, 32, 2, 2), tau=1.0, sample=True)
    assert abs(kl.item()) < 1e-6


@pytest.mark.parametrize("name,target", [("vq_tiny", 26.0), ("dvae_tiny", 20.0)])
def test_overfit_one_batch(name, target):
    torch.manual_seed(0)
    model = mmgen.create_model(name, dead_code_threshold=0.0) if name == "vq_tiny" else mmgen.create_model(name)
    batch = model.example_batch(4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    start = model.evaluate(batch)["psnr"]
    for _ in range(150):
        loss, logs = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    end = model.evaluate(batch)["psnr"]
    assert end > target and end > start + 8, (start, end)


def test_save_load_round_trip(tmp_path):
    model = mmgen.create_model("vq_tiny").train()
    x = model.example_batch(2)["image"]
    model.loss(x)
    model.save_pretrained(tmp_path / "vq")
    loaded = mmgen.load_pretrained(tmp_path / "vq")
    assert isinstance(loaded, VQModel) and int(loaded.step) == 1
    model.eval()
    assert torch.equal(model.encode_tokens(x), loaded.encode_tokens(x))
    assert torch.allclose(model.reconstruct(x), loaded.reconstruct(x))


def test_sample_images_and_evaluate():
    model = mmgen.create_model("vq_tiny")
    s = model.sample_images(4, seed=0)
    assert s.shape == (4, 3, 16, 16) and torch.equal(s, model.sample_images(4, seed=0))
    model.train()
    model.loss(model.example_batch(4))
    s = model.sample_images(4)
    assert s.shape == (4, 3, 16, 16)
    logs = model.evaluate(model.example_batch(4))
    assert set(logs) >= {"psnr", "mse", "usage", "perplexity"}


def test_codebook_stats():
    s = codebook_stats(torch.tensor([0, 1, 2, 3]), 8)
    assert s["usage"] == 0.5 and s["perplexity"] == pytest.approx(4.0)


def test_clear_errors():
    model = mmgen.create_model("vq_tiny")
    with pytest.raises(ValueError, match="expected 3 image channels, got 1"):
        model.encode_tokens(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="expected 16x16 images, got 32x32"):
        model.encode_tokens(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 32\)"):
        model.decode_tokens(torch.full((1, 4, 4), 40))
    with pytest.raises(ValueError, match=r"expected tokens \(B, 4, 4\)"):
        model.decode_tokens(torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        model.decode_tokens(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="quantizer must be one of"):
        mmgen.create_model("vq_tiny", quantizer="fsq")
    with pytest.raises(ValueError, match="must be divisible by patch"):
        mmgen.create_model("vq_tiny", img_size=18)
