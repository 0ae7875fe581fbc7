"""Speculative decoding: greedy output unchanged, sampled output distributed as the target."""
import math

import pytest
import torch

import mmgen
from mmgen.models.gpt import GPT, GPTConfig
from mmgen.text.speculative import speculative_generate


def _small(vocab, dim, depth, seed, **kw):
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=vocab, context_length=64, tie_weights=False, embed_dim=dim, depth=depth, num_heads=2, **kw))
    with torch.no_grad():  # logits of std ~1.5 instead of the near-uniform 0.02 init
        m.tok_embed.weight.normal_(0, 1.0)
        m.lm_head.weight.normal_(0, 0.4)
    return m.eval()


@pytest.mark.parametrize("num_draft", [1, 3, 5])
def test_greedy_output_equals_target_greedy(num_draft):
    target = mmgen.create_model("gpt_tiny").eval()
    torch.manual_seed(1)
    draft = mmgen.create_model("gpt_tiny", depth=1).eval()
    prompt = [3, 70, 71, 72, 10]
    want = target.generate(prompt, 30, temperature=0)[0]
    got, stats = speculative_generate(target, draft, prompt, 30, num_draft=num_draft, temperature=0,
                                      return_stats=True)
    assert got == want
    assert stats.target_calls < 31 or num_draft == 1
    # the target as its own draft accepts everything
    same, st = speculative_generate(target, target, prompt, 30, num_draft=num_draft, temperature=0, return_stats=True)
    assert same == want and st.acceptance == 1.0


def test_sampled_tokens_follow_the_target_distribution():
    """Joint law of the first two new tokens over 1200 seeded runs vs the exact target law
    p(x1) p(x2 | x1): a chi-square test at the 1e-3 level (vocabulary 4 -> 16 cells)."""
    V = 4
    target, draft = _small(V, 16, 1, 0), _small(V, 16, 1, 5)
    prompt = [1, 2]
    with torch.no_grad():
        p1 = target(torch.tensor([prompt]))[0, -1].softmax(-1)
        joint = torch.stack([p1[a] * target(torch.tensor([prompt + [a]]))[0, -1].softmax(-1) for a in range(V)])
        q1 = draft(torch.tensor([prompt]))[0, -1].softmax(-1)
    assert (p1 - q1).abs().sum() > 0.2  # the draft really differs, so rejections happen
    N = 1200
    counts = torch.zeros(V, V)
    g = torch.Generator().manual_seed(0)
    acc = 0.0
    for _ in range(N):
        out, st = speculative_generate(target, draft, prompt, 2, num_draft=2, generator=g, return_stats=True)
        counts[out[0], out[1]] += 1
        acc += st.acceptance
    assert 0.05 < acc / N < 0.95
    expected = joint.flatten() * N
    keep = expected > 5
    chi2 = float((((counts.flatten() - expected) ** 2) / expected)[keep].sum())
    dof = int(keep.sum()) - 1
    # Wilson-Hilferty approximation of the chi-square 0.999 quantile
    z = 3.09
    crit = dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3
    assert chi2 < crit, (chi2, crit, counts, expected)


def test_top_k_sampling_matches_filtered_target():
    target, draft = _small(6, 16, 1, 0), _small(6, 16, 1, 3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        allowed = set(torch.topk(target(torch.tensor([[1, 2]]))[0, -1], 2).indices.tolist())
    firsts = {speculative_generate(target, draft, [1, 2], 1, num_draft=3, top_k=2, generator=g)[0] for _ in range(50)}
    assert firsts <= allowed


def test_errors_and_eos():
    target = mmgen.create_model("gpt_tiny")
    with pytest.raises(ValueError, match="vocabularies differ"):
        speculative_generate(target, mmgen.create_model("gpt_tiny", vocab_size=300), [1], 4)
    with pytest.raises(ValueError, match="exceeds the context"):
        speculative_generate(target, target, [1] * 60, 10)
    out = speculative_generate(target, target, [1, 2], 20, temperature=0)
    eos = out[3]
    cut = speculative_generate(target, target, [1, 2], 20, temperature=0, eos_id=eos)
    assert cut == out[:out.index(eos) + 1]


@pytest.mark.parametrize("preset", ["gpt_tiny", "gpt_llama_tiny"])
def test_static_kv_decoder_equals_generate(preset):
    """The fixed-shape decode step (what torch.compile compiles once) gives the same tokens;
    compiling is exercised by bench/bench_llm.py (too slow to warm up in a test)."""
    from mmgen.text.static import StaticDecoder
    model = mmgen.create_model(preset).eval()
    prompts = [[3, 4, 5, 6], [9, 8, 7, 6]]
    want = model.generate(prompts, 12, temperature=0)
    dec = StaticDecoder(model, batch=2, max_len=16, compile=False)
    assert dec.generate(prompts, 12, temperature=0) == want
    assert dec.generate(prompts, 12, temperature=0) == want  # reusable: the caches are overwritten
    assert dec.generate(prompts, 6, seed=3, temperature=0.8, top_k=20) == model.generate(prompts, 6, seed=3, temperature=0.8, top_k=20)
    with pytest.raises(ValueError, match="max_len"):
        dec.generate(prompts, 13)
