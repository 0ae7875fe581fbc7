"""DALL-E: the joint sequence layout, the 1:7 loss, KV-cached vs full sampling, guidance,
CLIP reranking, prompt checks, save/load with helper paths, and the CLI on the shipped
checkpoints."""
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mmgen
from mmgen.models.dalle import DALLE

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints" / "dalle_shapes"


class FakeVQ(nn.Module):
    """A stand-in tokenizer: 4x4 tokens from 32 colours, each token a flat 4x4 colour patch."""

    model_type = "vq"

    def __init__(self, codes: int = 32, grid=(4, 4)):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.palette = nn.Parameter(torch.rand(codes, 3, generator=g) * 2 - 1)
        self.vocab_size, self.token_shape = codes, grid

    @property
    def device(self):
        return self.palette.device

    def encode_tokens(self, images):
        small = F.avg_pool2d(images, images.shape[-1] // self.token_shape[1])  # (B, 3, h, w)
        d = ((small.permute(0, 2, 3, 1)[..., None, :] - self.palette) ** 2).sum(-1)  # (B, h, w, codes)
        return d.argmin(-1)

    def decode_tokens(self, tokens):
        img = self.palette[tokens].permute(0, 3, 1, 2)  # (B, 3, h, w)
        return F.interpolate(img, scale_factor=4, mode="nearest")


class FakeCLIP(nn.Module):
    """Scores an image by how red it is: cos(mean colour, red)."""

    def __init__(self):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.zeros(()))

    def tokenize(self, texts, truncate=False):
        return torch.zeros(len(texts), 1, dtype=torch.long)

    def encode_image(self, images, normalize=True):
        return F.normalize(images.mean((2, 3)) + 1.0, dim=-1)

    def encode_text(self, tokens, normalize=True):
        return F.normalize(torch.tensor([[1.0, 0.0, 0.0]]).expand(len(tokens), 3), dim=-1)


def tiny(**kw) -> DALLE:
    torch.manual_seed(0)
    return mmgen.create_model("dalle_tiny", **kw).eval()


# ----------------------------------------------------------------------------- layout
def test_joint_sequence_layout_and_positions():
    m = tiny()
    c = m.config
    h, w = c.image_grid
    with torch.no_grad():
        m.text_embed.weight.zero_()
        m.image_embed.weight.zero_()
    seq = torch.cat([m.tokenize(["a red circle"]), torch.zeros(1, c.image_tokens, dtype=torch.long)], 1)
    assert seq.shape == (1, c.text_len + h * w)
    x = m.embed(seq)  # with zero token embeddings only the positions remain
    torch.testing.assert_close(x[0, :c.text_len], m.text_pos.weight)
    for i in range(h * w):
        torch.testing.assert_close(x[0, c.text_len + i], m.row_embed[i // w] + m.col_embed[i % w])
    # any slice embeds as in the full sequence (what the cache relies on)
    torch.testing.assert_close(m.embed(seq[:, c.text_len - 3:c.text_len + 5], start=c.text_len - 3),
                               x[:, c.text_len - 3:c.text_len + 5])
    # heads: positions 0..text_len-2 predict text, text_len-1.. predict the image tokens
    tl, il = m(seq[:, :-1])
    assert tl.shape == (1, c.text_len - 1, c.text_vocab) and il.shape == (1, h * w, c.image_vocab)
    tl2, il2 = m(seq[:, c.text_len - 1:-1], start=c.text_len - 1)
    assert tl2 is None and il2.shape == (1, h * w, c.image_vocab)


def test_text_tokens_and_null_condition():
    m = tiny()
    tok = m.tokenizer
    t = m.tokenize(["ab"])[0].tolist()
    assert t[:4] == [tok.bos_id, ord("a"), ord("b"), tok.eos_id] and set(t[4:]) == {tok.pad_id}
    assert m.null_text(2).tolist() == [[tok.bos_id, tok.eos_id] + [tok.pad_id] * (m.config.text_len - 2)] * 2


def test_causal_image_does_not_change_text_logits():
    m = tiny()
    seq = torch.cat([m.tokenize(["a red circle"]), torch.randint(0, 32, (1, 16))], 1)
    other = seq.clone()
    other[0, -5:] = (other[0, -5:] + 1) % 32
    a_t, a_i = m(seq)
    b_t, b_i = m(other)
    torch.testing.assert_close(a_t, b_t)
    torch.testing.assert_close(a_i[:, :-5], b_i[:, :-5])


def test_loss_weights_text_and_image_1_to_7():
    m = tiny()
    loss, logs = m.loss(m.example_batch(4))
    assert loss.item() == pytest.approx((logs["loss_text"] + 7 * logs["loss_image"]) / 8, rel=1e-5)
    # the text loss ignores padding: it equals the cross-entropy over real next tokens only
    b = m.example_batch(4)
    seq = torch.cat([b["text"], b["image_tokens"].flatten(1)], 1)
    tl, _ = m(seq[:, :-1])
    tgt = seq[:, 1:m.config.text_len]
    real = tgt != m.tokenizer.pad_id
    ref = F.cross_entropy(tl[real], tgt[real])
    assert logs["loss_text"] == pytest.approx(ref.item(), rel=1e-5)


def test_condition_dropout_uses_the_null_caption_and_skips_its_text_loss():
    m = tiny(cond_drop=0.999).train()
    torch.manual_seed(0)
    _, logs = m.loss(m.example_batch(2))
    assert logs["loss_text"] == 0.0  # both captions dropped: no text targets
    m.eval()
    _, logs = m.loss(m.example_batch(2))
    assert logs["loss_text"] > 0  # no dropout outside training


def test_overfit_two_captions_then_sample_them():
    """Conditioning works end to end: two captions, two token grids, greedy sampling returns
    the grid of each caption."""
    torch.manual_seed(0)
    m = mmgen.create_model("dalle_tiny", cond_drop=0.0).train()
    text = m.tokenize(["red", "blue"])
    grids = torch.randint(0, 32, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(150):
        loss, _ = m.loss({"text": text, "image_tokens": grids})
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    assert torch.equal(m.sample_tokens(text, temperature=0.0), grids)


# ----------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_cached_sampling_equals_uncached(guidance):
    m = tiny()
    text = m.tokenize(["a red circle", "a blue square", "green"])
    a = m.sample_tokens(text, guidance_scale=guidance, seed=3, top_k=20)
    b = m.sample_tokens(text, guidance_scale=guidance, seed=3, top_k=20, use_cache=False)
    assert torch.equal(a, b)
    # and the cached next-token logits match the full forward at every image position
    seq = torch.cat([text, a.flatten(1)], 1)
    _, full = m(seq[:, :-1])
    cache = m.make_cache(3)
    _, first = m(text, cache=cache)
    steps = [first[:, -1:]] + [m(seq[:, m.config.text_len + i:m.config.text_len + i + 1], cache=cache,
                                 start=m.config.text_len + i)[1] for i in range(15)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_guidance_scale_one_is_plain_conditional_sampling():
    m = tiny()
    text = m.tokenize(["a red circle", "a star"])
    plain = m.sample_tokens(text, guidance_scale=1.0, seed=5)
    with_null = m.sample_tokens(text, guidance_scale=1.0, seed=5, force_null_rows=True)
    assert torch.equal(plain, with_null)
    # guidance 0 is unconditional: the same as sampling the null caption
    uncond = m.sample_tokens(text, guidance_scale=0.0, seed=5)
    assert torch.equal(uncond, m.sample_tokens(m.null_text(2), guidance_scale=1.0, seed=5))
    # the mixing rule itself
    logits = torch.randn(4, 7)
    torch.testing.assert_close(m._guided_logits(logits, 2, 2.5), logits[2:] + 2.5 * (logits[:2] - logits[2:]))


def test_seeded_generation_is_reproducible_and_seeds_differ():
    m = tiny().attach(vq=FakeVQ())
    a, _ = m.generate(["a red circle"], num_images=2, seed=0)
    b, _ = m.generate(["a red circle"], num_images=2, seed=0)
    c, _ = m.generate(["a red circle"], num_images=2, seed=1)
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)


def test_reranking_orders_by_clip_score():
    m = tiny().attach(vq=FakeVQ(), clip=FakeCLIP())
    prompts = ["a red circle", "a blue square"]
    everything, all_scores = m.generate(prompts, num_images=6, num_candidates=6, rerank=False, seed=0)
    best, scores = m.generate(prompts, num_images=2, num_candidates=6, rerank=True, seed=0)
    assert best.shape == (4, 3, 16, 16) and scores.shape == (4,)
    for p in range(2):
        s = all_scores[p * 6:(p + 1) * 6]
        top = s.argsort(descending=True)[:2]
        torch.testing.assert_close(scores[p * 2:(p + 1) * 2], s[top])
        torch.testing.assert_close(best[p * 2:(p + 1) * 2], everything[p * 6:(p + 1) * 6][top])
        assert scores[p * 2] >= scores[p * 2 + 1]
    # the scores are the CLIP score 100 * cos(image, text) of the returned images
    torch.testing.assert_close(scores, m.clip_scores(best, [prompts[0]] * 2 + [prompts[1]] * 2))


# ----------------------------------------------------------------------------- bad input
def trained_tiny() -> DALLE:
    m = tiny()
    m.record_captions(["a red circle above a blue square"])
    m.seen_text[:128] = True  # every ASCII byte seen
    return m.attach(vq=FakeVQ())


def test_prompt_checks():
    m = trained_tiny()
    with pytest.raises(ValueError, match="empty prompt"):
        m.generate(["  "])
    with pytest.raises(ValueError, match=r"is \d+ tokens with BOS/EOS; this model reads at most 16"):
        m.generate(["a red circle above a blue square"])
    with pytest.warns(UserWarning, match="cut to the model's 16"):
        m.generate(["a red circle above a blue square"], truncate=True)
    with pytest.warns(UserWarning, match=r"words never seen in training.*'zebra'"):
        m.generate(["a red zebra"])
    with pytest.raises(ValueError, match="no word this model saw in training"):
        m.generate(["红色的圆"])
    with pytest.raises(ValueError, match="num_candidates"):
        m.generate(["a red circle"], num_images=4, num_candidates=2)
    with pytest.raises(ValueError, match="reranking needs a CLIP"):
        m.generate(["a red circle"], num_images=1, num_candidates=4)
    with pytest.raises(ValueError, match="guidance_scale"):
        m.generate(["a red circle"], guidance_scale=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.generate(["a red circle"])  # known words: no warning


def test_save_load_keeps_vocabulary_and_resolves_helper_paths(tmp_path):
    m = trained_tiny()
    m.config.vq_path = "../vq"
    m.save_pretrained(tmp_path / "dalle")
    loaded = mmgen.load_pretrained(tmp_path / "dalle")
    assert torch.equal(loaded.seen_words, m.seen_words) and bool(loaded.seen_words.any())
    with pytest.raises(FileNotFoundError, match="vq checkpoint '../vq'"):
        loaded.vq
    # a checkpoint of another model where the VQ should be
    tiny().save_pretrained(tmp_path / "vq")
    with pytest.raises(ValueError, match="holds a 'dalle' checkpoint; DALL-E needs a 'vq'"):
        mmgen.load_pretrained(tmp_path / "dalle").vq


# ----------------------------------------------------------------------------- shipped checkpoints + CLI
needs_ckpt = pytest.mark.skipif(not (SHIPPED / "config.json").exists(),
                                reason="checkpoints/dalle_shapes is not shipped in this checkout")


@needs_ckpt
def test_cli_writes_a_png_grid_from_the_shipped_checkpoints(tmp_path):
    from PIL import Image

    from mmgen.cli import main
    out = tmp_path / "grid.png"
    rc = main(["generate", "a red circle above a blue square", "-o", str(out), "-n", "4", "--seed", "1",
               "--candidates", "8", "--model", "dalle"])
    assert rc == 0 and out.is_file()
    img = Image.open(out)
    img.verify()
    img = Image.open(out)
    assert img.format == "PNG" and img.mode == "RGB"
    # 4 images of 32 px in one row, with 2 px padding
    assert img.size == (4 * 32 + 5 * 2, 32 + 2 * 2)


@needs_ckpt
def test_cli_bad_input_gives_messages_not_tracebacks(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "mmgen.cli", "generate", *args, "-o", str(tmp_path / "x.png")],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
    for args, msg in [([""], "empty prompt"), (["红色的圆"], "no word this model saw"),
                      (["a red circle " * 10], "reads at most"),
                      (["a red circle", "--model", str(ROOT / "checkpoints" / "vq_shapes")], "not an image generator")]:
        r = run(*args)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_pruned_bpe_vocabulary_travels_with_the_checkpoint(tmp_path):
    m = tiny(tokenizer="clip_bpe", tokenizer_captions="shapes", text_len=12)
    assert m.config.tokenizer_state["type"] == "clip_bpe" and m.config.text_vocab < 40
    caption = "a magenta triangle right of a cyan cross"  # the longest kind of shapes caption
    ids = m.tokenize([caption])
    assert ids.shape == (1, 12) and int(ids[0, -1]) == m.tokenizer.pad_id  # word-level: fits in 12
    m.save_pretrained(tmp_path / "d")
    loaded = mmgen.load_pretrained(tmp_path / "d")
    assert loaded.config == m.config and torch.equal(loaded.tokenize([caption]), ids)
    with pytest.raises(ValueError, match="tokenizer_captions prunes a clip_bpe"):
        tiny(tokenizer_captions="shapes")


def test_collate_tokenises_captions_and_vq_encodes_images_once():
    vq = FakeVQ()
    m = tiny().attach(vq=vq)
    calls = []
    enc = vq.encode_tokens
    vq.encode_tokens = lambda x: calls.append(len(x)) or enc(x)
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.rand(3, 16, 16, generator=g) * 2 - 1, "caption": c, "label": 0}
             for c in ("a red circle", "a blue square", "a red circle")]
    batch = m.collate(items)
    assert batch["text"].shape == (3, 16) and batch["image_tokens"].shape == (3, 4, 4)
    assert torch.equal(batch["image_tokens"], enc(torch.stack([it["image"] for it in items])))
    again = m.collate(items[::-1])  # memoised: no second VQ call, same tokens
    assert calls == [3] and torch.equal(again["image_tokens"], batch["image_tokens"].flip(0))
    m.train()
    loss, logs = m.loss(batch)
    assert torch.isfinite(loss) and bool(m.seen_words.any())
