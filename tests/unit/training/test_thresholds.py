"""Decision thresholds chosen out of fold: the rule, and the refusal of rows seen in training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fixtures import colour_slide, tile_table

from histodetect.errors import InputError
from histodetect.evaluation.cohort import summarise_folds
from histodetect.fit.metrics import balanced_accuracy, best_threshold, fit_class_priors
from histodetect.training.thresholds import Decision, fit_decision, read_oof, write_threshold
from histodetect.training.train import PREDICTIONS, TRAINING_METRICS, TrainConfig, train_fold

FAST = {"backbone": "test_efficientnet", "hidden": 8, "batch_size": 16, "epochs": 1}
FAST |= {"num_workers": 0, "class_balance": "loss"}


@pytest.fixture(scope="module")
def folds(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    """Two fold models of one colour slide, each patient (a tile row) in one fold."""
    root = tmp_path_factory.mktemp("oof")
    path, labels = colour_slide(root / "colour.tiff")
    tiles = tile_table(path, labels).assign(patient_id=lambda t: "p" + t.row.astype(str))
    tiles = tiles[tiles.row < 6].assign(fold=lambda t: t.row % 2)
    preds, models = [], []
    for k in (0, 1):
        out = root / "models" / f"fold_{k}"
        train_fold(
            tiles[tiles.fold != k], tiles[tiles.fold == k], out, TrainConfig.from_dict(FAST),
            fold=k, run_name=f"fold_{k}", mlflow_uri=f"sqlite:///{root / 'mlflow.db'}",
            experiment="oof", tb_dir=out / "tb",
        )  # fmt: skip
        preds.append(out / PREDICTIONS)
        models.append(out / "model.pt")
    return preds, models


def test_threshold_from_out_of_fold_rows(folds: tuple[list[Path], list[Path]]) -> None:
    preds, models = folds
    out = models[0].parent.parent / "threshold.json"
    pairs = [(m.parent / TRAINING_METRICS, m.parent / "metrics.json") for m in models]
    record = write_threshold(preds, models, out, pairs)
    oof = pd.concat([pd.read_parquet(p) for p in preds])
    assert record["n_rows"] == len(oof) == 6 * 16
    t = record["decision"]["threshold"]
    assert t == best_threshold(oof.label, oof.prob)
    pooled = record["pooled"]
    at_oof = pooled["balanced_accuracy_at_oof_threshold"]
    assert at_oof >= pooled["balanced_accuracy_at_0.5"]
    assert at_oof == pytest.approx(balanced_accuracy(oof.label, oof.prob >= t, 2))
    assert Decision.for_models(models) == Decision(["0", "1"], threshold=t)
    for k, (training, metrics) in enumerate(pairs):  # each fold: both decisions, named
        fold = json.loads(metrics.read_text())
        assert json.loads(training.read_text()).items() <= fold.items()
        val = oof[oof.fold == k]
        assert fold["patch_balanced_accuracy_at_oof_threshold"] == pytest.approx(
            balanced_accuracy(val.label, val.prob >= t, 2)
        )
        assert fold["oof_threshold"] == t and "patch_balanced_accuracy_at_0.5" in fold
    table = summarise_folds([m for _, m in pairs])
    assert list(table.fold) == ["fold_0", "fold_1", "mean", "std"]
    assert {"patch_balanced_accuracy_at_0.5", "patch_balanced_accuracy_at_oof_threshold"} <= set(
        table
    )
    assert (table.oof_threshold[:2] == t).all()
    assert json.loads(out.read_text())["folds"]["fold_1"] == record["folds"]["fold_1"]


def test_tiles_carry_the_decision(tmp_path: Path) -> None:
    """Tile scores get their call at the out-of-fold decision, and a bad record is refused."""
    scores = pd.DataFrame({"prob": [0.1, 0.3, 0.6], "prob_a": [0.5, 0.2, 0.1]})
    binary = Decision(["0", "1"], threshold=0.3).call_tiles(scores)
    assert binary.call_at_oof_threshold.tolist() == [0, 1, 1]
    scores = scores.assign(prob_b=[0.3, 0.3, 0.05], prob_c=[0.2, 0.5, 0.6])
    priors = Decision(["a", "b", "c"], priors=[0.6, 0.1, 0.3])  # b is rare: its prior is low
    assert priors.call_tiles(scores).call_at_oof_priors.tolist() == ["b", "b", "c"]
    with pytest.raises(ValueError, match="prob_d"):
        Decision(["a", "d"], priors=[0.5, 0.5]).call_tiles(scores)
    (tmp_path / "threshold.json").write_text('{"rule": "none"}')
    with pytest.raises(InputError, match=r"threshold\.json: not a decision record"):
        Decision.read(tmp_path / "threshold.json")


def test_tampered_tables_are_refused(folds: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    preds, models = folds
    fold0 = pd.read_parquet(preds[0])
    train_patient = next(p for p in pd.read_parquet(preds[1]).patient_id)  # fold 0 trained on it
    cases = {
        "trained on them": fold0.assign(patient_id=[train_patient, *fold0.patient_id[1:]]),
        "no patient ids": fold0.drop(columns="patient_id"),
        "another fold": fold0.assign(fold=1),
    }
    for message, table in cases.items():
        table.to_parquet(tmp_path / "tampered.parquet")
        with pytest.raises(InputError, match=message):
            read_oof([tmp_path / "tampered.parquet", preds[1]], models)
    with pytest.raises(InputError, match="also in"):  # one patient scored twice
        read_oof([preds[0], preds[0]], [models[0], models[0]])
    assert len(read_oof(preds, models)) == 96


def test_decision_rules_by_hand() -> None:
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.35, 0.3, 0.4])
    # Thresholds at each score: 0.3 calls 0.35 and both positives, balanced accuracy 5/6.
    assert best_threshold(y, s) == pytest.approx(0.25)
    d = fit_decision(pd.DataFrame({"label": y, "prob": s}), ["a", "b"])
    np.testing.assert_array_equal(d.predict(s), [0, 0, 1, 1, 1])
    # Class 2 is rare and under-called: its prior is lowered until it is found.
    rng = np.random.default_rng(0)
    y3 = np.repeat([0, 1, 2], [200, 200, 20])
    probs = rng.dirichlet([1, 1, 1], len(y3)) * 0.5
    probs[np.arange(len(y3)), y3] += np.where(y3 == 2, 0.2, 0.5)
    probs /= probs.sum(1, keepdims=True)
    priors = fit_class_priors(y3, probs)
    assert priors.sum() == pytest.approx(1) and priors[2] < priors[0]
    plain = balanced_accuracy(y3, probs.argmax(1), 3)
    corrected = Decision(["a", "b", "c"], priors=list(priors))
    assert balanced_accuracy(y3, corrected.predict(probs), 3) > plain
