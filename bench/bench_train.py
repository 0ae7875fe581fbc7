"""The overhead of the training loop: one optimizer step of train.Trainer (batch assembly
from dataset items, autocast context, grad-norm clipping, the NaN check's host sync, EMA,
rank-averaged logs) against a bare `loss.backward(); opt.step()` loop on a pre-built batch,
same model, same AdamW, in the same process."""
from __future__ import annotations

import tempfile

import torch
import torch.nn.functional as F
from torch import nn

from bench.timing import compare, print_table
from mmgen.layers import Transformer, TransformerConfig


class TinyLM(nn.Module):
    def __init__(self, vocab=256, dim=128, depth=4, seq=64):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(seq, dim))
        self.body = Transformer(TransformerConfig(embed_dim=dim, depth=depth, num_heads=4, causal=True))
        self.head = nn.Linear(dim, vocab)

    def loss(self, batch):
        x = self.emb(batch["input_ids"]) + self.pos  # (B, T, dim)
        logits = self.head(self.body(x))  # (B, T, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())
        return loss, {}


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n=4096, seq=64):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 256, (n, seq + 1), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i, :-1], "labels": self.ids[i, 1:]}


def main(steps: int = 10) -> None:
    from mmgen.train import TrainConfig
    from mmgen.train.data import batch_stream
    from mmgen.train.loop import Trainer

    ds = Tokens()
    rows = []
    for dim, depth, batch in ((32, 2, 8), (128, 4, 32)):
        for ema in (0.0, 0.999):
            torch.manual_seed(0)
            bare_model, loop_model = TinyLM(dim=dim, depth=depth), TinyLM(dim=dim, depth=depth)
            loop_model.load_state_dict(bare_model.state_dict())
            opt = torch.optim.AdamW(bare_model.parameters(), lr=1e-4)
            fixed = {k: torch.stack([ds[i][k] for i in range(batch)]) for k in ("input_ids", "labels")}

            def bare():
                opt.zero_grad(set_to_none=True)
                loss, _ = bare_model.loss(fixed)
                loss.backward()
                opt.step()

            with tempfile.TemporaryDirectory() as out:
                cfg = TrainConfig(batch_size=batch, lr=1e-4, warmup=0, ema=ema, progress=False, amp="fp32",
                                  device="cpu")
                trainer = Trainer(loop_model, ds, cfg, out)
                stream = batch_stream(ds, batch, seed=0)
                t = compare({"bare": bare, "loop": lambda: trainer.train_step(stream)}, warmup=3,
                            repeats=steps * (5 if dim == 32 else 1))
            n = sum(p.numel() for p in bare_model.parameters())
            rows.append([f"{n / 1e6:.2f}M", f"ema={ema}", batch, f"{1 / t['bare'].median_s:.1f}",
                         f"{1 / t['loop'].median_s:.1f}", f"{(t['loop'].median_s - t['bare'].median_s) * 1e3:.2f}",
                         t["loop"].median_s / t["bare"].median_s])
    print_table(f"train loop vs bare loop: causal LM from mmgen.layers, seq 64, fp32, {torch.get_num_threads()} threads",
                ["params", "config", "batch", "bare steps/s", "loop steps/s", "overhead ms/step", "loop/bare"], rows)


if __name__ == "__main__":
    main()
