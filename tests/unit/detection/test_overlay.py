"""Overlay pictures: size and content."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from histodetect.detection.heatmap import Heatmap
from histodetect.detection.overlay import overlay_png


def red_pixels(path) -> int:
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(((a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)).sum())


def test_overlay_png(tmp_path) -> None:
    thumb = np.full((300, 500, 3), 200, dtype=np.uint8)
    ds = 32.0
    prob = np.full((30, 50), np.nan)
    prob[5:20, 10:40] = np.linspace(0, 1, 15 * 30).reshape(15, 30)
    heat = Heatmap("s", prob, 0.0, 0.0, 256.0, 256.0, 0.5, 0, 16_000, 9_600)
    pred = pd.DataFrame(
        {"x1": [2000.0], "y1": [2000.0], "x2": [6000.0], "y2": [5000.0], "score": [0.87]}
    )
    gt = pd.DataFrame({"x1": [2500.0], "y1": [2200.0], "x2": [6500.0], "y2": [5200.0]})
    tiles = pd.DataFrame(
        {"x": [0, 256, 512], "y": [0, 0, 0], "size": [256] * 3, "row": [0] * 3, "col": [0, 1, 2]}
    )
    out = tmp_path / "overlay.png"
    overlay_png(thumb, ds, out, heat, pred, gt, tiles, title="slide s")
    w, h = Image.open(out).size
    assert w == 500 and abs(h - (300 + 30)) <= 2
    assert red_pixels(out) > 200

    no_pred = tmp_path / "plain.png"
    overlay_png(thumb, ds, no_pred, heatmap=heat, gt_boxes=gt)
    assert red_pixels(no_pred) == 0


def test_overlay_png_caps_width(tmp_path) -> None:
    thumb = np.zeros((1000, 4000, 3), dtype=np.uint8)
    out = tmp_path / "big.png"
    overlay_png(thumb, 8.0, out)
    w, h = Image.open(out).size
    assert w == 1600 and abs(h - 400) <= 2
