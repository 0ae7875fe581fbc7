"""Registry, config plumbing and checkpoint directories."""
import json
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

import mmgen
from mmgen.config import config_from_dict, merge_overrides, parse_value
from mmgen.layers import TransformerConfig
from mmgen.models.base import Model


@dataclass
class TiedConfig:
    vocab: int = 11
    dim: int = 8
    block: TransformerConfig = field(default_factory=lambda: TransformerConfig(embed_dim=8, depth=1, num_heads=2))


@mmgen.register_model("test_tied")
class TiedLM(Model):
    config_class = TiedConfig

    def __init__(self, config):
        super().__init__(config)
        self.emb = nn.Embedding(config.vocab, config.dim)
        self.head = nn.Linear(config.dim, config.vocab, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, x):
        return self.head(self.emb(x))


def test_save_load_keeps_tied_weights_and_outputs(tmp_path):
    m = TiedLM(TiedConfig())
    x = torch.arange(5)[None]
    m.save_pretrained(tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert meta["model_type"] == "test_tied" and meta["config"]["block"]["embed_dim"] == 8
    for loaded in (TiedLM.from_pretrained(tmp_path / "ck"), mmgen.load_pretrained(tmp_path / "ck")):
        assert loaded.head.weight is loaded.emb.weight
        torch.testing.assert_close(loaded(x), m(x))


def test_half_precision_save_loads_back_as_float32(tmp_path):
    m = TiedLM(TiedConfig())
    path = m.save_pretrained(tmp_path / "half", dtype=torch.float16)
    assert (path / "model.safetensors").stat().st_size < 11 * 8 * 4
    loaded = mmgen.load_pretrained(path)
    assert loaded.emb.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.emb.weight, m.emb.weight, atol=1e-3, rtol=1e-3)
    assert m.emb.weight.dtype == torch.float32  # the original model is untouched


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mmgen.load_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        mmgen.load_pretrained(tmp_path / "empty")
    m = TiedLM(TiedConfig())
    path = m.save_pretrained(tmp_path / "ck")
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["colour"] = "red"
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no field 'colour'"):
        mmgen.load_pretrained(path)
    path = m.save_pretrained(tmp_path / "ck2")
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        mmgen.load_pretrained(path)
    meta = json.loads((path / "config.json").read_text())
    meta["model_type"] = "no_such_model"
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown model type"):
        mmgen.load_pretrained(path)


def test_loading_a_checkpoint_of_another_model_is_refused(tmp_path):
    @mmgen.register_model("test_other")
    class Other(TiedLM):
        pass

    path = TiedLM(TiedConfig()).save_pretrained(tmp_path / "ck")
    with pytest.raises(ValueError, match="holds a 'test_tied' model"):
        Other.from_pretrained(path)


def test_save_is_atomic_and_keeps_other_files(tmp_path):
    m = TiedLM(TiedConfig())
    path = m.save_pretrained(tmp_path / "ck")
    (path / "README.md").write_text("card")
    m.save_pretrained(path)
    assert (path / "README.md").read_text() == "card"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp dirs left behind


def test_config_overrides_and_parsing():
    d = merge_overrides(TiedConfig, {"dim": 8}, {"block.depth": 3, "vocab": 5})
    cfg = config_from_dict(TiedConfig, d)
    assert cfg.block.depth == 3 and cfg.vocab == 5 and cfg.block.embed_dim == 8
    with pytest.raises(ValueError, match="did you mean 'depth'"):
        merge_overrides(TiedConfig, {}, {"block.dept": 3})
    assert parse_value("none", int | None) is None and parse_value("3", int | None) == 3
    assert parse_value("true", bool) is True and parse_value("1,2", tuple[int, ...]) == (1, 2)
    with pytest.raises(ValueError, match="expected int"):
        parse_value("x", int)


def test_unknown_model_name_suggests():
    with pytest.raises(ValueError, match="unknown model"):
        mmgen.create_model("definitely_not_a_model")


def test_cli_lists_models(capsys):
    from mmgen.cli import main
    assert main(["models", "*"]) in (0, 2)
