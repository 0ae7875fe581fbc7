"""GPT: cached decode equals the full forward, ragged batches decode like single prompts,
HF GPT-2 parity on random weights, config checks, overflow handling, save/load, overfit."""
import math

import pytest
import torch

import mmgen
from mmgen.models.convert import gpt_from_hf_gpt2
from mmgen.models.gpt import GPT, GPTConfig

VARIANTS = {
    "learned_mha": {},
    "rope_gqa_rms_swiglu": {"pos": "rope", "num_kv_heads": 2, "norm": "rmsnorm", "mlp": "swiglu"},
    "rope_mqa_window": {"pos": "rope", "num_kv_heads": 1, "window": 5},
    "learned_post_norm_untied": {"norm_place": "post", "tie_weights": False},
    "sandwich_gelu_tanh_qknorm": {"norm_place": "sandwich", "mlp": "gelu_tanh", "qk_norm": True},
}


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return mmgen.create_model("gpt_tiny", **overrides).eval()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_cached_decode_equals_full_forward(name):
    model = tiny(**VARIANTS[name])
    ids = torch.randint(0, 259, (2, 12))
    with torch.no_grad():
        full = model(ids)  # (2, 12, V)
        cache = model.make_cache(2, 12)
        steps = [model(ids[:, :4], cache=cache)]  # prefill 4, then one token at a time
        for t in range(4, 12):
            steps.append(model(ids[:, t:t + 1], cache=cache, start=t))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["learned_mha", "rope_gqa_rms_swiglu", "rope_mqa_window"])
def test_left_padded_rows_match_single_prompts(name):
    """A ragged batch is left-padded with per-row positions and a key padding mask: every
    row's logits and greedy continuation equal those of the prompt alone."""
    model = tiny(**VARIANTS[name])
    prompts = [[5, 6, 7, 8, 9, 10, 11], [3], [40, 41, 42]]
    batch = model.generate(prompts, 8, temperature=0)
    for p, out in zip(prompts, batch):
        assert model.generate([p], 8, temperature=0)[0] == out
        assert model.generate([p], 8, temperature=0, use_cache=False)[0] == out
    # logits of the padded prefill, row by row
    P = max(map(len, prompts))
    ids = torch.zeros(3, P, dtype=torch.long)
    mask = torch.zeros(3, P, dtype=torch.bool)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):], mask[b, P - len(p):] = torch.tensor(p), True
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        padded = model(ids, positions=pos, key_padding=mask)
        for b, p in enumerate(prompts):
            alone = model(torch.tensor([p]))
            torch.testing.assert_close(padded[b, P - len(p):], alone[0], atol=1e-5, rtol=1e-5)


def test_cached_and_uncached_sampling_agree_and_are_seeded():
    model = tiny(pos="rope")
    kw = dict(temperature=0.9, top_k=50, seed=123)
    a = model.generate([[1, 2, 3], [4]], 20, **kw)
    assert a == model.generate([[1, 2, 3], [4]], 20, **kw)
    assert a == model.generate([[1, 2, 3], [4]], 20, use_cache=False, **kw)
    assert a != model.generate([[1, 2, 3], [4]], 20, **{**kw, "seed": 124})


def test_stream_generate_yields_what_generate_returns():
    model = tiny()
    steps = list(model.stream_generate([[1, 2], [3, 4, 5]], 6, temperature=0))
    assert len(steps) == 6 and all(len(s) == 2 for s in steps)
    assert [list(r) for r in zip(*steps)] == model.generate([[1, 2], [3, 4, 5]], 6, temperature=0)


def test_context_overflow_is_an_error_or_slides():
    model = tiny()  # context 64
    with pytest.raises(ValueError, match=r"prompt of 10 tokens \+ max_new_tokens=60 = 70 exceeds the context of 64"):
        model.generate(list(range(10)), 60)
    with pytest.raises(ValueError, match="position 64 is outside the learned table of context_length=64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    out = model.generate(list(range(10)), 100, overflow="slide", temperature=0)[0]
    assert len(out) == 100
    # before the window fills, sliding changes nothing
    assert out[:54] == model.generate(list(range(10)), 54, temperature=0)[0]
    with pytest.raises(ValueError, match="overflow must be one of"):
        model.generate([1], 4, overflow="wrap")


def test_bad_prompts_give_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        model.generate([[1], []], 3)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 259\)"):
        model.generate([[1, 999]], 3)
    with pytest.raises(ValueError, match="tokenizer"):
        model.generate("hello", 3)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        model.generate([1], 3, temperature=-1)


def test_config_checks_and_dotted_overrides():
    model = mmgen.create_model("gpt_tiny", depth=3, pos="rope", bias=False)
    assert len(model.transformer.blocks) == 3 and model.pos_embed is None
    assert model.transformer.cfg.causal and model.transformer.cfg.rope == "1d"
    assert model.transformer.blocks[0].attn.qkv.bias is None
    assert model.config.block.depth == 3 and model.config.block.rope == "1d"  # read-only view
    with pytest.raises(ValueError, match="pos must be one of"):
        GPTConfig(pos="alibi")
    with pytest.raises(ValueError, match="mlp must be one of"):
        mmgen.create_model("gpt_tiny", mlp="swish")
    with pytest.raises(ValueError, match="has no field 'dpeth'; did you mean 'depth'"):
        mmgen.create_model("gpt_tiny", dpeth=3)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        mmgen.create_model("gpt_tiny", **{"num_kv_heads": 3})


def test_gpt2_init_scales_residual_projections():
    model = mmgen.create_model("gpt_tiny", **{"depth": 8, "embed_dim": 256})
    want = 0.02 / math.sqrt(2 * 8)
    for blk in model.transformer.blocks:
        assert abs(blk.attn.proj.weight.std().item() - want) < 0.1 * want
        assert abs(blk.mlp.fc2.weight.std().item() - want) < 0.1 * want
        assert abs(blk.attn.qkv.weight.std().item() - 0.02) < 0.002
    assert model.lm_head.weight is model.tok_embed.weight


def test_save_load_round_trip_keeps_tied_weights(tmp_path):
    model = tiny(pos="rope")
    model.save_pretrained(tmp_path / "ck")
    loaded = mmgen.load_pretrained(tmp_path / "ck")
    assert isinstance(loaded, GPT) and loaded.lm_head.weight is loaded.tok_embed.weight
    ids = torch.randint(0, 259, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids))


def test_loss_ignores_minus_100_and_overfits_one_batch():
    model = tiny().train()
    batch = model.example_batch(4)
    masked = {"input_ids": batch["input_ids"], "labels": batch["labels"].clone()}
    masked["labels"][:, :8] = -100
    with torch.no_grad():
        logits = model(batch["input_ids"])
    want = torch.nn.functional.cross_entropy(logits[:, 8:].flatten(0, 1), batch["labels"][:, 8:].flatten())
    torch.testing.assert_close(model.loss(masked)[0], want, atol=1e-5, rtol=1e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model.loss(batch)[0].item()
    for _ in range(60):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_hf_gpt2_parity_on_random_weights():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=101, n_positions=32, n_embd=48, n_layer=2, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # make biases and norms non-trivial so a mis-mapped tensor shows
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    ours = gpt_from_hf_gpt2(hf)
    assert ours.config.mlp == "gelu_tanh" and ours.config.context_length == 32
    ids = torch.randint(0, 101, (3, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)
        prompt = ids[:, :5]
        hf_out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                             pad_token_id=0)
    assert ours.generate(prompt, 12, temperature=0) == hf_out[:, 5:].tolist()
    # the state dict route, with Conv1D transposes, lands on the same weights
    again = GPT(ours.config)
    again.load_hf_gpt2_state_dict(hf.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again(ids), ours(ids))
    with pytest.raises(ValueError, match="does not fit"):
        mmgen.create_model("gpt_tiny").load_hf_gpt2_state_dict(hf.state_dict())


def test_byte_tokenizer_round_trips_chinese_and_emoji_through_generation():
    from mmgen.text import get_tokenizer
    tok = get_tokenizer("byte")
    text = "莎士比亚 🎭 to be, or not 😀!"
    assert tok.decode(tok.encode(text, add_bos=True, add_eos=True)) == text
    model = tiny()
    assert model.config.vocab_size == tok.vocab_size
    out = model.generate_text(text, tok, 10, seed=0)
    assert isinstance(out, str)


def test_cli_streams_a_continuation(tmp_path, capsys):
    from mmgen.cli import main
    from mmgen.text import get_tokenizer
    model = tiny()
    model.save_pretrained(tmp_path / "ck")
    assert main(["text", "To be", "--checkpoint", str(tmp_path / "ck"), "-n", "12", "-t", "0"]) == 0
    printed = capsys.readouterr().out
    tok = get_tokenizer("byte")
    want = tok.decode(model.generate("To be", 12, temperature=0, tokenizer=tok, eos_id=tok.eos_id)[0])
    assert printed == "To be" + want + "\n"
    assert main(["text", "To be", "--checkpoint", str(tmp_path / "ck"), "-n", "100", "--overflow", "error"]) == 2
    assert "exceeds the context of 64 tokens" in capsys.readouterr().err
    assert main(["text", "x" * 40, "--checkpoint", str(tmp_path / "ck"), "-n", "100", "--overflow", "slide"]) == 0
