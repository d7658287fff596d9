"""Slide scores from tile probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from histodetect.detection.slide_score import SlideScore


def test_methods_on_known_values() -> None:
    p = np.array([0.1, 0.9, np.nan, 0.4, 0.6, 0.2])
    assert SlideScore("max").score(p) == pytest.approx(0.9)
    assert SlideScore("top_k_mean", top_k=2).score(p) == pytest.approx(0.75)
    assert SlideScore("top_k_mean", top_k=50).score(p) == pytest.approx(np.nanmean(p))
    assert SlideScore("fraction", tile_threshold=0.4).score(p) == pytest.approx(3 / 5)
    assert SlideScore().score([]) == 0.0


def test_call_and_round_trip() -> None:
    how = SlideScore("top_k_mean", top_k=3, threshold=0.7)
    assert how.positive(0.7) and not how.positive(0.69)
    assert SlideScore.from_dict({**how.to_dict(), "oof_auc": 0.9}) == how
    with pytest.raises(ValueError, match="unknown slide score"):
        SlideScore("median")
