"""A Bradley-Terry reward model: the decoder's final hidden state at the last real token of
a sequence -> a scalar reward, trained with -log sigmoid(r(chosen) - r(rejected)).

`RewardModel(gpt)` reuses the decoder body (`forward(..., return_hidden=True)`), adds a
zero-initialised Linear(dim, 1) head, and takes batches from
`mmgen.finetune.dpo.collate_preferences` (the last real token of each row is the last
position whose label is not -100, plus one)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """P(chosen > rejected) = sigmoid(r_c - r_r); the mean negative log-likelihood."""
    return -F.logsigmoid(chosen - rejected).mean()


class RewardModel(nn.Module):
    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder
        dim = decoder.transformer.cfg.embed_dim
        self.reward_head = nn.Linear(dim, 1)
        nn.init.zeros_(self.reward_head.weight)
        nn.init.zeros_(self.reward_head.bias)
        self.config = decoder.config

    def forward(self, input_ids: torch.Tensor, last_index: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T), last_index (B,) the position to read (default T - 1) -> rewards (B,)."""
        _, h = self.decoder(input_ids, return_hidden=True)  # (B, T, dim)
        if last_index is None:
            last_index = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
        h_last = h[torch.arange(h.shape[0], device=h.device), last_index]  # (B, dim)
        return self.reward_head(h_last).squeeze(-1).float()

    @staticmethod
    def last_index(labels: torch.Tensor) -> torch.Tensor:
        """The last input position that predicts a completion token (labels != -100)."""
        T = labels.shape[1]
        idx = torch.arange(T, device=labels.device).expand_as(labels)
        return torch.where(labels != -100, idx, -1).amax(-1).clamp(min=0)

    def score(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Rewards (B,) of (input_ids, labels) rows: the last completion token (only in the
        labels) is appended so the reward reads the state after the whole sequence."""
        last = self.last_index(labels)  # (B,)
        full = F.pad(ids, (0, 1))  # (B, T + 1)
        rows = torch.arange(ids.shape[0], device=ids.device)
        full[rows, last + 1] = labels[rows, last].clamp(min=0)
        return self(full, last + 1)

    def loss(self, batch: dict):
        rc = self.score(batch["chosen_ids"], batch["chosen_labels"])
        rr = self.score(batch["rejected_ids"], batch["rejected_labels"])
        loss = bradley_terry_loss(rc, rr)
        return loss, {"loss": loss.item(), "reward_chosen": rc.mean().item(), "reward_rejected": rr.mean().item(),
                      "accuracy": (rc > rr).float().mean().item()}

    def collate(self, items):
        from .dpo import collate_preferences
        return collate_preferences(items)
