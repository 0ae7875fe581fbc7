"""LoRA, freezing and prefix tuning on mmgen models."""
import pytest
import torch
from torch import nn

import mmgen
from mmgen.finetune import (LoRALinear, PrefixGPT, apply_lora, freeze, freeze_layers, load_adapter,
                            merge_and_unload, merge_lora, save_adapter, trainable_names, trainable_summary,
                            unmerge_lora)


def _randomise_b(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.lora_B.data = torch.randn(m.lora_B.shape, generator=g) * 0.1


@pytest.mark.parametrize("preset", ["gpt_tiny", "gpt_llama_tiny"])
def test_zero_b_equals_base_and_merge_equals_unmerged(preset):
    torch.manual_seed(0)
    model = mmgen.create_model(preset).eval()
    ids = model.example_batch(2)["input_ids"]
    base = model(ids)
    names = apply_lora(model, targets=["attn", "mlp"], rank=4, alpha=8)
    assert len(names) == 4 * model.config.depth
    torch.testing.assert_close(model(ids), base, rtol=0, atol=0)  # B = 0: exactly the base model
    _randomise_b(model)
    unmerged = model(ids)
    assert (unmerged - base).abs().max() > 1e-3  # the adapter does something
    merge_lora(model)
    torch.testing.assert_close(model(ids), unmerged, rtol=1e-5, atol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(model(ids), unmerged, rtol=1e-5, atol=1e-5)
    merge_and_unload(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(ids), unmerged, rtol=1e-5, atol=1e-5)


def test_only_adapters_train_and_gradients_reach_them():
    model = mmgen.create_model("gpt_tiny")
    apply_lora(model, targets=["*attn.qkv"], rank=2, dropout=0.1)
    names = trainable_names(model)
    assert names and all(n.endswith(("lora_A", "lora_B")) for n in names)
    loss, _ = model.loss(model.example_batch(2))
    loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    s = trainable_summary(model)
    assert s["trainable"] == 2 * 2 * (64 + 192) and 0 < s["share"] < 0.05


def test_lora_on_a_vision_model():
    model = mmgen.create_model("vit_tiny").eval()
    apply_lora(model, targets=["*blocks.0.attn.qkv", "*blocks.1.mlp.fc1"], rank=2)
    loss, _ = model.loss(model.example_batch(2))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_adapter_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = mmgen.create_model("gpt_tiny").eval()
    base_sd = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, targets=["all"], rank=4)
    _randomise_b(model)
    ids = model.example_batch(2)["input_ids"]
    want = model(ids)
    save_adapter(model, tmp_path / "ad")
    saved = (tmp_path / "ad" / "adapter.safetensors").stat().st_size
    assert saved < 0.2 * sum(v.numel() * 4 for v in base_sd.values())  # adapters only
    fresh = mmgen.create_model("gpt_tiny").eval()
    fresh.load_state_dict(base_sd)
    load_adapter(fresh, tmp_path / "ad")  # applies the saved config, then the weights
    torch.testing.assert_close(fresh(ids), want)
    other = mmgen.create_model("gpt_llama_tiny")
    with pytest.raises(ValueError, match="does not fit"):
        apply_lora(other, targets=["*attn.proj"], rank=4)
        load_adapter(other, tmp_path / "ad")


def test_bad_targets_name_the_linears():
    with pytest.raises(ValueError, match="no Linear matches.*attn.qkv"):
        apply_lora(mmgen.create_model("gpt_tiny"), targets=["*nope*"])
    with pytest.raises(ValueError, match="rank"):
        apply_lora(mmgen.create_model("gpt_tiny"), rank=0)


def test_freeze_patterns_and_layer_range():
    model = mmgen.create_model("gpt_char_shakespeare_cpu")
    frozen = freeze_layers(model, 0, 3)
    assert frozen and all(".blocks.3." not in n for n in frozen)
    assert all(n.startswith("transformer.blocks.3.") or not n.startswith("transformer.blocks")
               for n in trainable_names(model))
    freeze(model, ["tok_embed.*", "pos_embed.*"])
    assert "tok_embed.weight" not in trainable_names(model)
    with pytest.raises(ValueError, match="no parameter matches"):
        freeze(model, ["nothing.*"])
    with pytest.raises(ValueError, match="outside"):
        freeze_layers(model, 2, 9)


@pytest.mark.parametrize("preset", ["gpt_tiny", "gpt_llama_tiny"])
def test_prefix_tuning_trains_only_the_prefix_and_decodes_consistently(preset, tmp_path):
    torch.manual_seed(0)
    gpt = mmgen.create_model(preset).eval()
    pm = PrefixGPT(gpt, num_virtual=3)
    batch = gpt.example_batch(2)
    loss, _ = pm.loss(batch)
    loss.backward()
    assert [n for n, p in pm.named_parameters() if p.requires_grad] == ["prefix.keys", "prefix.values"]
    assert pm.prefix.keys.grad.abs().sum() > 0 and gpt.tok_embed.weight.grad is None
    # greedy decoding on the cache equals argmax of the full forward, step by step
    prompt = [5, 6, 7, 8]
    out = pm.generate(prompt, 6, temperature=0)[0]
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(6):
            seq.append(int(pm(torch.tensor([seq]))[0, -1].argmax()))
    assert out == seq[len(prompt):]
    # init from the model's own keys of a text: prefix == having that text in the context
    # (positions differ only for the prompt: check the prefix cache holds the text's keys)
    pm.init_from_text([1, 2, 3])
    pm.save_prefix(tmp_path)
    other = PrefixGPT(gpt, num_virtual=3)
    other.load_prefix(tmp_path)
    torch.testing.assert_close(other(torch.tensor([prompt])), pm(torch.tensor([prompt])))


@pytest.mark.parametrize("preset", ["gpt_tiny", "gpt_llama_tiny"])
def test_add_prefix_hook_equals_prefix_gpt(preset):
    """The generic hook (any mmgen Transformer, e.g. CLIP's text tower) computes what PrefixGPT does."""
    from mmgen.finetune import add_prefix, remove_prefix
    torch.manual_seed(0)
    gpt = mmgen.create_model(preset).eval()
    ids = gpt.example_batch(2)["input_ids"]
    base = gpt(ids)
    pm = PrefixGPT(gpt, num_virtual=4)
    want = pm(ids)
    prefix = add_prefix(gpt, "transformer", 4)
    prefix.load_state_dict(pm.prefix.state_dict())
    torch.testing.assert_close(gpt(ids), want)
    assert trainable_names(gpt) == ["prefix_tuning.keys", "prefix_tuning.values"]
    gpt.loss(gpt.example_batch(2))[0].backward()
    assert prefix.keys.grad is not None
    remove_prefix(gpt)
    torch.testing.assert_close(gpt(ids), base)
    with pytest.raises(ValueError, match="not an mmgen.layers.Transformer"):
        add_prefix(gpt, "lm_head")


def test_clip_lora_and_text_tower_prefix():
    from mmgen.finetune import add_prefix
    torch.manual_seed(0)
    clip = mmgen.create_model("clip_tiny").eval()
    batch = clip.example_batch(4)
    with torch.no_grad():
        img, txt = clip.encode_image(batch["image"]), clip.encode_text(batch["input_ids"])
    apply_lora(clip, targets=["text.*attn.qkv", "visual.*attn.qkv"], rank=4)
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_text(batch["input_ids"]), txt, rtol=0, atol=0)
        torch.testing.assert_close(clip.encode_image(batch["image"]), img, rtol=0, atol=0)
    merge_and_unload(clip)
    prefix = add_prefix(clip, "text.transformer", 4)
    with torch.no_grad():
        moved = (clip.encode_text(batch["input_ids"]) - txt).abs().max()
        torch.testing.assert_close(clip.encode_image(batch["image"]), img)  # the image tower is untouched
    assert moved > 0
    clip.loss(batch)[0].backward()
    assert trainable_names(clip) == ["prefix_tuning.keys", "prefix_tuning.values"]
    assert prefix.keys.grad.abs().sum() > 0
