"""Config fields: every checkpoint in checkpoints/ loads and gives the outputs it gave before
config fields were renamed (old names in its config.json are mapped when it is read; the
reference numbers were computed by `outputs()` below on the code before the rename); old
names in overrides map with a warning; models never mutate the config they are given."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import mmgen

ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
PROMPTS = ["a red circle", "a blue square above a green triangle"]


def _summary(t: torch.Tensor) -> list[float]:
    t = t.detach().double().flatten()
    return [float(t.sum()), float(t.abs().sum()), *[float(v) for v in t[:4]]]


@torch.no_grad()
def outputs(name: str) -> dict[str, list[float]]:
    """A few fixed forward passes of a shipped checkpoint, summarised (sum, |sum|, 4 values)."""
    torch.manual_seed(0)
    m = mmgen.load_pretrained(ROOT / name).eval()
    g = torch.Generator().manual_seed(0)
    kind = m.model_type
    if kind == "clip":
        vc = m.visual.config
        img = torch.rand(2, vc.in_chans, vc.img_size, vc.img_size, generator=g) * 2 - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # words outside a pruned vocabulary: expected here
            text = m.encode_text(PROMPTS)
        return {"image": _summary(m.encode_image(img)), "text": _summary(text)}
    if kind == "dalle":
        text = m.tokenize(PROMPTS, truncate=True)
        image = torch.randint(0, m.config.image_vocab, (2, 8), generator=g)
        t_logits, i_logits = m(torch.cat([text, image], 1))
        return {"text_logits": _summary(t_logits), "image_logits": _summary(i_logits)}
    if kind == "ddpm":
        chans, size = m.latent_chans, m.latent_size
        x = torch.randn(2, chans, size, size, generator=g)
        t = torch.tensor([10.0, 500.0])
        cond = (m.encode_condition(labels=torch.tensor([2, 7])) if m.config.conditioning == "class"
                else m.encode_condition(PROMPTS))
        return {"prediction": _summary(m.net(x, t, **cond))}
    if kind in ("vq", "palette"):
        c = m.config
        size, chans = c.img_size, c.in_chans
        img = torch.rand(2, chans, size, size, generator=g) * 2 - 1
        tokens = m.encode_tokens(img)
        return {"tokens": _summary(tokens.float()), "decoded": _summary(m.decode_tokens(tokens))}
    raise AssertionError(f"no reference forward for a {kind!r} checkpoint")


REFERENCE: dict[str, dict[str, list[float]]] = {  # outputs() of each checkpoint, computed when it was shipped
    'clip_emoji': {
        'image': [3.24842095, 15.6431523, -0.0820143148, 0.12003129, 0.0153204715, -0.0188250057],
        'text': [1.88136269, 15.2695371, 0.0376840904, -0.0601161793, 0.0231205989, 0.0254662298],
    },
    'clip_emoji_judge': {
        'image': [-3.31533594, 15.4764762, 0.0362036973, -0.114639156, 0.0437042676, -0.00256553269],
        'text': [-3.02694141, 15.5337744, 0.0880123675, 0.0894924626, 0.161893606, 0.0458041243],
    },
    'dalle_emoji': {
        'text_logits': [-65280.3644, 137203.177, -7.01238394, -7.17624664, -6.86552238, -1.16326821],
        'image_logits': [-952.27654, 16451.7681, -3.83575773, -2.20908976, 1.42154121, 0.218673125],
    },
    'clip_shapes_reranker': {
        'image': [0.151798336, 15.6301235, 0.135128245, -0.239621863, 0.0981983989, -0.0377033167],
        'text': [-0.517705566, 15.8220722, -0.118109271, -0.0524234176, -0.165423036, -0.0865539908],
    },
    'vq_shapes_16x16': {
        'tokens': [125855, 125855, 91, 15, 275, 232],
        'decoded': [-4075.68743, 4768.22805, -1, -1, -1, -1],
    },
    'clip_shapes': {
        'image': [1.42043274, 12.5658252, 0.00830124039, 0.0128581496, -0.114353836, -0.182776704],
        'text': [-0.521184971, 12.7987298, -0.151129425, -0.00853928365, 0.00296327611, 0.0155848898],
    },
    'dalle_shapes': {
        'text_logits': [-596.7568298049155, 1285.4557991187903, -2.0631103515625, -2.101447582244873,
                        -2.2235045433044434, 0.6259757876396179],
        'image_logits': [-29776.83214149624, 38716.941207550466, 6.1778340339660645, 6.175234794616699,
                         5.848838806152344, 6.914920806884766],
    },
    'dalle_shapes_layout': {
        'text_logits': [-755.7071125833318, 1292.691712132655, -2.980957269668579, -2.7561774253845215,
                        -2.9582571983337402, -0.916136622428894],
        'image_logits': [-3994.5964063275605, 4674.9520621504635, 9.89268970489502, -4.953782558441162,
                         -4.088428974151611, -2.5606837272644043],
    },
    'ddpm_animal_mnist': {
        'prediction': [549.932927634567, 6919.814816348255, -0.7728891968727112, -1.6635656356811523,
                       0.0013410914689302444, 0.2867897152900696],
    },
    'ddpm_emoji': {
        'prediction': [-261.212725, 5746.26, -1.82134235, -1.50788629, -0.152502641, -0.392566234],
    },
    'ddpm_shapes': {
        'prediction': [3005.72372, 6966.07679, -0.212419957, -0.303968459, 1.06199384, 0.675023317],
    },
    'vq_emoji': {
        'tokens': [37775, 37775, 54, 418, 338, 283],
        'decoded': [73.9339655, 1176.91114, 0.54767108, 0.118849367, 0.0311276931, 0.0216236934],
    },
    'vq_shapes': {
        'tokens': [26325, 26325, 239, 193, 59, 75],
        'decoded': [-4010.2433, 4673.03131, -0.83555007, -1, -0.658474565, -0.86330986],
    },
    'clip_shapes_coca': {
        'image': [2.42381044, 15.9984694, 0.0465710275, 0.196967259, -0.127174541, 0.183058023],
        'text': [-1.36594079, 16.0562783, -0.0386807658, -0.109445319, -0.106299169, -0.132073849],
    },
    'clip_shapes_coca_negimg': {
        'image': [2.60202733, 15.0511839, 0.0563727394, 0.219120458, -0.129530221, 0.154021323],
        'text': [-1.81826006, 15.7208743, -0.0472072475, -0.118945539, -0.0995695591, -0.186732009],
    },
    'palette_shapes_silhouette': {
        'tokens': [16904.0, 16904.0, 61.0, 14.0, 10.0, 10.0],
        'decoded': [-1138.9503473043442, 1221.8644918203354, -0.28448718786239624, -0.19207245111465454,
                    -0.9399875402450562, -0.1868506669998169],
    },
    'palette_shapes': {
        'tokens': [102588.0, 102588.0, 366.0, 84.0, 62.0, 63.0],
        'decoded': [-302.2371647953987, 5099.806908667088, -1.0, -1.0, -1.0, -1.0],
    },
    'clip_shapes_coca_bank': {
        'image': [2.12085235, 16.1601427, 0.0481992811, 0.180683419, -0.13111335, 0.199329883],
        'text': [-1.13295946, 16.0500733, -0.0474019647, -0.0990726724, -0.116592512, -0.129758075],
    },
}


def test_every_shipped_checkpoint_has_a_reference():
    shipped = sorted(p.name for p in ROOT.iterdir() if (p / "config.json").is_file())
    assert shipped and shipped == sorted(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_shipped_checkpoint_outputs_unchanged(name):
    got, ref = outputs(name), REFERENCE[name]
    assert sorted(got) == sorted(ref)
    for key in ref:
        got_, ref_ = (torch.tensor(v[key], dtype=torch.float64) for v in (got, ref))
        torch.testing.assert_close(got_, ref_, rtol=1e-4, atol=1e-4, msg=f"{name} {key}")


def test_shipped_checkpoints_load_without_rename_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for p in sorted(ROOT.iterdir()):
            if (p / "config.json").is_file():
                mmgen.load_pretrained(p)


def test_old_field_names_in_overrides_map_with_a_warning():
    from mmgen.config import field_type
    from mmgen.models.gpt import GPTConfig
    with pytest.warns(FutureWarning) as rec:
        m = mmgen.create_model("gpt_tiny", dim=32, context=16)
    assert m.config.embed_dim == 32 and m.config.context_length == 16
    assert {str(w.message).split(" is now")[0] for w in rec} == {"GPTConfig.dim", "GPTConfig.context"}
    assert "GPTConfig.dim is now called 'embed_dim'" in str(rec[0].message)
    with pytest.warns(FutureWarning) as rec:
        c = mmgen.create_model("clip_tiny", **{"text.heads": 2, "text.width": 64})
    assert c.config.text.num_heads == 2 and c.config.text.embed_dim == 64
    assert any("CLIPTextConfig.heads is now called 'num_heads'" in str(w.message) for w in rec)
    assert field_type(GPTConfig, "context") is int  # `--set model.context=..` parses as the new field
    # config objects speak only the current vocabulary: old names are mapped where config
    # data comes in (config.json, create_model / --set overrides), not on attribute reads
    assert not hasattr(m.config, "context") and not hasattr(m.config.block, "dim")
    from mmgen.layers import TransformerConfig
    with pytest.raises(TypeError):
        TransformerConfig(dim=16, num_heads=2)
    with pytest.raises(ValueError, match="has no field 'dimm'"):
        mmgen.create_model("gpt_tiny", dimm=32)


@pytest.mark.parametrize("preset", ["dalle_tiny", "ddpm_dit_latent_tiny", "clip_tiny"])
def test_models_never_mutate_the_config_they_are_given(preset):
    import copy

    from mmgen.registry import get_preset, preset_config
    cfg = preset_config(preset)
    before = copy.deepcopy(cfg)
    cls = get_preset(preset).model_cls
    m = cls.create(cfg)
    assert cfg == before  # derived values (vocab sizes, companion configs) live in the model's own copy
    assert m.config is not cfg and cls.resolve_config(m.config) == m.config  # resolved once: nothing left to fill in
    m.train()
    m.loss(m.example_batch(2))
    assert cfg == before


def test_constructors_read_no_dataset():
    from mmgen.models.dalle import DALLE
    from mmgen.registry import preset_config
    cfg = preset_config("dalle_shapes_32")  # names captions to prune its vocabulary to
    with pytest.raises(ValueError, match="create_model"):
        DALLE(cfg)
    assert DALLE.resolve_config(cfg).tokenizer_state  # the builder's step, done once, visibly
