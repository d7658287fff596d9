"""The ensemble's metrics and the attention maps (survival, regression: and the tiles'
contributions to the bag's number)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _drawn import capture_figures, drawn_texts, texts_outside
from matplotlib import colormaps
from PIL import Image
from sklearn.metrics import cohen_kappa_score

from histodetect.features.store import SlideFeatures, write_features
from histodetect.mil import attention as attention_module
from histodetect.mil.attention import (
    ContributionMap,
    attention_grid,
    label_text,
    overlay_downsample,
    slide_contributions,
    write_attention,
)
from histodetect.mil.contributions import TileContributions
from histodetect.mil.data import Bag, FeatureSource
from histodetect.mil.ensemble import macro_auc, qwk
from histodetect.mil.models import BagModel, MilTask


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
    assert set(tiles[0]["properties"]["measurements"]) == {  # a class task: nothing more
        "attention", "attention_x_uniform", "attention_rank"
    }  # fmt: skip
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


def _grid_slide() -> tuple[SlideFeatures, np.ndarray, np.ndarray]:
    rows, cols = np.array([0, 0, 1, 2, 2, 2]), np.array([1, 2, 0, 0, 1, 3])
    coords = np.stack([cols * 100 + 40, rows * 100 + 10], 1)
    attrs = {"size0": 100, "stride0": 100}
    return SlideFeatures(np.zeros((6, 4)), coords, attrs, {"row": rows, "col": cols}), rows, cols


@pytest.mark.parametrize("kind", ["survival", "regression"])
def test_risk_contributions_are_measurements_and_a_red_blue_overlay(
    tmp_path: Path, kind: str
) -> None:
    feats, _, _ = _grid_slide()
    weights = np.array([0.05, 0.4, 0.1, 0.2, 0.05, 0.2])
    scores = np.array([2.0, -1.5, 0.0, 1.0, -4.0, 0.5])
    parts = TileContributions(weights, scores, weights * scores, -0.4, 0.0)
    geo, png, cpng = tmp_path / "a.geojson", tmp_path / "a.png", tmp_path / "c.png"
    thumb = np.full((320, 400, 3), 128, np.uint8)
    title = "S1: risk contribution in bag P1 (log risk -0.40), 6 tiles"
    write_attention(feats, weights, 6, "S1", geo, png, thumb, 1.25, "S1: attention",
                    ContributionMap(parts, kind, cpng, title))  # fmt: skip
    score, share = {"survival": ("tile_risk", "risk_contribution"),
                    "regression": ("tile_value", "value_contribution")}[kind]  # fmt: skip
    shown = [t["properties"]["measurements"] for t in json.loads(geo.read_text())["features"]]
    assert [m[score] for m in shown] == scores.tolist()
    assert [m[share] for m in shown] == (weights * scores).tolist()
    assert [m["attention"] for m in shown] == weights.tolist()
    assert png.exists()

    image = np.asarray(Image.open(cpng).convert("RGB")).astype(float)
    strip = image.shape[0] - 320  # the title above the thumbnail
    assert strip > 0 and image.shape[1] == 400

    def centre(i: int) -> np.ndarray:
        x, y = feats.coords[i] + 50
        return image[strip + round(y / 1.25), round(x / 1.25)]

    shares = weights * scores  # symmetric about 0 up to the largest magnitude, 0.6
    colours = colormaps["RdBu_r"]((shares / 0.6 + 1) / 2)[:, :3] * 255
    for i, colour in enumerate(colours):
        assert np.abs(centre(i) - (0.6 * colour + 0.4 * 128)).max() <= 3, (i, centre(i))
    red, blue, zero = centre(3), centre(1), centre(2)  # +0.2, -0.6, 0
    assert red[0] > red[2] + 20 and blue[2] > blue[0] + 40  # red raises, blue lowers
    assert np.abs(zero - (0.6 * 247 + 0.4 * 128)).max() <= 6  # (near) white at 0
    again = ContributionMap(parts, kind, None)  # predict's rule: the measurements only
    write_attention(feats, weights, 6, "S1", geo, tmp_path / "b.png", thumb, 1.25, "", again)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["a.png", "b.png", "c.png"]


def test_slide_contributions_slice_a_two_slide_bag(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sizes = {"A": 5, "B": 7}
    for sid, n in sizes.items():
        coords = np.stack([np.arange(n) * 100, np.zeros(n)], 1).astype(np.int64)
        write_features(
            tmp_path / f"{sid}.h5",
            SlideFeatures(rng.normal(0, 1, (n, 8)), coords, {"status": "ok"}),
        )
    source, bag = FeatureSource(tmp_path), Bag("P", "P", 0, "train", 0, ("A", "B"), 3.0, 1)
    torch.manual_seed(0)
    models = [(BagModel("abmil", 8, 16, 1, 0).eval(), MilTask("survival", []))] * 2
    parts = {sid: slide_contributions(models, source, bag, sid) for sid in sizes}
    assert [len(p[1].scores) for p in parts.values()] == [5, 7]
    assert [p[2] for p in parts.values()] == [12, 12]
    both = sum(float(p[1].contributions.sum()) for p in parts.values())
    assert both == pytest.approx(parts["A"][1].output, abs=1e-5)  # the bag's log risk
    assert sum(float(p[1].weights.sum()) for p in parts.values()) == pytest.approx(1.0)


def test_a_survival_label_is_said_as_an_event_or_a_censoring_in_titles() -> None:
    assert label_text("21.82:0", "survival", "months") == "censored at 21.8 months"
    assert label_text("3.5:1", "survival") == "event at 3.5 days"
    assert label_text("2", "ordinal") == "label 2"
    assert label_text("none", "survival") == "label none"
