"""Speculative decoding (Leviathan et al., 2023; Chen et al., 2023) with a small draft model.

The draft proposes `num_draft` tokens one at a time from its distribution q; the target
scores all of them in one forward pass on its KV cache, giving p at every proposed
position. Token i is accepted with probability min(1, p_i(x_i) / q_i(x_i)); at the first
rejection a replacement is drawn from normalise(max(0, p_i - q_i)), and when every token is
accepted a bonus token is drawn from the target's next distribution. The emitted tokens are
distributed exactly as sampling from the target alone. With temperature 0 (greedy) a token
is accepted iff it is the target's argmax, so the output equals the target's greedy output.

p and q are the processed distributions of `mmgen.text.sampling.process_logits`
(temperature, top-k, top-p, min-p), so filtered sampling is matched too. Both models need
GPT's interface (`forward(ids, positions=, cache=, start=)`, `make_cache`) and the same
vocabulary. The KV caches are preallocated and written by absolute position: rolling back
rejected tokens is just resetting the length (stale entries are overwritten later and never
read). One prompt at a time (the accepted lengths differ between rows).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .sampling import SamplingParams, make_generator, process_logits


@dataclass
class SpeculativeStats:
    proposed: int = 0
    accepted: int = 0
    target_calls: int = 0  # target forward passes (prefill included)
    draft_calls: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / max(self.proposed, 1)

    def as_dict(self) -> dict:
        return {"proposed": self.proposed, "accepted": self.accepted, "acceptance": self.acceptance,
                "target_calls": self.target_calls, "draft_calls": self.draft_calls}


def _probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """(N, V) logits -> (N, V) float32 probabilities (one-hot argmax when greedy)."""
    lg = process_logits(logits, params)
    if params.greedy:
        return torch.nn.functional.one_hot(lg.argmax(-1), lg.shape[-1]).float()
    return lg.softmax(-1)


def _draw(probs: torch.Tensor, gen) -> int:
    return int(torch.multinomial(probs, 1, generator=gen))


def _forward(model, ids: list[int], start: int, cache, dev) -> torch.Tensor:
    """Feed ids at absolute positions [start, start + len) -> (len, V) logits."""
    x = torch.tensor([ids], dtype=torch.long, device=dev)
    pos = torch.arange(start, start + len(ids), device=dev)[None]
    return model(x, positions=pos, cache=cache, start=start)[0]


@torch.no_grad()
def speculative_generate(target, draft, prompt, max_new_tokens: int = 64, *, num_draft: int = 4,
                         temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                         min_p: float | None = None, eos_id: int | None = None, seed: int | None = None,
                         generator: torch.Generator | None = None, return_stats: bool = False):
    """The continuation ids of one prompt (list of ids or a (T,) / (1, T) tensor), sampled
    as from `target` with the given sampling options; with return_stats also the
    SpeculativeStats (acceptance rate, forward counts)."""
    if num_draft < 1:
        raise ValueError(f"num_draft must be >= 1, got {num_draft}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if target.config.vocab_size != draft.config.vocab_size:
        raise ValueError(f"target and draft vocabularies differ: {target.config.vocab_size} vs "
                         f"{draft.config.vocab_size}")
    if isinstance(prompt, torch.Tensor):
        if prompt.ndim == 2 and prompt.shape[0] != 1:
            raise ValueError(f"speculative decoding takes one prompt, got a batch of {prompt.shape[0]}")
        prompt = prompt.reshape(-1).tolist()
    seq = [int(t) for t in prompt]
    if not seq:
        raise ValueError("the prompt is empty: pass at least one token (e.g. a BOS id)")
    params = SamplingParams(temperature, top_k, top_p, min_p)
    dev = next(target.parameters()).device
    max_len = len(seq) + max_new_tokens + num_draft + 1
    ctx = min(target.config.context_length, draft.config.context_length)
    if max_len > ctx:
        raise ValueError(f"prompt {len(seq)} + max_new_tokens {max_new_tokens} + num_draft {num_draft} + 1 = "
                         f"{max_len} exceeds the context of {ctx} tokens")
    gen = generator if generator is not None else make_generator(seed, dev)
    stats = SpeculativeStats()
    modes = (target.training, draft.training)
    target.eval(), draft.eval()
    try:
        t_cache, d_cache = target.make_cache(1, max_len), draft.make_cache(1, max_len)
        # state: target cache valid for seq[:-1] (the last token not fed yet); draft for seq[:d_len]
        if len(seq) > 1:
            _forward(target, seq[:-1], 0, t_cache, dev)
            stats.target_calls += 1
        t_len, d_len = len(seq) - 1, 0
        out: list[int] = []
        while len(out) < max_new_tokens:
            gamma = min(num_draft, max_new_tokens - len(out))
            # draft: catch up on committed tokens, then propose gamma tokens
            q_logits = _forward(draft, seq[d_len:], d_len, d_cache, dev)[-1:]
            stats.draft_calls += 1
            proposal, q_list = [], []
            for i in range(gamma):
                q = _probs(q_logits, params)[0]
                x = int(q.argmax()) if params.greedy else _draw(q, gen)
                proposal.append(x)
                q_list.append(q)
                if i < gamma - 1:
                    q_logits = _forward(draft, [x], len(seq) + i, d_cache, dev)
                    stats.draft_calls += 1
            d_fed = len(seq) + gamma - 1
            # target: score the last committed token + the proposals in one pass -> gamma + 1 distributions
            p_all = _probs(_forward(target, [seq[-1]] + proposal, t_len, t_cache, dev), params)  # (gamma+1, V)
            stats.target_calls += 1
            stats.proposed += gamma
            n = 0
            new: list[int] = []
            for i, x in enumerate(proposal):
                p, q = p_all[i], q_list[i]
                if params.greedy:
                    ok = x == int(p.argmax())
                else:
                    u = torch.rand((), generator=gen, device=dev) if gen is not None else torch.rand((), device=dev)
                    ok = bool(u * q[x] <= p[x])  # u < p/q without dividing by a tiny q
                if not ok:
                    if params.greedy:
                        y = int(p.argmax())
                    else:
                        resid = (p - q).clamp(min=0)
                        y = _draw(resid / resid.sum(), gen) if resid.sum() > 0 else _draw(p, gen)
                    new.append(y)
                    break
                new.append(x)
                n += 1
            else:  # all accepted: a bonus token from the target's next distribution
                p = p_all[gamma]
                new.append(int(p.argmax()) if params.greedy else _draw(p, gen))
            stats.accepted += n
            old = len(seq)
            new = new[:max_new_tokens - len(out)]
            stop = False
            if eos_id is not None and eos_id in new:
                new, stop = new[:new.index(eos_id) + 1], True
            seq.extend(new)
            out.extend(new)
            t_len = old + n  # seq[-1] (old) and the n accepted proposals are now in the target cache
            d_len = min(d_fed, old + n)
            if stop:
                break
    finally:
        target.train(modes[0]), draft.train(modes[1])
    return (out, stats) if return_stats else out
