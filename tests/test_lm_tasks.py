"""Synthetic language tasks: in-context-learning sequences, arithmetic with and without a
scratchpad, the GPT's exact-match evaluation and the task evaluation command."""
import numpy as np
import pytest
import torch

import mmgen
from mmgen.data import build_dataset
from mmgen.data.lm_tasks import (ICLDataset, add_scratchpad, format_problem, icl_best_accuracy,
                                 mul_scratchpad, parse_completion)


# ------------------------------------------------------------------------------ in-context learning
def test_icl_pairs_are_one_function_per_sequence_and_labels_point_at_its_values():
    ds = build_dataset("icl", "train", num_pairs=24, num_x=6, num_y=5)
    fns = set()
    for i in range(40):
        it = ds[i]
        ids, labels = it["input_ids"].tolist(), it["labels"].tolist()
        assert len(ids) == len(labels) == 2 * 24 - 1
        full = ds.tokens(i).tolist()  # x1 y1 ... xk yk
        assert ids == full[:-1]
        xs, ys = ds.text(full[0::2]), ds.text(full[1::2])
        assert all("a" <= x <= "f" for x in xs) and all("A" <= y <= "E" for y in ys)
        seen = {}
        for x, y in zip(xs, ys):  # consistent within the sequence: one y per x
            assert seen.setdefault(x, y) == y
        _, _, f = ds.pairs(i)
        assert all(seen[chr(ord("a") + x)] == chr(ord("A") + int(f[x])) for x in range(6) if chr(ord("a") + x) in seen)
        # labels: at every x the y that follows it, nowhere else
        assert labels == [full[t + 1] if t % 2 == 0 else -100 for t in range(len(ids))]
        fns.add(tuple(f))
    assert len(fns) >= 38  # a fresh function per sequence (5^6 functions: a repeat or two by chance)
    assert torch.equal(ds[3]["input_ids"], build_dataset("icl", "train", num_pairs=24, num_x=6, num_y=5)[3]["input_ids"])
    assert not torch.equal(ds[3]["input_ids"], build_dataset("icl", "val", num_pairs=24, num_x=6, num_y=5)[3]["input_ids"])


def test_icl_best_accuracy_matches_the_data():
    ds = ICLDataset("val", num_pairs=16, num_x=8, num_y=4, length=3000)
    seen = np.zeros(16)
    for i in range(3000):
        xs = ds.pairs(i)[0]
        seen += [xs[j] in xs[:j] for j in range(16)]
    emp = seen / 3000 + (1 - seen / 3000) / 4
    best = icl_best_accuracy(16, 8, 4)
    assert best[0] == pytest.approx(0.25) and np.all(np.diff(best) > 0)
    np.testing.assert_allclose(emp, best, atol=0.03)


def test_icl_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_x"):
        ICLDataset(num_x=30)
    with pytest.raises(ValueError, match="split"):
        ICLDataset("dev")


# ------------------------------------------------------------------------------ arithmetic
@pytest.mark.parametrize("scratchpad", [False, True])
def test_arithmetic_answers_are_right_and_scratchpads_parse_back(scratchpad):
    ds = build_dataset("arithmetic", "test", scratchpad=scratchpad, max_digits=7, block_size=160)
    for i in range(300):
        it = ds[i]
        a, op, b = it["prompt"][:-1].replace("*", " * ").replace("+", " + ").split()
        want = int(a) + int(b) if op == "+" else int(a) * int(b)
        assert it["completion"].endswith(f"{want}\n")
        assert parse_completion(it["prompt"], it["completion"]) == want
        assert it["completion"].startswith("[") == scratchpad
        # the row holds prompt + completion, labels only on the completion
        ids, labels = it["input_ids"].tolist(), it["labels"].tolist()
        n_p, n_c = len(it["prompt"]), len(it["completion"])
        assert bytes(ids[:n_p + n_c]).decode() == it["prompt"] + it["completion"]
        scored = [t for t, l in enumerate(labels) if l != -100]
        assert scored == list(range(n_p - 1, n_p + n_c - 1))
    assert {ds[i]["task"] for i in range(4)} == {"add", "mul"}


def test_scratchpad_contents_and_corruptions_are_caught():
    assert add_scratchpad(367, 485) == "[7+5+0=12 6+8+1=15 3+4+1=8]"
    assert mul_scratchpad(367, 8) == "[7*8+0=56 6*8+5=53 3*8+5=29]"
    assert format_problem("add", 999, 1, True) == ("999+1=", "[9+1+0=10 9+0+1=10 9+0+1=10]1000\n")
    assert parse_completion("999+1=", "[9+1+0=10 9+0+1=10 9+0+1=10]1000") == 1000
    good = "[7*8+0=56 6*8+5=53 3*8+5=29]2936"
    assert parse_completion("367*8=", good) == 2936
    bad = {"[7*8+0=56 6*8+5=53 3*8+5=29]2937": "steps give 2936",
           "[7*8+0=56 6*8+4=52 3*8+5=29]2936": "carries 4",
           "[7*8+0=56 6*8+5=54 3*8+5=29]2936": "wrong arithmetic",
           "[7*8+0=56 3*8+5=29 6*8+5=53]2936": "digits",
           "[7*8+0=56 6*8+5=53]536": "steps",
           "[7*8+0=56 6*8+5=53 3*8+5=29": "unclosed"}
    for text, msg in bad.items():
        with pytest.raises(ValueError, match=msg):
            parse_completion("367*8=", text)
    assert parse_completion("367*8=", "[garbage]2936", check=False) == 2936  # answer only


def test_packed_rows_hold_whole_right_examples_and_score_only_completions():
    ds = build_dataset("arithmetic", "train", scratchpad=True, block_size=128)
    for i in range(20):
        it = ds[i]
        ids, labels = it["input_ids"].tolist(), it["labels"].tolist()
        text = bytes(ids).decode()
        lines = text.split("\n")
        for line in lines[:-1]:  # every complete example is right
            prompt, rest = line.split("=", 1)
            prompt += "="
            a, op, b = prompt[:-1].replace("*", " * ").replace("+", " + ").split()
            assert parse_completion(prompt, rest) == (int(a) + int(b) if op == "+" else int(a) * int(b))
        # a label is set exactly where the next byte belongs to a completion (after '=' up to '\n')
        in_completion, expect = False, []
        for t in range(1, len(ids) + 1):
            prev = ids[t - 1]
            if prev == ord("=") and not in_completion:
                in_completion = True
            elif prev == ord("\n"):
                in_completion = False
            expect.append(in_completion)
        got = [l != -100 for l in labels]
        assert got[:len(expect) - 1] == expect[:-1] or got == expect


def test_arithmetic_block_size_check():
    with pytest.raises(ValueError, match="block_size"):
        build_dataset("arithmetic", "val", scratchpad=True, max_digits=6, block_size=32)


# ------------------------------------------------------------------------------ evaluation
def test_gpt_evaluate_exact_match_counts_rows():
    torch.manual_seed(0)
    gpt = mmgen.create_model("gpt_tiny").eval()
    ids = torch.randint(0, 256, (4, 10))
    with torch.no_grad():
        pred = gpt(ids).argmax(-1)
    labels = torch.full_like(ids, -100)
    labels[:, 5:8] = pred[:, 5:8]  # rows 0..3 all right on their labelled tokens
    labels[1, 6] = (pred[1, 6] + 1) % 259  # row 1 wrong in one token
    logs = gpt.evaluate({"input_ids": ids, "labels": labels, "task": ["add", "add", "mul", "mul"]})
    assert logs["seq_exact"] == pytest.approx(0.75) and logs["token_acc"] == pytest.approx(11 / 12)
    assert logs["seq_exact_add"] == pytest.approx(0.5) and logs["seq_exact_mul"] == 1.0


def test_eval_command_runs_on_tiny_untrained_models(tmp_path, capsys):
    from mmgen.cli import main
    torch.manual_seed(0)
    gpt = mmgen.create_model("gpt_tiny", context_length=64)
    gpt.save_pretrained(tmp_path / "m")
    assert main(["lm-tasks", "cot", "--plain", str(tmp_path / "m"), "--scratchpad", str(tmp_path / "m"), "--n", "3",
                 "--max-digits", "2", "--png", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "| a+b | 1 |" in out and "| a*d | 2 |" in out and (tmp_path / "c.png").stat().st_size > 0
    icl = mmgen.create_model("gpt_tiny", context_length=64)
    icl.save_pretrained(tmp_path / "icl")
    assert main(["lm-tasks", "icl", "--model", str(tmp_path / "icl"), "--n", "8", "--png", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert "best possible" in out and "layer 1: induction" in out and (tmp_path / "a.png").stat().st_size > 0
