"""The factorised palette tokenizer (mmgen.models.palette) and the factorised embedding / head
a DALL-E reads its tokens with (mmgen.layers): lossless round trips of shapes scenes by the
strict checker, one silhouette code for an outline in every colour, save/load, bad input, and
a factorised DALL-E whose cached sampling equals the full forward."""
import pytest
import torch
import torch.nn.functional as F

import mmgen
from mmgen.data import shapes as S
from mmgen.layers import FactorisedEmbedding, FactorisedHead
from mmgen.models.palette import PaletteConfig, PaletteTokenizer, kmeans


def _images(objects_list):
    """[[(colour, shape, x, y, size), ...], ...] -> rendered images (N, 3, 32, 32) in [-1, 1]."""
    return torch.stack([S._to_float(S.render([dict(zip(("colour", "shape", "x", "y", "size"), o)) for o in objs]))
                        for objs in objects_list])


@pytest.fixture(scope="module")
def fitted():
    ds = S.ShapesDataset("train", holdout="default", length=300)
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    return PaletteTokenizer.fit(images, PaletteConfig(silhouettes=64, colours=6))


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.0, 9.0]])
    x = torch.cat([c + 0.1 * torch.randn(200, 2, generator=g) for c in centres])
    found = kmeans(x, 3)
    d = torch.cdist(found, centres)
    assert sorted(d.argmin(1).tolist()) == [0, 1, 2] and float(d.min(1).values.max()) < 0.05
    with pytest.raises(ValueError, match="at least k=3 points"):
        kmeans(x[:2], 3)


def test_fit_finds_the_six_colours_and_scenes_survive_the_round_trip(fitted):
    palette = torch.tensor(S._PALETTE)
    assert float(torch.cdist(fitted.colour_codes, palette).min(1).values.max()) < 0.02
    assert float(torch.cdist(palette, fitted.colour_codes).min(1).values.max()) < 0.02
    for split in ("test", "heldout_test"):  # the held-out pairs too: the tokenizer never saw them
        ds = S.ShapesDataset(split, holdout="default", length=120)
        images = torch.stack([ds[i]["image"] for i in range(len(ds))])
        tokens = fitted.encode_tokens(images)
        assert tokens.shape == (120, 16, 16) and tokens.dtype == torch.long
        rec = fitted.decode_tokens(tokens)
        assert rec.shape == images.shape and float(rec.min()) >= -1 and float(rec.max()) <= 1
        checks = [S.check(r, ds.scene(i)[2]) for i, r in enumerate(rec)]
        assert all(c["correct"] for c in checks), split
        assert float(mmgen.models.autoencoder.psnr(rec, images).mean()) > 35
        # encoding the decoded image finds the same silhouettes (colour codes may differ only where
        # nothing is drawn: a faint patch just below the object threshold)
        again = fitted.encode_tokens(rec)
        K = fitted.config.colours
        assert torch.equal(again // K, tokens // K)
        torch.testing.assert_close(fitted.decode_tokens(again), rec, atol=0.2, rtol=0)


def test_an_outline_has_the_same_silhouette_codes_in_every_colour(fitted):
    """The point of the factorisation: a red circle and a blue circle differ only in colour codes."""
    red, blue = _images([[("red", "circle", 8, 8, 12)], [("blue", "circle", 8, 8, 12)]])[:, None].unbind(0)
    a, b = fitted.encode_tokens(red), fitted.encode_tokens(blue)
    K = fitted.config.colours
    assert torch.equal(a // K, b // K)
    assert (a % K != b % K).all()  # every patch, background included, names its nearest object's colour
    # the colour code of the background is the nearest object's: two objects split the image
    two = _images([[("red", "square", 2, 10, 8), ("green", "cross", 21, 10, 9)]])
    colours = fitted.colour_codes[fitted.encode_tokens(two)[0] % K]  # (16, 16, 3)
    assert torch.allclose(colours[8, 0], torch.tensor([1.0, 0.0, 0.0]), atol=0.02)
    assert torch.allclose(colours[8, 15], torch.tensor([0.0, 1.0, 0.0]), atol=0.02)


def test_save_load_round_trip_and_bad_input(fitted, tmp_path):
    fitted.save_pretrained(tmp_path / "pal")
    loaded = mmgen.load_pretrained(tmp_path / "pal")
    assert isinstance(loaded, PaletteTokenizer) and loaded.factors == fitted.factors == (64, 6)
    assert loaded.vocab_size == loaded.codebook_size == 384 and loaded.token_shape == (16, 16)
    x = _images([[("yellow", "triangle", 5, 5, 12)]])
    assert torch.equal(loaded.encode_tokens(x), fitted.encode_tokens(x))
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 32, 32\)"):
        fitted.encode_tokens(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="nan or inf"):
        fitted.encode_tokens(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 384\)"):
        fitted.decode_tokens(torch.full((1, 16, 16), 384))
    with pytest.raises(ValueError, match=r"expected token ids \(B, 16, 16\)"):
        fitted.decode_tokens(torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="patch must divide img_size"):
        PaletteConfig(img_size=32, patch=3)
    with pytest.raises(TypeError, match="not trained by gradients"):
        fitted.loss({"image": x})


def test_factorised_embedding_and_head_are_sums_over_the_codes():
    torch.manual_seed(0)
    emb, head = FactorisedEmbedding((4, 3, 2), 8), FactorisedHead(8, (4, 3, 2))
    ids = torch.arange(24)
    a, b, c = ids // 6, ids // 2 % 3, ids % 2  # mixed radix, most significant first
    want = emb.tables[0](a) + emb.tables[1](b) + emb.tables[2](c)
    torch.testing.assert_close(emb(ids), want)
    h = torch.randn(5, 8)
    logits = head(h)  # (5, 24)
    parts = [hd(h) for hd in head.heads]
    torch.testing.assert_close(logits, parts[0][:, a] + parts[1][:, b] + parts[2][:, c])
    # the joint softmax is the product of the per-code softmaxes: cross-entropies add up
    tgt = torch.tensor([0, 7, 13, 22, 23])
    joint = F.cross_entropy(logits, tgt, reduction="none")
    per_code = sum(F.cross_entropy(p, d, reduction="none")
                   for p, d in zip(parts, (tgt // 6, tgt // 2 % 3, tgt % 2)))
    torch.testing.assert_close(joint, per_code)


def test_factorised_dalle_trains_and_samples_with_the_cache(fitted):
    from mmgen.pipelines.dalle import sample_image_tokens
    from mmgen.text.sampling import SamplingParams, make_generator
    torch.manual_seed(0)
    m = mmgen.create_model("dalle_tiny", image_grid=[16, 16], image_vocab=384, image_factors=[64, 6], context_length=48)
    m.attach(vq=fitted)
    assert isinstance(m.image_embed, FactorisedEmbedding) and isinstance(m.image_head, FactorisedHead)
    ds = S.ShapesDataset("train", holdout="default", length=4)
    batch = m.train().collate([ds[i] for i in range(4)])
    loss, _ = m.loss(batch)
    loss.backward()
    assert all(p.grad is not None for p in m.image_head.parameters())
    m.eval()
    text = m.tokenize(["a red circle", "a blue square"])
    kw = dict(guidance=1.5, params=SamplingParams(top_k=20))
    a = sample_image_tokens(m, text, generator=make_generator(1), **kw)
    b = sample_image_tokens(m, text, generator=make_generator(1), use_cache=False, **kw)
    assert torch.equal(a, b) and a.shape == (2, 16, 16)
    assert fitted.decode_tokens(a).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"image_factors \[64, 5\] multiply to 320, image_vocab is 384"):
        mmgen.create_model("dalle_tiny", image_grid=[16, 16], image_vocab=384, image_factors=[64, 5])
    plain = mmgen.create_model("dalle_tiny", image_grid=[16, 16], image_vocab=384, image_factors=[6, 64])
    with pytest.raises(ValueError, match=r"factorised as \[6, 64\], the tokenizer.s codes factor as \[64, 6\]"):
        plain.attach(vq=fitted)


def _bfs_regions(mask, connectivity):
    """Reference labelling: breadth-first search, each region labelled by its smallest flat index."""
    h, w = mask.shape
    out = -torch.ones(h, w, dtype=torch.long)
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)] + ([(1, 1), (1, -1), (-1, 1), (-1, -1)] if connectivity == 8 else [])
    for y0 in range(h):
        for x0 in range(w):
            if not mask[y0, x0] or out[y0, x0] >= 0:
                continue
            out[y0, x0], todo = y0 * w + x0, [(y0, x0)]
            while todo:
                y, x = todo.pop()
                for dy, dx in steps:
                    v, u = y + dy, x + dx
                    if 0 <= v < h and 0 <= u < w and mask[v, u] and out[v, u] < 0:
                        out[v, u] = y0 * w + x0
                        todo.append((v, u))
    return out


@pytest.mark.parametrize("connectivity", [4, 8])
def test_grid_components_match_a_breadth_first_search(connectivity):
    from mmgen.models.palette import grid_components
    mask = torch.rand(6, 9, 11, generator=torch.Generator().manual_seed(connectivity)) < 0.45
    got = grid_components(mask, connectivity)
    assert torch.equal(got, torch.stack([_bfs_regions(m, connectivity) for m in mask]))
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        grid_components(mask, 6)
    with pytest.raises(ValueError, match=r"bool \(B, h, w\)"):
        grid_components(mask.float(), 4)


def test_object_regions_are_the_objects_of_real_scenes():
    """The shipped tokenizer's object_regions on 200 test scenes: one region per object, and every
    token of a region has that object's colour code (what one_colour_per_object relies on)."""
    from pathlib import Path
    tok = mmgen.load_pretrained(Path(__file__).resolve().parents[1] / "checkpoints" / "palette_shapes")
    ds = S.ShapesDataset("test", length=200)
    tokens = tok.encode_tokens(torch.stack([ds[i]["image"] for i in range(len(ds))]))
    colours = tok.factors[1]
    regions = tok.object_regions(tokens // colours)
    for i in range(len(ds)):
        labels = regions[i].unique()
        labels = labels[labels >= 0]
        assert len(labels) == len(ds.scene(i)[0])
        assert all(len((tokens[i] % colours)[regions[i] == k].unique()) == 1 for k in labels)
    with pytest.raises(ValueError, match=r"silhouette codes \(B, 16, 16\)"):
        tok.object_regions(tokens[0])
