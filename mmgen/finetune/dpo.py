"""Direct Preference Optimisation (Rafailov et al., 2023), sigmoid loss, frozen reference.

For a prompt x with a chosen completion y_w and a rejected one y_l,

    r(y) = beta * (log pi(y | x) - log pi_ref(y | x))          (the implicit reward)
    loss = -log sigmoid(r(y_w) - r(y_l))                     (+ optional label smoothing)

`DPOModel(policy, reference, beta)` follows the training contract (`loss(batch)`), so
`python -m train`'s loop (or `train.loop.fit`) trains it; the reference is held outside the
module tree (never trained, never saved) and run under no_grad. Batches come from
`collate_preferences`: {"chosen_ids", "chosen_labels", "rejected_ids", "rejected_labels"},
labels = next token ids with -100 on the prompt and padding, so only completion tokens
count. Logs: implicit rewards of chosen / rejected, their margin and the preference accuracy.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models.base import eval_mode


def sequence_logprobs(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over positions of log p(labels[t] | input_ids[:t+1]) where labels != -100 -> (B,)."""
    logits = model(input_ids).float()  # (B, T, V)
    mask = labels != -100
    lp = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0)[..., None])[..., 0]  # (B, T)
    return (lp * mask).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, label_smoothing: float = 0.0):
    """Per-example sequence log-probs (B,) -> (mean loss, chosen rewards (B,), rejected rewards (B,))."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    logits = chosen - rejected
    losses = -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing
    return losses.mean(), chosen.detach(), rejected.detach()


def encode_pair(prompt: list[int], completion: list[int]) -> tuple[list[int], list[int]]:
    """prompt + completion -> (input_ids, labels): labels[t] = ids[t+1] on completion tokens,
    -100 on the prompt (T = len(prompt) + len(completion) - 1)."""
    ids = list(prompt) + list(completion)
    labels = [-100] * (len(prompt) - 1) + list(completion)
    return ids[:-1], labels


def collate_preferences(items: list[dict], pad_id: int = 0) -> dict:
    """items {"prompt", "chosen", "rejected"} (token id lists) -> right-padded tensors."""
    out = {}
    for side in ("chosen", "rejected"):
        pairs = [encode_pair(it["prompt"], it[side]) for it in items]
        T = max(len(i) for i, _ in pairs)
        ids = torch.full((len(items), T), pad_id, dtype=torch.long)
        lab = torch.full((len(items), T), -100, dtype=torch.long)
        for b, (i, l) in enumerate(pairs):
            ids[b, :len(i)] = torch.tensor(i)
            lab[b, :len(l)] = torch.tensor(l)
        out[f"{side}_ids"], out[f"{side}_labels"] = ids, lab
    return out


class DPOModel(nn.Module):
    """A policy trained with DPO against a frozen copy (default) of itself."""

    def __init__(self, policy: nn.Module, reference: nn.Module | None = None, *, beta: float = 0.1,
                 label_smoothing: float = 0.0):
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.policy = policy
        ref = copy.deepcopy(policy) if reference is None else reference
        ref.eval().requires_grad_(False)
        self.__dict__["reference"] = ref  # outside the module tree: not trained, not saved
        self.beta, self.label_smoothing = beta, label_smoothing
        self.config = getattr(policy, "config", None)

    def _logps(self, model, batch):
        both_ids = torch.cat([batch["chosen_ids"], _pad_to(batch["rejected_ids"], batch["chosen_ids"].shape[1], 0)])
        both_lab = torch.cat([batch["chosen_labels"], _pad_to(batch["rejected_labels"], batch["chosen_labels"].shape[1], -100)])
        T = max(batch["chosen_ids"].shape[1], batch["rejected_ids"].shape[1])
        both_ids, both_lab = _pad_to(both_ids, T, 0), _pad_to(both_lab, T, -100)
        lp = sequence_logprobs(model, both_ids, both_lab)
        B = batch["chosen_ids"].shape[0]
        return lp[:B], lp[B:]

    def loss(self, batch: dict):
        pc, pr = self._logps(self.policy, batch)
        self.reference.to(pc.device)
        with torch.no_grad():
            rc, rr = self._logps(self.reference, batch)
        loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, self.beta, self.label_smoothing)
        return loss, {"loss": loss.item(), "reward_chosen": chosen.mean().item(),
                      "reward_rejected": rejected.mean().item(), "margin": (chosen - rejected).mean().item(),
                      "accuracy": (chosen > rejected).float().mean().item()}

    @torch.no_grad()
    def evaluate(self, batch: dict) -> dict:
        with eval_mode(self):
            _, logs = self.loss(batch)
        return logs

    def collate(self, items):
        return collate_preferences(items)


def _pad_to(x: torch.Tensor, T: int, value: int) -> torch.Tensor:
    return x if x.shape[1] >= T else F.pad(x, (0, T - x.shape[1]), value=value)
