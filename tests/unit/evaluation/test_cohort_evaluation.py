"""Training curves from TensorBoard events, and ground truth for evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from histodetect.errors import InputError
from histodetect.evaluation.cohort import (
    class_tile_metrics,
    lesion_tile_metrics,
    oof_class_metrics,
    read_training_curves,
    slide_truth,
)
from histodetect.evaluation.plots import training_curves_png
from histodetect.training.thresholds import Decision


def write_events(folder: Path, rows: list[tuple[int, float, float]]) -> None:
    with SummaryWriter(str(folder)) as tb:
        for epoch, loss, auc in rows:
            tb.add_scalar("train_loss", loss, epoch)
            tb.add_scalar("val_loss", loss + 0.1, epoch)
            tb.add_scalar("val_auc", auc, epoch)


def test_read_and_plot_training_curves(tmp_path: Path) -> None:
    write_events(tmp_path / "fold_0", [(0, 0.7, 0.6), (1, 0.5, 0.8)])
    write_events(tmp_path / "fold_1", [(0, 0.9, 0.55)])
    curves = read_training_curves([tmp_path / "fold_0", tmp_path / "fold_1"])
    auc = curves[curves.tag == "val_auc"]
    assert auc[["fold", "epoch"]].values.tolist() == [["fold_0", 0], ["fold_0", 1], ["fold_1", 0]]
    assert auc.value.round(3).tolist() == [0.6, 0.8, 0.55]
    assert set(curves.tag) == {"train_loss", "val_loss", "val_auc"}
    training_curves_png(curves, tmp_path / "curves.png")
    with Image.open(tmp_path / "curves.png") as png:
        assert png.size == (1100, 420)
    training_curves_png(curves.iloc[:0], tmp_path / "empty.png")  # no runs yet: still a picture
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_slide_truth_keeps_only_the_given_slides(tmp_path: Path) -> None:
    sheet = pd.DataFrame(
        {"slide_id": ["a", "b"], "patient_id": ["p", "q"], "path": ["x/a.tiff", "x/b.tiff"]}
    )
    csv = tmp_path / "boxes.csv"
    csv.write_text("filename,x1,x2,y1,y2\na.tiff,10,20,30,50\nb,0,5,0,5\n")
    summary = tmp_path / "a.json"
    summary.write_text(json.dumps({"slide_id": "a", "mpp": 0.5}))
    truth = slide_truth(sheet, csv, {}, [summary])
    assert truth[["slide_id", "x1", "y1", "x2", "y2", "class_name"]].values.tolist() == [
        ["a", 10.0, 30.0, 20.0, 50.0, "lesion"]
    ]
    assert truth.geometry.iloc[0].equals(shapely.box(10, 30, 20, 50))  # the outline, for FROC


def test_slide_truth_clips_at_the_slide_edge_as_labelling_does(tmp_path: Path) -> None:
    sheet = pd.DataFrame({"slide_id": ["a"], "patient_id": ["p"], "path": ["x/a.tiff"]})
    csv = tmp_path / "boxes.csv"
    csv.write_text("filename,x1,x2,y1,y2\na,90,104,-3,50\n")  # 4 px right, 3 px up of 100 x 100
    summary = tmp_path / "a.json"
    summary.write_text(json.dumps({"slide_id": "a", "mpp": 0.5, "width": 100, "height": 100}))
    truth = slide_truth(sheet, csv, {}, [summary])
    assert truth[["x1", "y1", "x2", "y2"]].values.tolist() == [[90.0, 0.0, 100.0, 50.0]]
    csv.write_text("filename,x1,x2,y1,y2\na,90,140,0,50\n")  # 40 px past: a wrong scale
    with pytest.raises(InputError, match="past the slide"):
        slide_truth(sheet, csv, {"edge_tolerance": 0.05}, [summary])


def test_class_tile_metrics_lesion_vs_rest_and_per_class() -> None:
    # labels: 0 background, 1 adeno, 2 squamous; prob is the lesion probability
    tiles = pd.DataFrame(
        {"label": [0, 0, 0, 1, 1, 2, 2, 2],
         "prob": [0.1, 0.2, 0.7, 0.9, 0.4, 0.8, 0.6, 0.3]}
    )  # fmt: skip
    by_class, multiclass = class_tile_metrics(tiles, ["adeno", "squamous"])
    assert multiclass is None and list(by_class) == ["adeno", "squamous"]
    assert by_class["adeno"]["n"] == 2 and by_class["adeno"]["lesion_recall"] == 0.5
    assert by_class["squamous"]["lesion_recall"] == pytest.approx(2 / 3)
    # adeno 0.9, 0.4 against background 0.1, 0.2, 0.7: 5 of 6 pairs ordered
    assert by_class["adeno"]["lesion_auc"] == pytest.approx(5 / 6)
    assert "auc" not in by_class["adeno"]
    probs = np.eye(3)[[0, 0, 1, 1, 2, 2, 1, 0]] * 0.8 + 0.2 / 3  # argmax right for 4 of 8
    with_probs = tiles.assign(
        **{f"prob_{c}": probs[:, k] for k, c in enumerate(["background", "adeno", "squamous"])}
    )
    by_class, multiclass = class_tile_metrics(with_probs, ["adeno", "squamous"])
    assert by_class["adeno"]["recall"] == 0.5
    assert by_class["squamous"]["recall"] == pytest.approx(1 / 3)
    assert by_class["adeno"]["precision"] == pytest.approx(1 / 3)
    assert multiclass["accuracy_at_argmax"] == 0.5 and "accuracy" not in multiclass
    # The out-of-fold priors: background's large prior never lets it win (ties go to adeno).
    decision = Decision(["background", "adeno", "squamous"], priors=[0.9, 0.05, 0.05])
    tuned = oof_class_metrics(with_probs, decision)  # calls 1, 1, 1, 1, 2, 2, 1, 1
    assert tuned["accuracy_at_oof_priors"] == 0.25 and tuned["oof_prior_background"] == 0.9
    assert tuned["balanced_accuracy_at_oof_priors"] == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)


def test_lesion_tile_metrics_at_half_and_at_the_oof_threshold() -> None:
    lesion = pd.Series([0, 0, 0, 1, 1, 1, 1, 1])
    prob = pd.Series([0.1, 0.2, 0.7, 0.9, 0.4, 0.8, 0.6, 0.3])
    plain = lesion_tile_metrics(lesion, prob)
    assert (plain["n"], plain["n_pos"], plain["recall_at_0.5"]) == (8, 5, 3 / 5)
    assert "recall" not in plain and "recall_at_oof_threshold" not in plain
    both = lesion_tile_metrics(lesion, prob, Decision(["0", "1"], threshold=0.25))
    assert both.items() >= plain.items() and both["oof_threshold"] == 0.25
    assert both["recall_at_oof_threshold"] == 1.0  # 0.4 and 0.3 are called too, and 0.7
    assert both["balanced_accuracy_at_oof_threshold"] == pytest.approx((1 + 2 / 3) / 2)
    priors = Decision(["0", "1"], priors=[0.5, 0.5])  # multi-class: no threshold to apply
    assert lesion_tile_metrics(lesion, prob, priors) == plain
