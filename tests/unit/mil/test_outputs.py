"""The ensemble's metrics and the attention maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image
from sklearn.metrics import cohen_kappa_score

from histodetect.features.store import SlideFeatures
from histodetect.mil.attention import write_attention
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
    write_attention(feats, attention, 10, "S1", geo, png, cell_px=4)
    tiles = json.loads(geo.read_text())["features"]
    assert [t["properties"]["measurements"]["attention"] for t in tiles] == attention.tolist()
    assert [t["properties"]["measurements"]["attention_rank"] for t in tiles] == [5, 1, 4, 2, 6, 3]
    assert tiles[5]["geometry"]["coordinates"][0][0] == [340, 210]
    assert tiles[5]["geometry"]["coordinates"][0][2] == [440, 310]
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (3 * 4, 4 * 4, 3)  # one 4 px cell per grid cell
    colours = (colormaps["viridis"](attention / 0.4)[:, :3] * 255).round()
    for r, c, colour in zip(rows, cols, colours, strict=True):
        cell = image[r * 4 : r * 4 + 4, c * 4 : c * 4 + 4].reshape(-1, 3)
        assert (cell == colour).all()
    empty = image[0:4, 0:4].reshape(-1, 3)
    assert (empty == 255).all()
