"""Slide-label models on new slides: bags of a prediction sheet through the saved ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from histodetect.errors import InputError
from histodetect.features.store import SlideFeatures, write_features
from histodetect.mil.data import FeatureSource
from histodetect.mil.ensemble import ensemble, write_decision
from histodetect.mil.predict import (
    left_out_bags,
    load_ensemble,
    predict_bag_table,
    predict_bags,
)
from histodetect.mil.train import MilConfig, train_fold

CLASSES = ["0", "1", "2"]
PROBS = [f"prob_{c}" for c in CLASSES]


def _write(folder: Path, sid: str, grade: int, rng: np.random.Generator) -> None:
    size = int(rng.integers(20, 40))
    x = rng.normal(0, 1, (size, 6))
    x[:grade, 0] += 6  # the grade is the number of tiles shifted by 6
    coords = np.stack([np.arange(size) * 64, np.zeros(size)], 1)
    attrs = {"status": "ok", "encoder_id": "enc-a", "size0": 64}
    write_features(folder / f"{sid}.h5", SlideFeatures(x, coords, attrs))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, list[Path]]:
    """24 labelled one-slide bags in 2 folds, 6 predict-only bags (N00-N05), 2 fold models."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("mil_predict")
    rng = np.random.default_rng(1)
    rows = []
    for i in range(30):
        grade = i % 3
        sid = f"S{i:02d}" if i < 24 else f"N{i - 24:02d}"
        _write(folder, sid, grade, rng)
        if i < 24:
            rows.append((sid, f"P{i:02d}", sid, f"P{i:02d}", str(grade), grade, "train", i % 2))
        else:
            rows.append((sid, f"Q{i:02d}", sid, f"Q{i:02d}", "", -1, "predict", -1))
    columns = ["slide_id", "patient_id", "bag_id", "group", "label", "y", "split", "fold"]
    folds = pd.DataFrame(rows, columns=columns)
    cfg = MilConfig(model="abmil", task="ordinal", hidden=16, epochs=3, lr=1e-3)
    for k in (0, 1):
        out = folder / f"fold_{k}"
        train_fold(folds, k, FeatureSource(folder), out, cfg, CLASSES,
                       mlflow_uri=f"sqlite:///{folder}/m.db", experiment="e", tb_dir=out / "tb",
                       extra_meta={"encoder_id": "enc-a", "bag": "slide"})  # fmt: skip
    return folder, folds, [folder / f"fold_{k}" / "model.pt" for k in (0, 1)]


def _ok_tiling(slides: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"slide_id": slides, "path": "x.tiff", "status": "ok", "error": ""})


def test_predict_calls_the_new_bags_as_the_training_ensemble_does(
    trained: tuple[Path, pd.DataFrame, list[Path]],
) -> None:
    folder, folds, models = trained
    preds = [m.parent / "val_predictions.parquet" for m in models]
    table, metrics = ensemble(folds, models, preds, FeatureSource(folder), n_bootstrap=5)
    expected = table[table.split == "predict"].set_index("bag_id")
    record = write_decision(models, preds, folder / "decision.json")
    assert record["decision"] == metrics["decision"]
    assert record["encoder_id"] == "enc-a" and record["bag"] == "slide"
    assert record["folds"] == [0, 1] and record["n_oof_bags"] == 24

    new = [f"N{i:02d}" for i in range(6)]
    sheet = pd.DataFrame({"slide_id": new, "path": [f"{s}.tiff" for s in new]})  # no labels
    bags = predict_bag_table(
        sheet, "slide", _ok_tiling(new), {s: folder / f"{s}.h5" for s in new}, "new.tsv"
    )
    loaded, decision = load_ensemble(models, folder / "decision.json", "enc-a")
    got = predict_bags(bags, loaded, decision, FeatureSource(folder, {"encoder_id": "enc-a"}))
    got = got.set_index("bag_id").loc[expected.index]
    assert len(got) == 6
    np.testing.assert_allclose(got[PROBS], expected[PROBS].astype(float), rtol=1e-6)
    assert got.call.tolist() == expected.call.tolist()
    assert got.fold_agreement.tolist() == expected.fold_agreement.tolist()
    assert (got.n_tiles == expected.n_tiles).all() and (got.slides_left_out == "").all()


def test_bags_of_a_patient_leave_out_slides_that_failed(
    trained: tuple[Path, pd.DataFrame, list[Path]], tmp_path: Path
) -> None:
    _, _, models = trained
    rng = np.random.default_rng(2)
    for sid, grade in (("A1", 0), ("A2", 2), ("C1", 1)):
        _write(tmp_path, sid, grade, rng)
    failed = {"status": "failed", "error": "tiles unreadable", "encoder_id": "enc-a"}
    write_features(tmp_path / "D1.h5", SlideFeatures(np.zeros((0, 6)), np.zeros((0, 2)), failed))
    sheet = pd.DataFrame(
        {
            "slide_id": ["A1", "A2", "A3", "B1", "C1", "D1"],
            "patient_id": ["A", "A", "A", "B", "C", "D"],
            "path": "x.tiff",
        }
    )
    tiling = _ok_tiling(["A1", "A2", "C1", "D1"])
    tiling.loc[len(tiling)] = ["A3", "a3.tiff", "failed", "cannot open a3.tiff"]
    tiling.loc[len(tiling)] = ["B1", "b1.tiff", "no tissue", ""]
    paths = {s: tmp_path / f"{s}.h5" for s in ("A1", "A2", "C1", "D1")}
    bags = predict_bag_table(sheet, "patient", tiling, paths, "new.tsv")
    errors = dict(zip(bags.slide_id, bags.error, strict=True))
    assert (
        errors["A3"] == "tiling: cannot open a3.tiff" and errors["B1"] == "tiling: no tissue tiles"
    )
    assert errors["D1"] == "features: tiles unreadable" and errors["A1"] == ""
    assert left_out_bags(bags) == ["B", "D"]

    write_decision(models, [m.parent / "val_predictions.parquet" for m in models],
                   tmp_path / "decision.json")  # fmt: skip
    loaded, decision = load_ensemble(models, tmp_path / "decision.json", "enc-a")
    got = predict_bags(bags, loaded, decision, FeatureSource(tmp_path, {"encoder_id": "enc-a"}))
    assert got.bag_id.tolist() == ["A", "C"]
    a = got.iloc[0]
    assert a.slides == "A1,A2" and a.n_slides == 2 and a.slides_left_out == "A3"
    sizes = [len(FeatureSource(tmp_path).slide(s)) for s in ("A1", "A2")]
    assert a.n_tiles == sum(sizes)
    assert np.allclose(got[PROBS].sum(1), 1, atol=1e-5) and set(got.call) <= set(CLASSES)


def test_models_of_other_features_or_a_sheet_without_the_bag_column_are_refused(
    trained: tuple[Path, pd.DataFrame, list[Path]], tmp_path: Path
) -> None:
    _, _, models = trained
    preds = [m.parent / "val_predictions.parquet" for m in models]
    write_decision(models, preds, tmp_path / "decision.json")
    with pytest.raises(InputError) as err:
        load_ensemble(models, tmp_path / "decision.json", "enc-b")
    line = str(err.value)
    assert line.startswith(str(models[0])) and "enc-a" in line and "enc-b" in line
    assert "\n" not in line

    record = json.loads((tmp_path / "decision.json").read_text())
    record["decision"]["classes"] = ["0", "1"]
    (tmp_path / "other.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="differ from"):
        load_ensemble(models, tmp_path / "other.json", "enc-a")

    sheet = pd.DataFrame({"slide_id": ["X1"], "path": ["x.tiff"]})
    with pytest.raises(InputError, match=r"new.tsv: mil.bag is 'biopsy' but the sheet has no"):
        predict_bag_table(sheet, "biopsy", _ok_tiling(["X1"]), {}, "new.tsv")
    sheet["biopsy"] = [""]
    with pytest.raises(InputError, match=r"row 2: empty biopsy"):
        predict_bag_table(sheet, "biopsy", _ok_tiling(["X1"]), {}, "new.tsv")
