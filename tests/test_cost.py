"""The cost model against exact parameter counts and torch's FlopCounterMode."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mmgen
from mmgen.cost import (activation_bytes, build_meta, count_params, estimate, gpt_param_formula,
                        transformer_spec)

MATH = {"attn_impl": "math"}  # SDPA's CPU kernel is invisible to FlopCounterMode; the math path is not


@pytest.mark.parametrize("preset", [p for p in mmgen.list_models("gpt*")])
def test_parameter_counts_exact(preset):
    model = build_meta(preset)
    n = count_params(model)["total"]
    assert n == model.num_params() == gpt_param_formula(model.config)


def test_gpt2_small_has_124m_parameters():
    assert estimate("gpt2_small")["params"]["total"] == 124_439_808  # HF GPT-2 small, tied head


def _counted(model, batch, backward=True):
    with FlopCounterMode(display=False) as fc:
        loss, _ = model.loss(batch)
        if backward:
            loss.backward()
    return fc.get_total_flops()


@pytest.mark.parametrize("preset,T", [("gpt_tiny", 64), ("gpt_llama_tiny", 48), ("gpt_char_shakespeare_cpu", 128)])
def test_training_flops_within_10_percent(preset, T):
    model = mmgen.create_model(preset, **MATH)
    ids = torch.randint(0, model.config.vocab_size, (2, T + 1))
    counted = _counted(model, {"input_ids": ids[:, :-1], "labels": ids[:, 1:]})
    r = estimate(preset, batch=2, seq_len=T, overrides=MATH)
    assert r["flops"]["method"] == "analytic"
    assert r["flops"]["train_step"] == pytest.approx(counted, rel=0.10)
    fwd = _counted(model, {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}, backward=False)
    assert r["flops"]["forward"] == pytest.approx(fwd, rel=0.02)


@pytest.mark.parametrize("preset", ["gpt_tiny", "gpt_llama_tiny"])
def test_decode_flops_per_token_within_10_percent(preset):
    model = mmgen.create_model(preset, **MATH).eval()
    L = 40
    ids = torch.randint(0, model.config.vocab_size, (1, L))
    cache = model.make_cache(1, L)
    with torch.no_grad():
        model(ids[:, :-1], cache=cache)
        with FlopCounterMode(display=False) as fc:
            model(ids[:, -1:], cache=cache, start=L - 1)
    spec = transformer_spec(build_meta(preset, **MATH), L)
    from mmgen.cost import decode_flops_per_token
    assert decode_flops_per_token(spec, L) == pytest.approx(fc.get_total_flops(), rel=0.10)


def test_vit_flops_within_10_percent():
    model = mmgen.create_model("vit_tiny", **{"attn_impl": "math"})
    counted = _counted(model, model.example_batch(2))
    r = estimate("vit_tiny", batch=2, overrides={"attn_impl": "math"})
    assert r["flops"]["train_step"] == pytest.approx(counted, rel=0.10)


def test_other_families_fall_back_to_the_counter():
    r = estimate("vae_tiny", batch=2)
    assert r["flops"]["method"].startswith("counted") and r["flops"]["forward"] > 0


def test_activation_memory_close_to_saved_tensors():
    """The activation model against the bytes autograd actually saves (unique storages)."""
    model = mmgen.create_model("gpt_char_shakespeare_cpu")
    B, T = 4, 128
    ids = torch.randint(0, 259, (B, T + 1))
    from mmgen.cost import saved_tensor_bytes
    measured = saved_tensor_bytes(lambda: model.loss({"input_ids": ids[:, :-1], "labels": ids[:, 1:]}),
                                  list(model.parameters()))
    spec = transformer_spec(build_meta("gpt_char_shakespeare_cpu"), T)
    modelled = activation_bytes(spec, B, "fp32")
    assert modelled == pytest.approx(measured, rel=0.10), (modelled, measured)
    assert activation_bytes(spec, B, "fp32", checkpointing=True) < modelled


def test_memory_kv_comm_and_mfu_formulas():
    r = estimate("gpt2_small", batch=8, seq_len=1024, dtype="bf16", devices=8, peak_flops=1e15, tokens_per_s=1e5)
    P = 124_439_808
    assert r["memory"]["weights"] == 2 * P and r["memory"]["optimizer"] == 12 * P
    assert r["memory"]["kv_cache"] == 2 * 12 * 8 * 1024 * 768 * 2
    assert r["comm"]["ddp"] == pytest.approx(2 * 7 / 8 * 2 * P)
    assert r["comm"]["fsdp"] == pytest.approx(3 * 7 / 8 * 2 * P)
    assert r["mfu"]["mfu"] == pytest.approx(1e5 * r["flops"]["train_per_token"] / 8e15)
    # PaLM's 6N + 12 L H Q T rule with N = non-embedding params + the head
    n = P - 50257 * 768 - 1024 * 768 + 50257 * 768
    palm = 6 * n + 12 * 12 * 1024 * 768
    assert r["flops"]["train_per_token"] == pytest.approx(palm, rel=0.02)
    with pytest.raises(ValueError, match="dtype"):
        estimate("gpt_tiny", dtype="fp7")
    with pytest.raises(ValueError, match="context"):
        estimate("gpt_tiny", seq_len=1000)


def test_cli(capsys):
    from mmgen.cli import main
    assert main(["cost", "gpt_tiny", "--batch", "2", "--devices", "4"]) == 0
    out = capsys.readouterr().out
    assert "120,768" in out and "fsdp" in out
