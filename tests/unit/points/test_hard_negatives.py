"""The hard-negative round: round 0's false positives on the training slides, retrained."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from _fixtures import colour_slide, tile_table

from histodetect.fit.model import read_model_meta
from histodetect.points.hard_negatives import (
    FIRST_ROUND,
    HARD_NEGATIVES,
    positive_probability,
    train_with_hard_negatives,
)
from histodetect.training.train import TRAINING_METRICS, TrainConfig

FAST = {"backbone": "test_efficientnet", "hidden": 8, "batch_size": 16, "epochs": 2}
FAST |= {"num_workers": 0, "lr": 0.01, "device": "cpu"}


def test_round_one_adds_the_training_slides_false_positives(tmp_path: Path) -> None:
    path, labels = colour_slide(tmp_path / "colour.tiff")
    tiles = tile_table(path, labels).assign(patient_id=lambda t: "p" + t.row.astype(str))
    val = tiles[tiles.row < 4]
    rest = tiles[tiles.row >= 4]
    train = rest[rest.row < 10]
    # the pool: every tile of the training patients; red tiles of rows 10+ relabelled as
    # negatives (look-alikes a model of "red is positive" calls positive)
    pool = rest.assign(label=lambda t: t.label.where(t.row < 10, 0))
    look_alikes = pool[(pool.row >= 10) & (rest.label == 1)]
    out = tmp_path / "fold_0"
    metrics = train_with_hard_negatives(
        train, val, pool, out, TrainConfig.from_dict(FAST), fold=0, run_name="fold_0",
        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="hn", tb_dir=out / "tb",
    )  # fmt: skip
    hard = pd.read_parquet(out / HARD_NEGATIVES)
    assert len(hard) == metrics["n_hard_negatives"] > 0
    assert (hard.round0_prob >= 0.5).all() and (hard.label == 0).all()
    assert set(hard.patient_id) <= set(train.patient_id) | set(pool.patient_id)
    assert not set(hard.patient_id) & set(val.patient_id)
    picked = set(zip(hard.x, hard.y, strict=True))
    # the round-0 model learnt the colour: what it calls positive among negatives is red
    assert picked <= set(zip(look_alikes.x, look_alikes.y, strict=True))
    assert len(picked) >= len(look_alikes) // 2
    assert not picked & set(zip(train.x, train.y, strict=True))  # training rows not drawn again
    first = read_model_meta(out / FIRST_ROUND / "model.pt")["train_class_counts"]
    second = read_model_meta(out / "model.pt")["train_class_counts"]
    assert second[0] == first[0] + len(hard) and second[1] == first[1]
    assert json.loads((out / TRAINING_METRICS).read_text())["n_hard_negatives"] == len(hard)
    probs = positive_probability(out / FIRST_ROUND / "model.pt", look_alikes)
    assert probs.mean() > 0.5


def test_a_pool_holding_a_validation_patient_is_refused(tmp_path: Path) -> None:
    path, labels = colour_slide(tmp_path / "colour.tiff")
    tiles = tile_table(path, labels).assign(patient_id=lambda t: "p" + t.row.astype(str))
    with pytest.raises(ValueError, match="validation patients"):
        train_with_hard_negatives(
            tiles[tiles.row >= 4], tiles[tiles.row < 4], tiles, tmp_path, TrainConfig.from_dict(FAST),
            fold=0, run_name="f", mlflow_uri="", experiment="", tb_dir=tmp_path,
        )  # fmt: skip
