"""Weight-only int8 / int4 quantisation and QLoRA-style adapters on a quantised base."""
import pytest
import torch
from torch import nn

import mmgen
from mmgen.finetune import QuantLinear, apply_lora, model_bytes, quantize_model, trainable_names
from mmgen.finetune.quant import dequantize_int4, quantize_int4, quantize_int8


@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_linear_error_bounds(bits):
    torch.manual_seed(0)
    lin = nn.Linear(128, 48)
    q = QuantLinear.from_linear(lin, bits=bits, group_size=32)
    err = (q.dequantize() - lin.weight).abs()
    assert (err <= q.error_bound() + 1e-7).all()  # half a step per element
    x = torch.randn(5, 7, 128)
    with torch.no_grad():
        y, yq = lin(x), q(x)
        # |x (W - Wq)^T| <= |x| @ bound^T, row by row
        bound = x.abs() @ q.error_bound().t()
        assert ((y - yq).abs() <= bound + 1e-4).all()
    rel = ((y - yq).norm() / y.norm()).item()
    assert rel < (0.01 if bits == 8 else 0.1)


def test_int8_kernel_matches_dequantised_path():
    torch.manual_seed(0)
    q = QuantLinear.from_linear(nn.Linear(64, 32), bits=8)
    x = torch.randn(3, 64)
    with torch.no_grad():
        fast = q(x)
        q.use_kernel = False
        slow = q(x)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


def test_int4_packing_roundtrip():
    w = torch.randn(8, 64)
    packed, scale = quantize_int4(w, 16)
    assert packed.dtype == torch.uint8 and packed.shape == (8, 32) and scale.shape == (8, 4)
    deq = dequantize_int4(packed, scale, 16)
    q_direct = torch.round(w.reshape(8, 4, 16) / scale[..., None]).clamp(-7, 7)
    torch.testing.assert_close(deq, (q_direct * scale[..., None]).reshape(8, 64))
    with pytest.raises(ValueError, match="group_size"):
        quantize_int4(torch.randn(4, 30), 16)
    i8, s8 = quantize_int8(w)
    assert i8.dtype == torch.int8 and i8.abs().max() == 127


@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_model_close_and_smaller(bits):
    torch.manual_seed(0)
    model = mmgen.create_model("gpt_char_shakespeare_cpu").eval()
    ids = model.example_batch(2)["input_ids"]
    with torch.no_grad():
        ref = model(ids)
    before = model_bytes(model)
    names = quantize_model(model, bits, group_size=32)
    assert "lm_head" not in names  # tied to the embedding: kept in float
    with torch.no_grad():
        out = model(ids)
    assert ((out - ref).norm() / ref.norm()) < (0.02 if bits == 8 else 0.15)
    assert model_bytes(model) < before * (0.5 if bits == 8 else 0.4)
    assert len(model.generate([1, 2, 3], 4, temperature=0)[0]) == 4  # the KV cache reads .weight


def test_qlora_trains_adapters_on_frozen_quantised_base():
    torch.manual_seed(0)
    model = mmgen.create_model("gpt_tiny")
    quantize_model(model, 4, group_size=32)
    apply_lora(model, targets=["attn", "mlp"], rank=4)
    assert all(n.endswith(("lora_A", "lora_B")) for n in trainable_names(model))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = model.example_batch(4)
    first = model.loss(batch)[0].item()
    for _ in range(30):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5
    with pytest.raises(ValueError, match="quantised"):
        from mmgen.finetune import merge_lora
        merge_lora(model)
