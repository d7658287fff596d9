"""PNG figures: size and content."""

from __future__ import annotations

import numpy as np
from PIL import Image

from histodetect.evaluation.plots import froc_png, roc_png


def test_roc_and_froc_png(tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    roc_png(y, y * 0.5 + rng.uniform(0, 1, 200), tmp_path / "roc.png")
    roc_png(np.ones(5), np.linspace(0, 1, 5), tmp_path / "roc1.png")
    froc_png([0, 0, 0.5, 1, 3], [0, 0.4, 0.5, 0.7, 0.9], tmp_path / "froc.png")
    for name in ("roc.png", "roc1.png", "froc.png"):
        img = Image.open(tmp_path / name)
        assert img.format == "PNG" and img.size[0] >= 400
