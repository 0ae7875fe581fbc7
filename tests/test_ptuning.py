"""P-tuning: virtual input tokens from a prompt encoder on a frozen GPT / CLIP text tower."""
import pytest
import torch

import mmgen
from mmgen.finetune import PromptEncoder, PTuningGPT, add_ptuning, load_prompt, remove_ptuning, trainable_summary


@pytest.mark.parametrize("encoder", ["mlp", "lstm", "none"])
def test_prompt_encoder_starts_at_its_input(encoder):
    enc = PromptEncoder(5, 16, encoder=encoder, hidden=8)
    torch.testing.assert_close(enc(), enc.embedding, rtol=0, atol=0)  # zero-initialised last layer
    with torch.no_grad():
        enc.embedding.normal_()
    assert enc().shape == (5, 16)


@pytest.mark.parametrize("preset,encoder", [("gpt_tiny", "mlp"), ("gpt_llama_tiny", "lstm")])
def test_ptuning_trains_only_the_prompt(preset, encoder):
    torch.manual_seed(0)
    gpt = mmgen.create_model(preset)
    before = {k: v.clone() for k, v in gpt.state_dict().items()}
    pm = PTuningGPT(gpt, 4, encoder=encoder)
    names = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("prompt.") for n in names)
    assert trainable_summary(pm)["trainable"] == sum(p.numel() for p in pm.prompt.parameters())
    prompt0 = pm.prompt().detach().clone()
    batch = gpt.example_batch(4)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    first = pm.loss(batch)[0].item()
    for _ in range(15):
        loss, _ = pm.loss(batch)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in gpt.parameters())
        opt.step()
    assert pm.loss(batch)[0].item() < first - 0.01  # the prompt alone lowers the loss
    assert (pm.prompt() - prompt0).abs().max() > 1e-3
    for k, v in gpt.state_dict().items():  # the base is bit-for-bit untouched
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("preset", ["gpt_tiny", "gpt_llama_tiny"])
def test_ptuning_prompt_changes_outputs_and_decoding_matches_the_forward(preset):
    torch.manual_seed(0)
    gpt = mmgen.create_model(preset).eval()
    pm = PTuningGPT(gpt, 3, encoder="none").eval()
    ids = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        pm.prompt.embedding.normal_()
        assert (pm(ids) - gpt(ids)).abs().max() > 1e-3  # the virtual tokens are seen
        out = pm.generate(ids, 6, temperature=0.0)
        full = pm(torch.cat([ids, torch.tensor(out)[:, :-1]], 1))  # the full forward over the decoded text
    # greedy decoding on the cache equals the argmax of the full forward at every step
    assert torch.equal(full[:, 6:].argmax(-1), torch.tensor(out))
    # causal: a later token never changes an earlier logit
    ids2 = ids.clone()
    ids2[:, -1] = (ids2[:, -1] + 1) % 256
    with torch.no_grad():
        torch.testing.assert_close(pm(ids2)[:, :-1], pm(ids)[:, :-1])


@pytest.mark.parametrize("with_encoder", [False, True])
def test_save_load_prompt_round_trip(tmp_path, with_encoder):
    torch.manual_seed(0)
    gpt = mmgen.create_model("gpt_tiny").eval()
    pm = PTuningGPT(gpt, 4, encoder="mlp").eval()
    with torch.no_grad():
        for p in pm.prompt.parameters():
            p.normal_(std=0.1)
    ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        want = pm(ids)
    pm.save_prompt(tmp_path, with_encoder=with_encoder)
    size = (tmp_path / "prompt.safetensors").stat().st_size
    table_bytes = 4 * 64 * 4
    assert (size > 10 * table_bytes) == with_encoder and size >= table_bytes
    fresh = PTuningGPT(mmgen.create_model("gpt_tiny").eval(), 4, encoder="mlp").eval()
    fresh.gpt.load_state_dict(gpt.state_dict())
    with torch.no_grad():
        assert (fresh(ids) - want).abs().max() > 1e-4  # a different (fresh) prompt
    fresh.load_prompt(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids), want, rtol=1e-5, atol=1e-5)
    assert all(p.requires_grad for p in fresh.prompt.parameters())
    with pytest.raises(ValueError, match="virtual tokens"):
        PTuningGPT(mmgen.create_model("gpt_tiny"), 5).load_prompt(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_prompt(tmp_path / "nothing")


@pytest.mark.parametrize("preset", ["gpt_tiny", "gpt_llama_tiny"])
def test_add_ptuning_hook_equals_ptuning_gpt(preset):
    torch.manual_seed(0)
    gpt = mmgen.create_model(preset).eval()
    pm = PTuningGPT(gpt, 3, encoder="mlp").eval()
    with torch.no_grad():
        for p in pm.prompt.parameters():
            p.normal_(std=0.1)
    ids = torch.randint(0, 256, (2, 8))
    with torch.no_grad():
        want = pm(ids)
        base = gpt(ids)
    other = mmgen.create_model(preset).eval()
    other.load_state_dict(gpt.state_dict())
    enc = add_ptuning(other, "transformer", 3, encoder="mlp")
    enc.load_state_dict(pm.prompt.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other(ids), want, rtol=1e-5, atol=1e-5)
    remove_ptuning(other)
    with torch.no_grad():
        torch.testing.assert_close(other(ids), base, rtol=0, atol=0)


def test_add_ptuning_on_the_clip_text_tower():
    torch.manual_seed(0)
    clip = mmgen.create_model("clip_tiny").eval()
    batch = clip.example_batch(3)
    with torch.no_grad():
        base = clip.encode_text(batch["input_ids"])
    enc = add_ptuning(clip, "text.transformer", 4, encoder="lstm", hidden=16)
    assert [n for n, p in clip.named_parameters() if p.requires_grad] == \
        [f"ptuning.{n}" for n, _ in enc.named_parameters()]
    with torch.no_grad():
        same = clip.encode_text(batch["input_ids"])
    torch.testing.assert_close(same.shape, base.shape)
    with torch.no_grad():
        enc.embedding.normal_()
        moved = clip.encode_text(batch["input_ids"])
    assert (moved - base).abs().max() > 1e-3
    loss, _ = clip.loss(batch)
    loss.backward()
    assert enc.embedding.grad is not None and enc.embedding.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in clip.named_parameters() if not n.startswith("ptuning."))
    with pytest.raises(ValueError, match="not an mmgen.layers.Transformer"):
        add_ptuning(clip, "text", 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="encoder"):
        PromptEncoder(3, 8, encoder="gru")
    with pytest.raises(ValueError, match="num_virtual"):
        PromptEncoder(0, 8)
