"""What prefix tuning and P-tuning share: a frozen GPT with P trainable virtual tokens in
front of the real ones. Subclasses say where the virtual tokens go (`_prefill`, `_decode`);
the loss, the init-text check and the KV-cached sampling loop are written once here."""
from __future__ import annotations

import torch
from torch import nn

from ..models.base import eval_mode
from ..text.sampling import SamplingParams, make_generator, sample_next


class VirtualTokenGPT(nn.Module):
    """Base of PrefixGPT and PTuningGPT (training contract: loss / example_batch; `generate`)."""

    gpt: nn.Module
    num_virtual: int

    def _check_init_ids(self, ids: list[int], what: str) -> list[int]:
        if len(ids) < self.num_virtual:
            raise ValueError(f"init text has {len(ids)} tokens, the {what} needs {self.num_virtual}")
        return ids[:self.num_virtual]

    def loss(self, batch: dict):
        logits = self(batch["input_ids"])  # (B, T, vocab) of the real tokens
        loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100)
        return loss, {"loss": loss.item()}

    def example_batch(self, batch_size: int = 2, device="cpu") -> dict:
        return self.gpt.example_batch(batch_size, device)

    def _prefill(self, ids: torch.Tensor, max_new_tokens: int):
        """Run the prompt ids (B, T) after the virtual tokens: (last logits (B, vocab), cache)."""
        raise NotImplementedError

    def _decode(self, tok: torch.Tensor, pos: torch.Tensor, cache, start: int) -> torch.Tensor:
        """One new token per row (B, 1) at real positions `pos` (B, 1), cache slot `start`."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, prompt, max_new_tokens: int = 64, *, temperature: float = 1.0, top_k=None, top_p=None,
                 min_p=None, seed: int | None = None, eos_id: int | None = None) -> list[list[int]]:
        """Continuations of equal-length prompts ((B, T) tensor or list of lists), the virtual
        tokens prefilled into the KV cache, sampled by mmgen.text.sampling."""
        dev = self.gpt.tok_embed.weight.device
        ids = torch.as_tensor(prompt, dtype=torch.long, device=dev)
        if ids.ndim == 1:
            ids = ids[None]
        B, T = ids.shape
        if T + max_new_tokens > self.gpt.config.context_length:
            raise ValueError(f"prompt {T} + max_new_tokens {max_new_tokens} exceeds the context "
                             f"{self.gpt.config.context_length}")
        params = SamplingParams(temperature, top_k, top_p, min_p)
        gen = make_generator(seed, dev)
        P = self.num_virtual
        out = [[] for _ in range(B)]
        with eval_mode(self):
            logits, cache = self._prefill(ids, max_new_tokens)
            done = torch.zeros(B, dtype=torch.bool, device=dev)
            for step in range(max_new_tokens):
                nxt = sample_next(logits, params, None, gen)  # (B,)
                for b, t in enumerate(nxt.tolist()):
                    if not done[b]:
                        out[b].append(t)
                        done[b] = eos_id is not None and t == eos_id
                if bool(done.all()) or step == max_new_tokens - 1:
                    break
                pos = torch.full((B, 1), T + step, device=dev)
                logits = self._decode(nxt[:, None], pos, cache, P + T + step)
        return out
