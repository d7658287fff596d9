"""Out-of-fold model choice and the model's tiling record, checked against the model files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from _fixtures import random_model

from histodetect.detection.inference import check_tiling, out_of_fold_model
from histodetect.errors import InputError

TILING = {"tile_um": 128.0, "target_mpp": 2.0, "target_mag": None}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two fold models: fold 0 trained on P2, fold 1 on P1 (each blind to the other)."""
    root = tmp_path_factory.mktemp("models")
    return [
        random_model(root / "m0.pt", 0, fold=0, train_patients=["P2"], tiling=TILING),
        random_model(root / "m1.pt", 1, fold=1, train_patients=["P1"], tiling=TILING),
    ]


FOLDS = pd.DataFrame({"slide_id": ["S1", "S2"], "patient_id": ["P1", "P2"], "fold": ["0", "1"]})


def test_each_slide_gets_the_model_blind_to_its_patient(models: list[Path]) -> None:
    assert out_of_fold_model(models, FOLDS, "S1", "folds.tsv") == models[0]
    assert out_of_fold_model(models, FOLDS, "S2", "folds.tsv") == models[1]


def test_a_tampered_fold_table_is_refused(models: list[Path]) -> None:
    tampered = FOLDS.assign(fold=["1", "0"])  # S1 moved to the fold whose model trained on P1
    with pytest.raises(
        InputError, match=r"folds.tsv: slide S1 \(patient P1\) is in fold 1.*trained on it"
    ):
        out_of_fold_model(models, tampered, "S1", "folds.tsv")
    with pytest.raises(InputError, match="slide S9 has no fold"):
        out_of_fold_model(models, FOLDS, "S9", "folds.tsv")


def test_models_of_another_resolution_are_refused(models: list[Path]) -> None:
    check_tiling(models, TILING)
    check_tiling(models, {**TILING, "target_mpp": 1.0, "target_mag": 5.0})  # 10 / 5 = 2 um/px
    with pytest.raises(
        InputError,
        match=r"m0.pt: trained on 128 um tiles at 2 um/px but tiling makes 128 um tiles at 0.5 um/px",
    ):
        check_tiling(models, {**TILING, "target_mpp": 0.5})
