"""Two-stage DALL-E sampling: a layout DALL-E draws the first code of every image token (the
palette tokenizer's silhouette) from the prompt without its colour words; a factorised DALL-E
then draws only the remaining codes (the colours) given those. Captions that ignore words,
sampling with fixed first codes (cached = full forward), the layout's checks, and the pipeline
end to end with save / load."""
import json

import pytest
import torch

import mmgen
from mmgen.models.palette import PaletteConfig, PaletteTokenizer
from mmgen.pipelines.dalle import DALLEPipeline, sample_image_tokens
from mmgen.text.sampling import SamplingParams, make_generator

GRID = [8, 8]  # palette_tiny: 16 px, 2x2-pixel patches
FACTORS = [8, 3]  # its 8 silhouettes x 3 colours


def _factored(**kw):
    torch.manual_seed(0)
    return mmgen.create_model("dalle_tiny", image_grid=GRID, image_vocab=24, image_factors=FACTORS, context_length=48, **kw).eval()


def _layout(**kw):
    torch.manual_seed(1)
    return mmgen.create_model("dalle_tiny", image_grid=GRID, image_vocab=8, ignore_words=["red", "blue"], context_length=48,
                             **kw).eval()


def test_ignored_words_are_never_read():
    m = _layout()
    assert torch.equal(m.tokenize("a red circle"), m.tokenize("a circle"))
    assert torch.equal(m.tokenize(["a Blue square left of a RED circle"]), m.tokenize(["a square left of a circle"]))
    assert not torch.equal(m.tokenize("a reddish circle"), m.tokenize("a circle"))  # whole words only
    with pytest.raises(ValueError, match="ignore_words must be single words"):
        mmgen.create_model("dalle_tiny", ignore_words=["light blue"])
    with pytest.raises(ValueError, match="layout_path='x' draws each image token's first code.*set image_factors"):
        mmgen.create_model("dalle_tiny", layout_path="x")


def test_fixed_first_codes_are_kept_and_the_cache_matches_the_full_forward():
    m = _factored()
    text = m.tokenize(["a red circle", "a blue square"])
    first = torch.randint(0, FACTORS[0], (2, *GRID), generator=torch.Generator().manual_seed(0))
    kw = dict(guidance=1.5, params=SamplingParams(top_k=2), first_codes=first)
    a = sample_image_tokens(m, text, generator=make_generator(3), **kw)
    b = sample_image_tokens(m, text, generator=make_generator(3), use_cache=False, **kw)
    assert torch.equal(a, b)
    assert torch.equal(a // FACTORS[1], first)  # every silhouette as given
    assert len(torch.unique(a % FACTORS[1])) > 1  # the colours are drawn, not fixed
    with pytest.raises(ValueError, match=r"first_codes must be \(2, 8, 8\)"):
        sample_image_tokens(m, text, first_codes=first[:1])
    plain = mmgen.create_model("dalle_tiny", image_grid=GRID, image_vocab=24)
    with pytest.raises(ValueError, match="this DALL-E has none"):
        sample_image_tokens(plain, plain.tokenize(["a"]), first_codes=first[:1])
    with pytest.raises(ValueError, match="layout_text needs a DALL-E with a layout model"):
        sample_image_tokens(m, text, layout_text=text)


def test_a_layout_must_draw_the_first_code_on_the_same_grid():
    m = _factored()
    with pytest.raises(ValueError, match=r"draws \(8, 8\) grids of 24 ids; this DALL-E needs \(8, 8\) grids of its "
                                         r"first code's 8 ids"):
        m.attach(layout=mmgen.create_model("dalle_tiny", image_grid=GRID, image_vocab=24))
    with pytest.raises(ValueError, match="a layout must be a DALL-E"):
        m.attach(layout=PaletteTokenizer(PaletteConfig(img_size=16, silhouettes=8, colours=3)))
    with pytest.raises(ValueError, match="a layout must be a DALL-E, for a DALL-E with factorised image ids"):
        mmgen.create_model("dalle_tiny", image_grid=GRID, image_vocab=24).attach(layout=_layout())
    assert m.attach(layout=_layout()).layout is not None


def test_the_pipeline_draws_the_layout_then_the_colours(tmp_path):
    palette = PaletteTokenizer(PaletteConfig(img_size=16, silhouettes=8, colours=3))
    palette.silhouette_codes.copy_(torch.linspace(0, 1, 8)[:, None].expand(8, 4))
    palette.colour_codes.copy_(torch.eye(3))
    palette.save_pretrained(tmp_path / "palette")
    _layout(guidance_scale=2.5, top_k=2).save_pretrained(tmp_path / "layout")  # its own sampling settings
    m = _factored(vq_path=str(tmp_path / "palette"), layout_path=str(tmp_path / "layout"), guidance_scale=1.5)
    m.save_pretrained(tmp_path / "dalle")
    assert json.loads((tmp_path / "dalle" / "config.json").read_text())["config"]["layout_path"] == "../layout"

    pipe = DALLEPipeline.from_pretrained(tmp_path / "dalle")
    layout = pipe.model.layout
    assert layout is not None and layout.config.ignore_words == ("red", "blue")
    prompts = ["a red circle", "a blue square left of a red circle"]
    out = pipe(prompts, num_images=2, seed=5, candidates=1, progress=False)
    assert out.images.shape == (2, 2, 3, 16, 16)
    again = pipe(prompts, num_images=2, seed=5, candidates=1, progress=False)
    assert torch.equal(out.images, again.images)
    # the same draw by hand: the layout from the colourless prompt, then the colours given it
    model = pipe.model
    text = model.tokenize(prompts).repeat_interleave(2, 0)
    layout_text = layout.tokenize(prompts).repeat_interleave(2, 0)
    assert torch.equal(layout_text[0], layout.tokenize(["a circle"])[0])
    from mmgen.pipelines.base import to_float
    # each stage samples with its own checkpoint's settings; what the caller passes sets both stages
    for given, layout_guidance in (({}, 2.5), ({"guidance": 1.5}, 1.5)):
        tokens = sample_image_tokens(model, text, guidance=1.5, generator=make_generator(5), layout_text=layout_text,
                                     layout_guidance=layout_guidance, layout_params=SamplingParams(top_k=2))
        silhouettes = sample_image_tokens(layout, layout_text, guidance=layout_guidance,
                                          params=SamplingParams(top_k=2), generator=make_generator(5))
        assert torch.equal(tokens // FACTORS[1], silhouettes)
        want = palette.decode_tokens(tokens)
        got = pipe(prompts, num_images=2, seed=5, candidates=1, progress=False, **given).images
        torch.testing.assert_close(to_float(got.flatten(0, 1)), want, atol=1 / 127.5 + 1e-6, rtol=0)
    assert not torch.equal(out.images, pipe(prompts, num_images=2, seed=5, candidates=1, progress=False,
                                            guidance=1.5).images)
    assert pipe.estimate_seconds(2, 2) > 0


def test_colour_stage_script_paints_true_outlines(tmp_path, capsys):
    """scripts/colour_stage.py: real scenes' outlines fixed, the colours drawn, one JSON line per group."""
    import runpy
    from pathlib import Path
    torch.manual_seed(0)
    m = mmgen.create_model("dalle_tiny", image_grid=[16, 16], image_vocab=384, image_factors=[64, 6],
                           context_length=48)
    m.save_pretrained(tmp_path / "colours")
    script = Path(__file__).resolve().parents[1] / "scripts" / "colour_stage.py"
    main = runpy.run_path(str(script))["main"]
    assert main([str(tmp_path / "colours"), "--n", "1", "--groups", "one", "two", "--log", str(tmp_path / "log")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["group"] for r in rows] == ["one", "two"] and all(0 <= r["correct"] <= 1 for r in rows)
    assert len((tmp_path / "log").read_text().splitlines()) == 2
    plain = mmgen.create_model("dalle_tiny", image_grid=[16, 16], image_vocab=384)
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(SystemExit, match=r"factorised as \[\], the tokenizer's as \[64, 6\]"):
        main([str(tmp_path / "plain"), "--n", "1", "--groups", "one"])


def test_shapes_fidelity_sets_the_outline_stage_alone(monkeypatch, capsys):
    """scripts/shapes_fidelity.py --layout-set: the outline stage's own sampling defaults, for the
    measurement only; the colour stage keeps its own; bad keys and values fail before sampling."""
    import runpy
    from pathlib import Path

    import mmgen.pipelines.dalle as dalle_pipeline
    script = Path(__file__).resolve().parents[1] / "scripts" / "shapes_fidelity.py"
    main = runpy.run_path(str(script))["main"]
    seen = []

    class Sampled(Exception):  # stop at the first sampling call: what it was given is the test
        pass

    def spy(model, text, **kw):
        seen.append((kw["guidance"], kw["params"].top_k, kw["layout_guidance"], kw["layout_params"].top_k))
        painted.append(model.config.one_colour_per_object)
        raise Sampled

    painted = []

    monkeypatch.setattr(dalle_pipeline, "sample_image_tokens", spy)
    args = ["--model", "dalle_shapes", "--n", "1", "--groups", "one", "--split", "val"]
    with pytest.raises(Sampled):
        main(args + ["--layout-set", "top_k=8", "--layout-set", "guidance_scale=2"])
    assert seen == [(1.25, 4, 2.0, 8)]  # the colour stage keeps its checkpoint's guidance 1.25, top-k 4
    with pytest.raises(Sampled):
        main(args)
    assert seen[1] == (1.25, 4, 1.25, 4)  # the shipped outline stage's own defaults
    for bad, message in ((["--layout-set", "depth=2"], "--layout-set takes guidance_scale, temperature, top_k, "
                                                       "top_p, got depth"),
                         (["--layout-set", "top_k=-1"], "top_k must be a positive integer"),
                         (["--model", "dalle_emoji", "--layout-set", "top_k=8"], "'dalle_emoji' has none")):
        with pytest.raises(SystemExit):
            main(args + bad)
        assert message in capsys.readouterr().err
    for value in (False, True):  # --set: the colour stage's own defaults
        with pytest.raises(Sampled):
            main(args + ["--set", f"one_colour_per_object={str(value).lower()}", "--set", "top_k=2"])
        assert painted[-1] is value and seen[-1][1:] == (2, 1.25, 4)
    with pytest.raises(SystemExit):
        main(args + ["--set", "depth=2"])
    assert "--set takes guidance_scale, temperature, top_k, top_p, one_colour_per_object, got depth" in \
        capsys.readouterr().err
    for bad, message in ((["--set", "one_colour_per_object=yes"], "one_colour_per_object must be true or false"),
                         (["--model", "dalle_emoji", "--set", "one_colour_per_object=true"],
                          "image ids are not factorised")):
        with pytest.raises(SystemExit):
            main(args + bad)
        assert message in capsys.readouterr().err


def test_one_colour_per_object_paints_each_object_one_colour(tmp_path):
    """config one_colour_per_object: every token of an object of the given outline (the
    tokenizer's object_regions) gets the colour its first token drew; without it a random
    colour stage mixes colours inside an object (the test can fail)."""
    palette = PaletteTokenizer(PaletteConfig(img_size=16, silhouettes=8, colours=3))
    palette.silhouette_codes.copy_(torch.linspace(0, 1, 8)[:, None].expand(8, 4))  # code k: every pixel k / 7
    palette.colour_codes.copy_(torch.eye(3))
    first = torch.zeros(2, *GRID, dtype=torch.long)
    first[:, 1:4, 1:5] = 7  # an object of 12 tokens
    first[:, 5:8, 3:7] = 6  # a second, not touching it
    first[:, 1, 6] = 2  # a faint token (under half covered): no object, free
    first[1, 5, 3] = 5
    regions = palette.object_regions(first)
    assert len(regions[0].unique()) == 3 and int(regions[0, 1, 6]) == -1
    m = _factored()
    m.attach(vq=palette)
    text = m.tokenize(["a red circle", "a blue square"])
    kw = dict(guidance=1.5, params=SamplingParams(top_k=3), first_codes=first)
    free = sample_image_tokens(m, text, generator=make_generator(0), **kw)

    def colours_per_object(tokens):
        return [len((tokens[b] % FACTORS[1])[regions[b] == k].unique()) for b in range(2)
                for k in regions[b].unique().tolist() if k >= 0]

    assert max(colours_per_object(free)) > 1
    m.config.one_colour_per_object = True
    painted = sample_image_tokens(m, text, generator=make_generator(0), **kw)
    assert colours_per_object(painted) == [1, 1, 1, 1]
    assert torch.equal(painted // FACTORS[1], first)
    assert torch.equal(painted, sample_image_tokens(m, text, generator=make_generator(0), use_cache=False, **kw))
    assert len((painted % FACTORS[1]).unique()) > 1  # the objects' colours are still drawn
    with pytest.raises(ValueError, match="one_colour_per_object paints the objects of given first codes"):
        mmgen.create_model("dalle_tiny", image_grid=GRID, image_vocab=24, one_colour_per_object=True)
