"""Out-of-fold tuning of the box step and the slide score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histodetect.detection.heatmap import Heatmap
from histodetect.detection.slide_score import SlideScore
from histodetect.errors import InputError
from histodetect.evaluation.tuning import (
    OofSlide,
    check_not_test,
    quantile_thresholds,
    tune_boxes,
    tune_slide_score,
)

TILE = 100.0
BASE = {
    "method": "components",
    "threshold": 0.5,
    "min_neighbours": 0,
    "score": "max",
    "min_size_um": 0.0,
}


def miscalibrated_slide(seed: int, scale: float) -> OofSlide:
    """A 40x40 grid with one 6x6 lesion of probability ~0.8 and background ~0.1, times ``scale``."""
    rng = np.random.default_rng(seed)
    prob = rng.uniform(0.0, 0.2, (40, 40))
    r, c = rng.integers(2, 30, 2)
    prob[r : r + 6, c : c + 6] = rng.uniform(0.7, 0.9, (6, 6))
    truth = np.array([[c * TILE, r * TILE, (c + 6) * TILE, (r + 6) * TILE]])
    heat = Heatmap(f"s{seed}", prob * scale, 0.0, 0.0, TILE, TILE, 1.0, 0, 4000, 4000)
    return OofSlide(f"s{seed}", heat, truth)


def test_tuning_finds_a_lower_threshold_for_underconfident_heatmaps() -> None:
    slides = [miscalibrated_slide(s, scale=0.4) for s in range(6)]  # lesions at ~0.32
    grid = {"threshold": [0.2, 0.3, 0.4, 0.5, 0.6]}
    chosen, search = tune_boxes(slides, BASE, grid)
    assert chosen["threshold"] < 0.5
    config_f2 = search["oof_mean_f2"].iloc[0]  # the config's own setting comes first
    assert search.iloc[0]["threshold"] == 0.5 and config_f2 == 0.0
    assert search["oof_mean_f2"].max() == pytest.approx(1.0)


def test_quantile_thresholds_reach_a_squeezed_heatmap() -> None:
    """Probabilities squeezed into 0.40-0.44: no fixed threshold fits, the quantiles do."""
    slides = []
    for s in range(4):
        oof = miscalibrated_slide(s, scale=1.0)
        squeezed = 0.40 + 0.05 * oof.heatmap.prob  # lesion ~0.44, background ~0.405
        heat = Heatmap(oof.slide_id, squeezed, 0.0, 0.0, TILE, TILE, 1.0, 0, 4000, 4000)
        slides.append(OofSlide(oof.slide_id, heat, oof.truth))
    fixed = {"threshold": [0.3, 0.5, 0.7]}
    _, without = tune_boxes(slides, BASE, fixed)
    assert without["oof_mean_f2"].max() == 0.0
    extra = quantile_thresholds(slides, [0.5, 0.9, 0.98])
    assert all(0.40 <= t <= 0.45 for t in extra) and extra == sorted(extra)
    chosen, search = tune_boxes(slides, BASE, {**fixed, "threshold_quantiles": [0.5, 0.9, 0.98]})
    assert chosen["threshold"] in extra
    assert search["oof_mean_f2"].max() == pytest.approx(1.0)
    assert set(search["threshold"]) == {0.3, 0.5, 0.7, *extra}


def test_ties_keep_the_config_setting() -> None:
    slides = [miscalibrated_slide(s, scale=1.0) for s in range(3)]
    chosen, _ = tune_boxes(slides, BASE, {"threshold": [0.3, 0.4, 0.5, 0.6]})
    assert chosen["threshold"] == 0.5


def test_test_slides_are_refused() -> None:
    split = pd.DataFrame({"slide_id": ["a", "b", "c"], "split": ["train", "test", "train"]})
    check_not_test(["a", "c"], split, "split.tsv")
    with pytest.raises(InputError, match=r"split.tsv: test slide.*b may not be used for tuning"):
        check_not_test(["a", "b"], split, "split.tsv")


def test_slide_score_tuning_picks_a_separating_threshold() -> None:
    rng = np.random.default_rng(0)
    probs = {f"p{i}": np.r_[rng.uniform(0, 0.3, 50), [0.2 + 0.05 * i]] for i in range(4)}
    probs |= {f"n{i}": rng.uniform(0, 0.1, 50) for i in range(4)}
    positive = {s: s.startswith("p") for s in probs}
    how, auc, table = tune_slide_score(probs, positive, SlideScore())
    assert auc == pytest.approx(1.0) and len(table) > 3
    scores = {s: how.score(p) for s, p in probs.items()}
    assert all(how.positive(scores[s]) == positive[s] for s in probs)
    base, nan_auc, _ = tune_slide_score({"p0": probs["p0"]}, {"p0": True}, SlideScore())
    assert base == SlideScore() and np.isnan(nan_auc)
