"""Tile contributions to a bag's risk or value: the model's output on each tile alone, and
shares that add up to the bag's output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histodetect.mil.contributions import (
    TileContributions,
    mean_contributions,
    measurement_names,
    tile_contributions,
)
from histodetect.mil.models import MODELS, BagModel, MilTask, score_bag

SURVIVAL = MilTask("survival", [])
REGRESSION = MilTask("regression", [], "huber", shift=30.0, scale=12.0)


def _model(kind: str, seed: int = 0) -> BagModel:
    torch.manual_seed(seed)
    model = BagModel(kind, 8, 16, 1, 0, layers=1, heads=2)
    with torch.no_grad():
        model.head.bias.fill_(0.7)  # a bias far from 0: it must be shared out, not lost
    return model.eval()


def _bag(n: int = 23) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).normal(0, 1, (n, 8))).float()


@pytest.mark.parametrize("kind", ["mean", "max", "abmil", "clam_sb"])
@pytest.mark.parametrize("task", [SURVIVAL, REGRESSION], ids=["survival", "regression"])
def test_contributions_of_a_pooled_bag_add_up_to_its_output(kind: str, task: MilTask) -> None:
    model, x = _model(kind), _bag()
    part = tile_contributions(model, task, x)
    bag, weights = score_bag(model, task, x)
    assert part.output == pytest.approx(float(bag[0]), rel=1e-5)
    np.testing.assert_allclose(part.weights, weights, rtol=1e-6)
    assert part.reference == (30.0 if task is REGRESSION else 0.0)
    assert part.contributions.sum() == pytest.approx(part.output - part.reference, abs=1e-4)
    assert np.ptp(part.contributions) > 0
    if kind != "max":  # attention times the tile's own score
        np.testing.assert_allclose(
            part.contributions, part.weights * (part.scores - part.reference), atol=1e-5
        )


@pytest.mark.parametrize("kind", MODELS)
def test_a_tile_score_is_the_models_output_on_that_tile_alone(kind: str) -> None:
    model, x = _model(kind), _bag(6)
    for task in (SURVIVAL, REGRESSION):
        part = tile_contributions(model, task, x)
        alone = [float(score_bag(model, task, x[i : i + 1])[0][0]) for i in range(len(x))]
        np.testing.assert_allclose(part.scores, alone, rtol=1e-4, atol=1e-4)


def test_the_transformers_contributions_are_attention_times_score() -> None:
    model, x = _model("transformer"), _bag()
    part = tile_contributions(model, SURVIVAL, x)
    assert part.weights.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(part.contributions, part.weights * part.scores, rtol=1e-6)


def test_the_fold_mean_keeps_the_sum_and_class_tasks_have_none() -> None:
    x = _bag()
    parts = [tile_contributions(_model("abmil", seed), SURVIVAL, x) for seed in (0, 1, 2)]
    mean = mean_contributions(parts)
    assert isinstance(mean, TileContributions)
    assert mean.output == pytest.approx(np.mean([p.output for p in parts]))
    assert mean.contributions.sum() == pytest.approx(mean.output, abs=1e-4)
    assert mean.rows(3, 5).contributions.tolist() == mean.contributions[3:5].tolist()
    assert measurement_names("survival") == ("tile_risk", "risk_contribution")
    with pytest.raises(ValueError, match="not 'binary'"):
        tile_contributions(_model("abmil"), MilTask("binary", ["a", "b"]), x)
