"""mmgen.metrics.plot: the Pillow line chart used for the docs' training curves."""
import pytest
from PIL import Image

from mmgen.metrics.plot import _ticks, line_chart


def test_line_chart_draws_series_and_rejects_empty(tmp_path):
    path = line_chart({"a": [(0.5, 2.0), (3.0, 1.6)], "b": [(1.0, 1.9)]}, tmp_path / "c.png",
                      xlabel="minutes", ylabel="loss", hlines={"target": 1.5}, size=(300, 200))
    img = Image.open(path).convert("RGB")
    assert img.size == (300, 200)
    assert (31, 119, 180) in {c for _, c in img.getcolors(300 * 200)}  # the first series' colour was drawn
    with pytest.raises(ValueError, match="non-empty series"):
        line_chart({"a": []}, tmp_path / "d.png")


def test_ticks_are_round_and_cover_the_range():
    assert _ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    t = _ticks(1.43, 2.37)
    assert t[0] >= 1.43 and t[-1] <= 2.37 and len(t) >= 4
