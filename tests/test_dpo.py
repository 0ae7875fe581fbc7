"""DPO loss against a hand computation, sequence log-probs, the DPO model, the reward model."""
import math

import pytest
import torch

import mmgen
from mmgen.finetune import DPOModel, RewardModel, collate_preferences, dpo_loss, sequence_logprobs


def test_dpo_loss_equals_hand_computation():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.5])
    rc, rr = torch.tensor([-3.5, -5.2]), torch.tensor([-3.9, -4.0])
    beta = 0.5
    loss, ch, rj = dpo_loss(pc, pr, rc, rr, beta)
    # row 0: chosen reward 0.5*(0.5)=0.25, rejected 0.5*(-0.1)=-0.05 -> margin 0.30
    # row 1: chosen 0.5*(0.2)=0.10, rejected 0.5*(-0.5)=-0.25 -> margin 0.35
    hand = (math.log1p(math.exp(-0.30)) + math.log1p(math.exp(-0.35))) / 2
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    torch.testing.assert_close(ch, torch.tensor([0.25, 0.10]))
    torch.testing.assert_close(rj, torch.tensor([-0.05, -0.25]))
    smooth, _, _ = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=0.1)
    hand_s = sum(0.9 * math.log1p(math.exp(-m)) + 0.1 * math.log1p(math.exp(m)) for m in (0.30, 0.35)) / 2
    assert smooth.item() == pytest.approx(hand_s, rel=1e-6)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, 0.0)


def test_sequence_logprobs_counts_only_completion_tokens():
    torch.manual_seed(0)
    model = mmgen.create_model("gpt_tiny").eval()
    items = [{"prompt": [1, 2, 3], "chosen": [4, 5], "rejected": [6, 7, 8]}]
    b = collate_preferences(items)
    assert b["chosen_labels"].tolist() == [[-100, -100, 4, 5]]
    with torch.no_grad():
        lp = sequence_logprobs(model, b["chosen_ids"], b["chosen_labels"])
        full = model(torch.tensor([[1, 2, 3, 4, 5]]))[0].log_softmax(-1)
    assert lp.item() == pytest.approx((full[2, 4] + full[3, 5]).item(), rel=1e-5)


def _pairs(n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        p = torch.randint(10, 60, (4,), generator=g).tolist()
        out.append({"prompt": p, "chosen": [p[-1] + 1, p[-1] + 2], "rejected": torch.randint(60, 250, (2,), generator=g).tolist()})
    return out


def test_dpo_model_starts_at_log2_and_learns_the_preference():
    torch.manual_seed(0)
    policy = mmgen.create_model("gpt_tiny")
    dpo = DPOModel(policy, beta=0.5)
    assert not any(n.startswith("reference") for n, _ in dpo.named_parameters())
    batch = dpo.collate(_pairs(16, 0))
    loss, logs = dpo.loss(batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5) and logs["margin"] == pytest.approx(0, abs=1e-5)
    opt = torch.optim.AdamW([p for p in dpo.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(25):
        loss, logs = dpo.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    held = dpo.evaluate(dpo.collate(_pairs(16, 1)))
    assert logs["margin"] > 0.5 and held["margin"] > 0 and held["accuracy"] > 0.5
    # the reference did not move
    with torch.no_grad():
        assert not torch.equal(dpo.reference.lm_head.weight, dpo.policy.lm_head.weight)


def test_reward_model_bradley_terry():
    torch.manual_seed(0)
    rm = RewardModel(mmgen.create_model("gpt_tiny"))
    batch = rm.collate(_pairs(16, 0))
    loss, _ = rm.loss(batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)  # zero head: r = 0 everywhere
    opt = torch.optim.AdamW(rm.parameters(), lr=3e-3)
    for _ in range(20):
        loss, logs = rm.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["accuracy"] == 1.0 and loss.item() < 0.3
    # the score reads the state after the last completion token
    ids, lab = batch["chosen_ids"][:1], batch["chosen_labels"][:1]
    full = torch.cat([ids, lab[:, -1:]], 1)
    with torch.no_grad():
        torch.testing.assert_close(rm.score(ids, lab), rm(full))
