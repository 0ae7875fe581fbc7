"""DALL-E: the joint sequence layout, the 1:7 loss, KV-cached vs full sampling, guidance,
CLIP reranking and prompt checks (through DALLEPipeline), save/load with companion paths, and
the CLI on the shipped checkpoints."""
import json
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
from mmgen.pipelines import DALLEPipeline, training_samples
from mmgen.metrics.clip_score import clip_scores
from mmgen.pipelines.base import to_float
from mmgen.pipelines.dalle import guided_logits, sample_image_tokens
from mmgen.text.sampling import SamplingParams, make_generator

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
    assert seq.shape == (1, c.context_length + h * w)
    x = m.embed(seq)  # with zero token embeddings only the positions remain
    torch.testing.assert_close(x[0, :c.context_length], m.text_pos.weight)
    for i in range(h * w):
        torch.testing.assert_close(x[0, c.context_length + i], m.row_embed[i // w] + m.col_embed[i % w])
    # any slice embeds as in the full sequence (what the cache relies on)
    torch.testing.assert_close(m.embed(seq[:, c.context_length - 3:c.context_length + 5], start=c.context_length - 3),
                               x[:, c.context_length - 3:c.context_length + 5])
    # heads: positions 0..context_length-2 predict text, text_len-1.. predict the image tokens
    tl, il = m(seq[:, :-1])
    assert tl.shape == (1, c.context_length - 1, c.text_vocab) and il.shape == (1, h * w, c.image_vocab)
    tl2, il2 = m(seq[:, c.context_length - 1:-1], start=c.context_length - 1)
    assert tl2 is None and il2.shape == (1, h * w, c.image_vocab)


def test_text_tokens_and_null_condition():
    m = tiny()
    tok = m.tokenizer
    t = m.tokenize(["ab"])[0].tolist()
    assert t[:4] == [tok.bos_id, ord("a"), ord("b"), tok.eos_id] and set(t[4:]) == {tok.pad_id}
    assert m.null_text(2).tolist() == [[tok.bos_id, tok.eos_id] + [tok.pad_id] * (m.config.context_length - 2)] * 2


def test_canonical_relations_tokenize_converse_captions_alike():
    a, b = "a red circle below a blue square", "a blue square above a red circle"
    plain, canon = tiny(context_length=40), tiny(context_length=40, canonical_relations=True)
    assert torch.equal(canon.tokenize(a), canon.tokenize([b])) and torch.equal(canon.tokenize(a), plain.tokenize(b))
    assert not torch.equal(plain.tokenize(a), plain.tokenize(b))
    assert torch.equal(canon.tokenize(["a red circle"]), plain.tokenize(["a red circle"]))


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
    tgt = seq[:, 1:m.config.context_length]
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
    assert torch.equal(sample_image_tokens(m, text, params=SamplingParams(temperature=0.0)), grids)


# ----------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_cached_sampling_equals_uncached(guidance):
    m = tiny()
    text = m.tokenize(["a red circle", "a blue square", "green"])
    kw = dict(guidance=guidance, params=SamplingParams(top_k=20))
    a = sample_image_tokens(m, text, generator=make_generator(3), **kw)
    b = sample_image_tokens(m, text, generator=make_generator(3), use_cache=False, **kw)
    assert torch.equal(a, b)
    # and the cached next-token logits match the full forward at every image position
    seq = torch.cat([text, a.flatten(1)], 1)
    _, full = m(seq[:, :-1])
    cache = m.make_cache(3)
    _, first = m(text, cache=cache)
    steps = [first[:, -1:]] + [m(seq[:, m.config.context_length + i:m.config.context_length + i + 1], cache=cache,
                                 start=m.config.context_length + i)[1] for i in range(15)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_guidance_scale_one_is_plain_conditional_sampling():
    m = tiny()
    text = m.tokenize(["a red circle", "a star"])
    def run(t, g, **kw):
        return sample_image_tokens(m, t, guidance=g, generator=make_generator(5), **kw)
    plain = run(text, 1.0)
    with_null = run(text, 1.0, force_null_rows=True)
    assert torch.equal(plain, with_null)
    # guidance 0 is unconditional: the same as sampling the null caption
    assert torch.equal(run(text, 0.0), run(m.null_text(2), 1.0))
    # the mixing rule itself
    logits = torch.randn(4, 7)
    torch.testing.assert_close(guided_logits(logits, 2, 2.5), logits[2:] + 2.5 * (logits[:2] - logits[2:]))


# ----------------------------------------------------------------------------- attribute dropout, composition
ATTRIBUTES = ["red", "green", "blue", "yellow", "magenta", "cyan", "circle", "square", "triangle", "diamond", "cross"]


def composing(**kw) -> DALLE:
    """A tiny DALL-E on the shapes vocabulary (one with an unknown token) that knows its attribute words."""
    torch.manual_seed(0)
    kw = {"attr_words": ATTRIBUTES, **kw}
    return mmgen.create_model("dalle_shapes_32", image_vocab=32, image_grid=(4, 4),
                              block=dict(embed_dim=32, depth=2, num_heads=2), **kw).eval()


def test_dropped_attribute_words_become_one_unknown_token_each():
    m = composing()
    tok = m.tokenizer
    text = m.tokenize(["a cyan circle left of a blue square", "a red cross"])
    assert len(tok.encode("cyan")) == 2  # a word of two tokens: still one <unk> when dropped
    assert [b - a for a, b in m.attribute_spans(text[0].tolist())] == [2, 1, 1, 1]
    assert torch.equal(m.drop_attributes(text, lambda n, k: [True] * k), text)
    dropped = m.drop_attributes(text, lambda n, k: [False] * k)
    words = lambda w: tok.encode(w)  # noqa: E731
    u = [tok.unk_id]
    want = [tok.bos_id, *words("a"), *u, *u, *words("left of"), *words("a"), *u, *u, tok.eos_id]
    assert dropped[0].tolist() == want + [tok.pad_id] * (text.shape[1] - len(want))
    only_first = m.drop_attributes(text, lambda n, k: [i == 0 for i in range(k)])
    assert only_first[0, 1:5].tolist() == [*words("a"), *words("cyan"), tok.unk_id]
    assert only_first[1, 1:4].tolist() == [*words("a"), *words("red"), tok.unk_id]


def test_attribute_dropout_only_in_training_and_keeps_the_rest_of_the_caption():
    m = composing(attr_drop=1.0, cond_drop=0.0)
    tok = m.tokenizer
    caption = "a red circle left of a blue square"
    text = m.tokenize([caption] * 64)
    fed = []
    m.register_forward_pre_hook(lambda mod, args: fed.append(args[0][:, :text.shape[1]].clone()))
    batch = {"text": text, "image_tokens": torch.zeros(64, 4, 4, dtype=torch.long)}
    torch.manual_seed(1)
    m.train().loss(batch)
    rows = fed[-1].tolist()
    kept = [len(m.attribute_spans(r)) for r in rows]
    assert 0 in kept and 4 in kept and len(set(kept)) >= 4  # rates drawn per row: from none to all kept
    skeleton = [t for t in text[0].tolist() if t not in (tok.unk_id, *sum(m._attr_seqs, []))]
    for r, k in zip(rows, kept):
        assert [t for t in r if t not in (tok.unk_id, *sum(m._attr_seqs, []))] == skeleton
        assert r.count(tok.unk_id) == 4 - k
    m.evaluate(batch)
    assert torch.equal(fed[-1], text)  # validation reads the whole caption


def test_composition_rows_weigh_the_product_of_attribute_experts():
    from mmgen.pipelines.dalle import composition_rows
    m = composing()
    text = m.tokenize(["a red circle left of a blue square", "a green cross"])
    rows, weights = composition_rows(m, text)
    assert rows.shape == (5, 2, text.shape[1])
    assert weights[:, 0].tolist() == [-3, 1, 1, 1, 1] and weights[:, 1].tolist() == [-1, 1, 1, 0, 0]
    base = m.drop_attributes(text, lambda n, k: [False] * k)
    assert torch.equal(rows[0], base)
    assert torch.equal(rows[1], m.drop_attributes(text, lambda n, k: [True] + [False] * (k - 1)))
    assert torch.equal(rows[3, 1], base[1]) and torch.equal(rows[4, 1], base[1])  # padding repeats the base
    # the mixing rule: null + s * (sum_g w_g cond_g - null)
    logits, w = torch.randn(3, 7), torch.tensor([[0.5], [2.0]])  # rows [cond_1; cond_2; null], batch 1
    torch.testing.assert_close(guided_logits(logits, 1, 3.0, w),
                               logits[2:] + 3.0 * (0.5 * logits[:1] + 2.0 * logits[1:2] - logits[2:]))


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_composed_sampling_cached_equals_uncached_and_zero_is_plain(guidance):
    m = composing()
    text = m.tokenize(["a red circle left of a blue square", "a green cross", "a yellow diamond"])
    def run(t=text, **kw):
        return sample_image_tokens(m, t, guidance=guidance, generator=make_generator(4), **kw)
    assert torch.equal(run(compose=0.0), run())
    assert torch.equal(run(compose=0.7), run(compose=0.7, use_cache=False))
    # a prompt without attribute words is its own (only) expert: composing changes nothing
    plain = m.tokenize(["a left of a", "a"])
    assert torch.equal(run(plain, compose=1.0), run(plain))


def test_extra_rerankers_join_the_one_at_clip_path():
    assert mmgen.create_model("dalle_tiny", clip_path="a", extra_clip_paths=["b", "c"]).config.extra_clip_paths == ("b", "c")
    with pytest.raises(ValueError, match="extra_clip_paths .*clip_path is empty"):
        mmgen.create_model("dalle_tiny", extra_clip_paths=["clip_shapes_reranker"])


def test_compose_needs_a_model_trained_with_attribute_dropout():
    with pytest.raises(ValueError, match="attr_words"):
        sample_image_tokens(tiny(), tiny().tokenize(["a red circle"]), compose=0.5)
    with pytest.raises(ValueError, match="attr_drop .*needs attr_words"):
        mmgen.create_model("dalle_tiny", attr_drop=0.5)
    with pytest.raises(ValueError, match="compose .*needs attr_words"):
        mmgen.create_model("dalle_tiny", compose=0.5)
    with pytest.raises(ValueError, match="'purple' is not in"):
        composing(attr_words=["red", "purple"])
    pipe = DALLEPipeline(composing(), vq=FakeVQ())
    with pytest.raises(ValueError, match=r"compose must be in \[0, 1\]"):
        pipe(["a red circle"], num_images=1, compose=1.5)
    with pytest.raises(ValueError, match="without attribute dropout"):
        DALLEPipeline(tiny(), vq=FakeVQ())(["a red circle"], num_images=1, compose=0.5)


def test_seeded_generation_is_reproducible_and_seeds_differ():
    pipe = DALLEPipeline(tiny(), vq=FakeVQ())
    a = pipe(["a red circle"], num_images=2, seed=0)
    b = pipe(["a red circle"], num_images=2, seed=0)
    c = pipe(["a red circle"], num_images=2, seed=1)
    assert a.images.shape == (1, 2, 3, 16, 16) and a.images.dtype == torch.uint8 and a.scores is None
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    d = pipe(["a red circle"], num_images=2)  # seed=None draws a seed and reports it: it reproduces the images
    assert isinstance(d.seed, int) and torch.equal(pipe(["a red circle"], num_images=2, seed=d.seed).images, d.images)


def test_reranking_orders_by_clip_score():
    pipe = DALLEPipeline(tiny(), vq=FakeVQ(), clip=FakeCLIP())
    prompts = ["a red circle", "a blue square"]
    every = pipe(prompts, num_images=6, candidates=1, rerank=False, seed=0)  # the same 6 draws per prompt ...
    best = pipe(prompts, num_images=2, candidates=3, rerank=True, seed=0)  # ... the best 2 of them
    assert best.images.shape == (2, 2, 3, 16, 16) and best.scores.shape == (2, 2)
    for p in range(2):
        top = every.scores[p].argsort(descending=True)[:2]
        torch.testing.assert_close(best.scores[p], every.scores[p, top])
        assert torch.equal(best.images[p], every.images[p, top])
        assert best.scores[p, 0] >= best.scores[p, 1]
    # the scores are the CLIP score 100 * cos(image, text) of the returned images (up to uint8 rounding)
    ref = clip_scores(FakeCLIP(), to_float(best.images.flatten(0, 1)), [prompts[0]] * 2 + [prompts[1]] * 2)
    torch.testing.assert_close(best.scores.flatten(), ref, atol=0.5, rtol=0)


# ----------------------------------------------------------------------------- bad input
def trained_tiny() -> DALLEPipeline:
    m = tiny()
    m.record_captions(["a red circle above a blue square"])
    return DALLEPipeline(m, vq=FakeVQ())


def test_prompt_checks():
    pipe = trained_tiny()
    with pytest.raises(ValueError, match="empty prompt"):
        pipe(["  "])
    with pytest.raises(ValueError, match=r"is \d+ tokens with BOS/EOS; the DALL-E generator reads at most 16"):
        pipe(["a red circle above a blue square"])
    out = pipe(["a red circle above a blue square"], truncate=True)
    assert any("cut to the 16" in w for w in out.warnings)
    out = pipe(["a red zebra"])
    assert out.warnings == ["prompt 'a red zebra': 'zebra' is not in the vocabulary of the DALL-E generator; "
                            "it will likely be ignored"]
    with pytest.raises(ValueError, match="has no word the DALL-E generator can read"):
        pipe(["红色的圆"])
    with pytest.raises(ValueError, match="no CLIP reranker"):
        pipe(["a red circle"], num_images=1, candidates=4)
    for bad in ({"guidance": -1.0}, {"guidance": float("nan")}, {"guidance": float("inf")}, {"num_images": 0},
                {"candidates": 0}, {"temperature": float("nan")}, {"top_p": 1.5}, {"top_k": -1}):
        with pytest.raises(ValueError):
            pipe(["a red circle"], **bad)
    with pytest.raises(TypeError, match="diffusion"):
        pipe(["a red circle"], scheduler="ddim")
    # known words, and punctuation the tokenizer reads: no warning
    assert pipe(["a red circle."]).warnings == [] and pipe.check_prompts(["a red circle"]) == []


def test_bad_arguments_are_refused_before_any_work(monkeypatch):
    pipe = trained_tiny()
    monkeypatch.setattr(DALLEPipeline, "_generate", lambda *a, **k: pytest.fail("sampled before checking"))
    for bad in ({"guidance": float("nan")}, {"num_images": 0}, {"candidates": 0}, {"guidance": -0.5}):
        with pytest.raises(ValueError):
            pipe(["a red circle"], **bad)


def test_save_load_keeps_vocabulary_and_resolves_helper_paths(tmp_path):
    m = trained_tiny().model
    m.config.vq_path = "../vq"
    m.save_pretrained(tmp_path / "dalle")
    loaded = mmgen.load_pretrained(tmp_path / "dalle")
    assert loaded.caption_words == m.caption_words and {"red", "circle"} <= loaded.caption_words
    from safetensors import safe_open
    with safe_open(str(tmp_path / "dalle" / "model.safetensors"), "pt") as f:  # metadata, not weights
        assert not any("seen_words" in k or "extra_state" in k for k in f.keys())
    assert "red" in json.loads((tmp_path / "dalle" / "extra_state.json").read_text())["_extra_state"]["caption_words"]
    with pytest.raises(FileNotFoundError, match="vq checkpoint '../vq'"):
        loaded.vq
    with pytest.raises(FileNotFoundError, match="vq checkpoint '../vq'"):
        DALLEPipeline.from_pretrained(tmp_path / "dalle")
    # a checkpoint of another model where the VQ should be
    tiny().save_pretrained(tmp_path / "vq")
    with pytest.raises(ValueError, match="holds a 'dalle' checkpoint; DALL-E needs a 'vq'"):
        DALLEPipeline.from_pretrained(tmp_path / "dalle")


# ----------------------------------------------------------------------------- shipped checkpoints + CLI
needs_ckpt = pytest.mark.skipif(not (SHIPPED / "config.json").exists(),
                                reason="checkpoints/dalle_shapes is not shipped in this checkout")


@needs_ckpt
def test_cli_writes_a_png_grid_from_the_shipped_checkpoints(tmp_path, capsys):
    from PIL import Image

    from mmgen.cli import main
    out, raw = tmp_path / "grid.png", tmp_path / "raw.png"
    args = ["generate", "a red circle above a blue square", "-n", "2", "--seed", "1", "--candidates", "1",
            "--model", "dalle", "--quiet"]
    assert main([*args, "-o", str(out)]) == 0 and out.is_file()
    assert "seed 1" in capsys.readouterr().out
    img = Image.open(out)
    img.verify()
    img = Image.open(out)
    assert img.format == "PNG" and img.mode == "RGB"
    # 2 images of 32 px in one row, 2 px padding, upscaled 8x; a caption line and a score line
    assert img.size == ((2 * 32 + 3 * 2) * 8, (32 + 2 * 2) * 8 + 2 * 14)
    assert main([*args, "-o", str(raw), "--raw"]) == 0
    assert Image.open(raw).size == (2 * 32 + 3 * 2, 32 + 2 * 2)  # the model's own pixels
    # the same seed gives the same images, upscaled or not
    small = torch.tensor(__import__("numpy").array(Image.open(raw)))
    big = torch.tensor(__import__("numpy").array(Image.open(out)))
    assert torch.equal(big[16 + 14 + 4:16 + 14 + 4 + 256:8, 16 + 4:16 + 256:8], small[2:34, 2:34])


@needs_ckpt
def test_cli_bad_input_gives_messages_not_tracebacks(tmp_path, capsys):
    from mmgen.cli import main
    out = str(tmp_path / "x.png")
    for args, msg in [([""], "empty prompt"), (["红色的圆"], "no word the DALL-E generator"),
                      (["a red circle " * 10], "reads at most"),
                      (["a red circle", "--model", str(ROOT / "checkpoints" / "vq_shapes")], "not an image generator"),
                      (["a red circle", "--steps", "5"], "diffusion options")]:
        assert main(["generate", *args, "-o", out]) == 2, args
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (args, err)
    # unseen words: a clean warning line naming the word and the model part, and the PNG is still written
    assert main(["generate", "a red zebra", "-o", out, "-n", "1", "--candidates", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: prompt 'a red zebra': 'zebra' is not in the vocabulary of the DALL-E generator" in err
    assert Path(out).is_file()
    # end to end in a fresh process: the message, exit status 2, no traceback
    r = subprocess.run([sys.executable, "-m", "mmgen.cli", "generate", "", "-o", out], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "empty prompt" in r.stderr and "Traceback" not in r.stderr


def test_pruned_bpe_vocabulary_travels_with_the_checkpoint(tmp_path):
    m = tiny(tokenizer="clip_bpe", tokenizer_captions="shapes", context_length=12)
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
    assert torch.isfinite(loss) and {"red", "circle", "blue", "square"} <= m.caption_words


def test_augmented_training_images_shift_before_the_vq():
    """augment="crop": in training mode the images reach the VQ shifted (other token grids);
    in eval mode (validation, sampling) as they are."""
    vq = FakeVQ()
    g = torch.Generator().manual_seed(0)
    image = torch.zeros(3, 16, 16)
    image[:, :, :8] = torch.rand(3, 1, 1, generator=g) * 2 - 1  # left half one colour, right half black
    items = [{"image": image, "caption": "a red circle"}] * 16
    m = tiny(augment="crop", augment_pad=4).attach(vq=vq)
    plain = vq.encode_tokens(image[None])
    assert all(torch.equal(t, plain[0]) for t in m.eval().collate(items)["image_tokens"])
    torch.manual_seed(0)
    shifted = m.train().collate(items)["image_tokens"]
    assert any(not torch.equal(t, plain[0]) for t in shifted)
    with pytest.raises(ValueError, match="augment must be one of"):
        tiny(augment="rotate")


def test_training_sample_grid_hook_draws_through_the_pipeline():
    m = tiny().attach(vq=FakeVQ()).train()
    images = training_samples(m, 6, seed=0)
    assert images.shape == (6, 3, 16, 16) and m.training  # the model's mode is left as it was
    assert torch.equal(images, training_samples(m, 6, seed=0))


def test_older_checkpoint_keeps_its_hashed_vocabulary(tmp_path):
    """A checkpoint of an older version holds the hashed `seen_words` bitmap in its weights
    (and no extra_state.json): it loads as metadata, answers as before, and a re-save moves
    it to extra_state.json."""
    from safetensors.torch import load_file, save_file

    from mmgen.models.dalle import WORD_BUCKETS, word_bucket
    tiny().save_pretrained(tmp_path / "old")
    (tmp_path / "old" / "extra_state.json").unlink(missing_ok=True)
    weights = load_file(str(tmp_path / "old" / "model.safetensors"))
    bitmap = torch.zeros(WORD_BUCKETS, dtype=torch.bool)
    for w in ("red", "heart", "face"):
        bitmap[word_bucket(w)] = True
    save_file({**weights, "seen_words": bitmap}, str(tmp_path / "old" / "model.safetensors"))
    m = mmgen.load_pretrained(tmp_path / "old")
    assert m.legacy_word_buckets == set(bitmap.nonzero().flatten().tolist())
    for w in ("red", "heart", "face", "zebra", "xylophone"):
        assert m.saw_word(w) == bool(bitmap[word_bucket(w)]), w
    assert m.saw_word("heart") and not m.saw_word("xylophone")
    m.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "extra_state.json").is_file()
    again = mmgen.load_pretrained(tmp_path / "again")
    assert again.legacy_word_buckets == m.legacy_word_buckets and again.saw_word("heart")


def test_older_state_dict_with_the_bitmap_loads_strictly():
    """A training state written before the caption words left the weights (the `seen_words`
    bitmap, no extra state) still loads with strict=True, as --resume does."""
    from mmgen.models.dalle import WORD_BUCKETS, word_bucket
    m = mmgen.create_model("dalle_tiny")
    old = {k: v for k, v in m.state_dict().items() if not k.endswith("_extra_state")}
    bitmap = torch.zeros(WORD_BUCKETS, dtype=torch.bool)
    bitmap[word_bucket("circle")] = True
    old["seen_words"] = bitmap
    fresh = mmgen.create_model("dalle_tiny")
    fresh.load_state_dict(old, strict=True)
    assert fresh.saw_word("circle") and not fresh.saw_word("xylophone")
    torch.testing.assert_close(fresh.state_dict()["text_embed.weight"], m.state_dict()["text_embed.weight"])
