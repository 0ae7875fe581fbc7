"""The sampler: each option has a test that fails if the option misbehaves."""
import pytest
import torch

import mmgen
from mmgen.text.sampling import (SamplingParams, StopChecker, apply_repetition_penalty, make_generator,
                                 process_logits, sample_next)

V = 50


def logits_batch(rows=4000):
    """The same random logits repeated over many rows, so one call draws many samples."""
    g = torch.Generator().manual_seed(0)
    one = torch.randn(1, V, generator=g) * 2
    return one, one.expand(rows, V).clone()


def test_greedy_is_argmax():
    one, many = logits_batch(8)
    out = sample_next(many, SamplingParams(temperature=0))
    assert (out == one.argmax()).all()


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_never_emits_outside_the_k_best(k):
    one, many = logits_batch()
    out = sample_next(many, SamplingParams(top_k=k), generator=make_generator(1))
    best = set(torch.topk(one[0], k).indices.tolist())
    assert set(out.tolist()) <= best
    if k > 1:
        assert len(set(out.tolist())) > 1  # it does sample, not just argmax


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_top_p_never_emits_outside_the_nucleus(p):
    one, many = logits_batch()
    probs = one[0].softmax(-1)
    order = probs.argsort(descending=True)
    nucleus, mass = set(), 0.0
    for t in order.tolist():  # smallest prefix of the sorted tokens with mass >= p
        nucleus.add(t)
        mass += probs[t].item()
        if mass >= p:
            break
    out = sample_next(many, SamplingParams(top_p=p), generator=make_generator(2))
    assert set(out.tolist()) <= nucleus
    kept = torch.isfinite(process_logits(one, SamplingParams(top_p=p))[0]).nonzero().flatten().tolist()
    assert set(kept) == nucleus


def test_min_p_drops_tokens_below_the_scaled_maximum():
    one, many = logits_batch()
    probs = one[0].softmax(-1)
    allowed = set((probs >= 0.2 * probs.max()).nonzero().flatten().tolist())
    out = sample_next(many, SamplingParams(min_p=0.2), generator=make_generator(3))
    assert set(out.tolist()) <= allowed and len(allowed) < V


def test_temperature_sharpens_and_flattens():
    one, many = logits_batch()
    top = one.argmax().item()
    cold = sample_next(many, SamplingParams(temperature=0.1), generator=make_generator(4))
    hot = sample_next(many, SamplingParams(temperature=5.0), generator=make_generator(4))
    assert (cold == top).float().mean() > (hot == top).float().mean() + 0.3


def test_repetition_penalty_lowers_repeated_tokens_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert torch.equal(out, torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
    assert (out[seen] < logits[seen]).all() and torch.equal(out[~seen], logits[~seen])
    # in generation: a greedy model that repeats itself stops repeating under a strong penalty
    torch.manual_seed(0)
    model = mmgen.create_model("gpt_tiny").eval()
    plain = model.generate([[1, 2, 3]], 12, temperature=0)[0]
    assert len(set(plain)) < len(plain)  # a random tiny model loops
    penalised = model.generate([[1, 2, 3]], 12, temperature=0, repetition_penalty=1e6)[0]
    assert len(set(penalised)) == len(penalised) and not set(penalised) & {1, 2, 3}


def test_seeded_sampling_is_reproducible():
    _, many = logits_batch(64)
    a = sample_next(many, SamplingParams(), generator=make_generator(7))
    b = sample_next(many, SamplingParams(), generator=make_generator(7))
    c = sample_next(many, SamplingParams(), generator=make_generator(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kw,msg", [
    ({"temperature": -0.5}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"), ({"min_p": 2.0}, "min_p"), ({"repetition_penalty": 0.0}, "repetition_penalty")])
def test_bad_options_are_rejected(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SamplingParams(**kw)


def test_stop_sequences_end_the_output():
    torch.manual_seed(0)
    model = mmgen.create_model("gpt_llama_tiny").eval()
    prompts = [[10, 20, 30], [7]]
    free = model.generate(prompts, 16, temperature=1.0, seed=5)
    stop = free[0][5:7]  # a two-token sequence the first row will produce
    n = next(i for i in range(2, 17) if free[0][i - 2:i] == stop)  # where it first completes
    out = model.generate(prompts, 16, temperature=1.0, seed=5, stop=[stop])
    assert out[0] == free[0][:n]  # ends right after the stop sequence
    assert out[0][-2:] == stop
    # eos ends a row, the other row continues
    eos = free[1][3]
    out = model.generate(prompts, 16, temperature=1.0, seed=5, eos_id=eos)
    assert out[1][-1] == eos and eos not in out[1][:-1]


class ByteTok:
    def encode(self, text, add_bos=False, add_eos=False):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def test_stop_strings_need_a_tokenizer_and_match_decoded_text():
    with pytest.raises(ValueError, match="tokenizer"):
        StopChecker(1, ["\n\n"])
    sc = StopChecker(1, ["end"], tokenizer=ByteTok())
    assert [sc.update(0, t) for t in b"the end"] == [False] * 6 + [True]
    torch.manual_seed(0)
    model = mmgen.create_model("gpt_tiny", vocab_size=128).eval()  # ASCII only: one char per token
    tok = ByteTok()
    free = model.generate("ab", 20, tokenizer=tok, seed=1)[0]
    stop = tok.decode(free[3:5])
    n = next(i for i in range(1, 21) if stop in tok.decode(free[:i]))
    out = model.generate("ab", 20, tokenizer=tok, seed=1, stop=[stop])[0]
    assert out == free[:n] and tok.decode(out).endswith(stop)
    assert model.generate_text("ab", tok, 20, seed=1, stop=stop) == tok.decode(free[:n])


def test_logits_processor_restricts_the_vocabulary():
    torch.manual_seed(0)
    model = mmgen.create_model("gpt_tiny").eval()
    calls = []

    def only_100_to_110(logits, step):
        calls.append(step)
        out = torch.full_like(logits, float("-inf"))
        out[:, 100:110] = logits[:, 100:110]
        return out

    out = model.generate([[1, 2], [3]], 30, seed=0, logits_processor=only_100_to_110)
    assert all(100 <= t < 110 for row in out for t in row) and calls == list(range(30))
