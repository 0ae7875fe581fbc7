"""Every registered preset through the same checks (timm-style): forward, backward reaching
every parameter, finite values, and (for small models) a save/load round trip."""
import pytest
import torch

import mmgen

PRESETS = mmgen.list_models()
BIG = 30_000_000  # above this, skip the disk round trip (it only re-tests safetensors)


def test_every_family_has_a_tiny_preset():
    from mmgen.registry import _FAMILIES, get_preset
    mmgen.list_models()
    families = {get_preset(n).model_cls.model_type for n in PRESETS}
    for fam in families:
        assert any(n.endswith("_tiny") and get_preset(n).model_cls.model_type == fam for n in PRESETS), fam
    assert families, "no model family is registered"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_forward_backward(name):
    torch.manual_seed(0)
    model = mmgen.create_model(name).train()
    batch = model.example_batch(batch_size=2 if model.num_params() < BIG else 1)
    if not model.trainable:  # fitted in closed form: no loss to train, and it says so
        assert model.num_params() == 0, f"{name}: a model that is not trained must hold no parameters"
        with pytest.raises(TypeError, match="not trained by gradients"):
            model.loss(batch)
        assert all(torch.isfinite(torch.tensor(v)) for v in model.evaluate(batch).values())
        return
    loss, logs = model.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss), f"{name}: loss {loss}"
    # floats, or 0-d tensors (GPT logs its loss as a tensor: no host sync, no graph break under compile)
    assert all(isinstance(v, (int, float)) or (torch.is_tensor(v) and v.ndim == 0 and not v.requires_grad)
               for v in logs.values()), f"{name}: logs must be floats or detached scalars {logs}"
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient reaches {missing[:10]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad[:10]}"


@pytest.mark.parametrize("name", [n for n in PRESETS if n.endswith("_tiny")])
def test_preset_save_load_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = mmgen.create_model(name).eval()
    batch = model.example_batch(batch_size=2)
    def value(m):  # the loss, or for a fitted model its evaluation
        return m.loss(batch)[0] if m.trainable else torch.tensor(sorted(m.evaluate(batch).values()))

    torch.manual_seed(1)
    with torch.no_grad():
        before = value(model)
    model.save_pretrained(tmp_path / name)
    loaded = mmgen.load_pretrained(tmp_path / name)
    assert type(loaded) is type(model) and loaded.config == model.config
    torch.manual_seed(1)
    with torch.no_grad():
        after = value(loaded)
    torch.testing.assert_close(after, before)
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:  # tensors; a module's extra state (get_extra_state: JSON data) round-trips as equal data
        assert torch.equal(sd[k], sd2[k]) if isinstance(sd[k], torch.Tensor) else sd[k] == sd2[k], k
