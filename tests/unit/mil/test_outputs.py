"""The ensemble's metrics and the attention maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _drawn import capture_figures, drawn_texts, texts_outside
from matplotlib import colormaps
from PIL import Image
from sklearn.metrics import cohen_kappa_score

from histodetect.features.store import SlideFeatures
from histodetect.mil import attention as attention_module
from histodetect.mil.attention import attention_grid, overlay_downsample, write_attention
from histodetect.mil.ensemble import macro_auc, qwk


def test_qwk_equals_scikit_learn_on_the_same_calls() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    for pred in (np.clip(y + rng.integers(-1, 2, 200), 0, 4), rng.integers(0, 5, 200), y):
        want = cohen_kappa_score(y, pred, weights="quadratic")
        assert abs(qwk(y, pred, 5) - want) < 1e-12
    assert qwk(y, y, 5) == 1.0


def test_macro_auc_averages_one_vs_rest_over_classes() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    perfect = np.eye(3)[y] * 0.8 + 0.1
    assert macro_auc(y, perfect) == 1.0
    assert macro_auc(y, perfect[::-1]) == 0.5  # classes 0 and 2: 0.25 each, class 1: 1


def test_attention_geojson_and_overlay_hold_each_tile(tmp_path: Path) -> None:
    rows = np.array([0, 0, 1, 2, 2, 2])
    cols = np.array([1, 2, 0, 0, 1, 3])
    size, stride = 100, 100
    coords = np.stack([cols * stride + 40, rows * stride + 10], 1)
    attrs = {"size0": size, "stride0": stride}
    feats = SlideFeatures(np.zeros((6, 4)), coords, attrs, {"row": rows, "col": cols})
    attention = np.array([0.05, 0.4, 0.1, 0.2, 0.05, 0.2])
    geo, png = tmp_path / "a.geojson", tmp_path / "a.png"
    # a grey 500 x 400 level-0 slide seen at downsample 1.25: a 400 x 320 px thumbnail
    ds = 1.25
    thumb = np.full((320, 400, 3), 128, np.uint8)
    write_attention(feats, attention, 10, "S1", geo, png, thumb, ds)
    tiles = json.loads(geo.read_text())["features"]
    assert [t["properties"]["measurements"]["attention"] for t in tiles] == attention.tolist()
    assert [t["properties"]["measurements"]["attention_rank"] for t in tiles] == [5, 1, 4, 2, 6, 3]
    assert tiles[5]["geometry"]["coordinates"][0][0] == [340, 210]
    assert tiles[5]["geometry"]["coordinates"][0][2] == [440, 310]

    grid = attention_grid(feats, attention)  # one cell per tile, at its level-0 position
    assert grid.values.shape == (3, 4) and np.isfinite(grid.values).sum() == len(attention)
    for (x, y), r, c, a in zip(coords, rows, cols, attention, strict=True):
        assert grid.values[r, c] == a
        assert (grid.left + c * grid.cell, grid.top + r * grid.cell) == (x, y)

    image = np.asarray(Image.open(png).convert("RGB")).astype(float)
    assert image.shape == (320, 400, 3)  # the thumbnail's size (at least 400 px wide)
    # each tile's cell, seen at the thumbnail's scale, is its attention's colour over the grey
    colours = colormaps["viridis"](attention / attention.max())[:, :3] * 255
    for (x, y), colour in zip(coords, colours, strict=True):
        centre = image[round((y + size / 2) / ds), round((x + size / 2) / ds)]
        assert np.abs(centre - (0.6 * colour + 0.4 * 128)).max() <= 3, (x, y, centre)
    for x, y in [(40 + 50, 10 + 50), (340 + 50, 10 + 50), (240 + 50, 110 + 50)]:  # no tile
        assert np.abs(image[round(y / ds), round(x / ds)] - 128).max() <= 1
    assert np.abs(image[round(40 / ds) + 2 : round(140 / ds) - 2, 0] - 128).max() <= 1


def test_overlay_downsample_gives_cell_px_per_tile_within_the_widest_figure() -> None:
    feats = SlideFeatures(np.zeros((1, 4)), np.zeros((1, 2)), {"size0": 256, "stride0": 256})
    assert overlay_downsample(feats, (20_000, 10_000), 8) == 32.0  # 625 px wide
    assert overlay_downsample(feats, (160_000, 10_000), 8) == 100.0  # 1,600 px wide
    assert overlay_downsample(feats, (1_000, 1_000), 512) == 1.0  # never above level 0


def test_a_long_attention_title_on_a_narrow_slide_fits_the_picture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = capture_figures(monkeypatch, attention_module)
    coords = np.array([[0, 0], [100, 0], [0, 100]])
    feats = SlideFeatures(np.zeros((3, 4)), coords, {"size0": 100, "stride0": 100})
    thumb = np.full((500, 300, 3), 128, np.uint8)  # a tall, narrow slide: 300 px wide
    title = (
        "TCGA-AB-1234-01Z-00-DX1.0123456789ABCDEF: attention in bag patient-TCGA-AB-1234 "
        "(label grade_3, train), 12345 tiles"
    )
    png = tmp_path / "narrow.png"
    write_attention(feats, np.array([0.5, 0.3, 0.2]), 3, "S", tmp_path / "n.geojson", png,
                    thumb, 1.0, title)  # fmt: skip
    (fig,) = saved
    assert texts_outside(fig) == []
    shown = [text for text, _ in drawn_texts(fig) if "attention in bag" in text]
    assert len(shown) == 1 and shown[0].replace("\n", " ") == title  # wrapped, not cut
    assert Image.open(png).size[0] == 400
