"""`snakemake points` on a few synthetic fields with point annotations (mitosis-like discs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _workflow import snakemake, write_config
from PIL import Image

from histodetect.detection.heatmap import Heatmap
from histodetect.points.detect import points_from_heatmap

pytestmark = pytest.mark.integration

MPP = 0.5
SIDE = 640  # px: 320 um fields
N_FIELDS = 6  # one patient each: 2 test fields, 4 in 2 folds
HOTSPOT_MM2 = 0.01  # a 100 um window, smaller than a field


def write_fields(folder: Path, seed: int = 5, n: int = N_FIELDS, prefix: str = "F") -> Path:
    """JPEG fields of pink noise with dark 9 um discs (the centres annotated as ``mitosis``)
    and paler ones (``lookalike``), a sample sheet and an empty DigiLut box file."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    rows = []
    for i in range(n):
        image = np.empty((SIDE, SIDE, 3), np.float32)
        image[:] = [225, 175, 200]
        image += rng.normal(0, 8, size=image.shape)
        centres = rng.uniform(40, SIDE - 40, size=(14, 2))
        table = []
        for k, (x, y) in enumerate(centres):
            disc = np.hypot(xx - x, yy - y) <= 9
            mitosis = k < 9
            image[disc] = [70, 30, 90] if mitosis else [170, 120, 170]
            table.append((round(x, 1), round(y, 1), "mitosis" if mitosis else "lookalike"))
        path = folder / f"{prefix}{i}.jpg"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=95)
        ann = folder / f"{prefix}{i}.csv"
        pd.DataFrame(table, columns=["x", "y", "class"]).to_csv(ann, index=False)
        rows.append((f"{prefix}{i}", f"P{prefix}{i}", str(path), MPP, str(ann)))
    sheet = folder / f"{prefix}samples.tsv"
    pd.DataFrame(rows, columns=["slide_id", "patient_id", "path", "mpp", "annotation"]).to_csv(
        sheet, sep="\t", index=False
    )
    (folder / "boxes.csv").write_text("filename,x1,x2,y1,y2\n")
    return sheet


def config(folder: Path) -> dict:
    return {
        "demo": {"enabled": False},
        "samples": str(write_fields(folder)),
        "annotations": str(folder / "boxes.csv"),
        "tiling": {"tile_um": 24.0, "stride_um": 12.0, "target_mpp": MPP, "min_tissue": 0.0},
        "annotation_import": {"point_radius_um": 8.0},
        "labels": {"overlap": "point", "negative_classes": ["lookalike"]},
        "split": {"test_fraction": 0.34, "stratify_by": None},
        "folds": 2,
        "sampling": {"neg_ratio": 3.0},
        "train": {"backbone": "resnet10t", "epochs": 2, "batch_size": 64, "lr": 0.002,
                  "num_workers": 0, "device": "cpu"},
        "infer": {"batch_size": 256, "device": "cpu"},
        # train.init auto in points mode: the fold models start from the cohort's own encoder
        "ssl": {"epochs": 1, "max_tiles": 256, "batch_size": 32, "num_workers": 0},
        "points": {"hotspot_mm2": HOTSPOT_MM2, "bootstrap": 50,
                   "tune_grid": {"method": ["maxima", "components"],
                                 "min_distance_um": [8.0, 16.0],
                                 "component_threshold": [0.5, 0.8]}},
    }  # fmt: skip


def same_points(points: pd.DataFrame, heatmap_path: Path, settings: dict) -> None:
    """``points`` are the heatmap's at the tuned setting, all at or above its threshold."""
    expected = points_from_heatmap(
        Heatmap.load(heatmap_path), settings["threshold"], method=settings["method"],
        min_distance_um=settings["min_distance_um"] or 8.0,
    )  # fmt: skip
    assert len(points) == len(expected)
    np.testing.assert_allclose(points[["x", "y", "score"]], expected, rtol=1e-6)
    assert (points.score >= settings["threshold"]).all()


def test_points_counts_and_metrics_of_test_fields_and_new_slides(tmp_path: Path) -> None:
    write_config(tmp_path, config(tmp_path))
    proc = snakemake(tmp_path, "points")
    res = tmp_path / "results"
    assert "tile classifiers start from the cohort's own self-supervised encoder" in proc.stderr
    assert (res / "encoder" / "ssl" / "encoder.pt").exists()
    split = pd.read_csv(res / "splits" / "split.tsv", sep="\t", dtype=str)
    train = sorted(split.slide_id[split.split == "train"])
    test = sorted(split.slide_id[split.split == "test"])
    assert len(test) == 2 and len(train) == 4

    tuned = json.loads((res / "tuning" / "points.json").read_text())
    assert sorted(tuned["slides"]) == train  # tuned on the training fields only
    search = pd.read_csv(res / "tuning" / "points_search.tsv", sep="\t")
    assert len(search) == 4 and tuned["oof_f1"] == pytest.approx(search.f1.max(), abs=1e-4)
    settings = tuned["settings"]

    counts = pd.read_csv(res / "points" / "counts.tsv", sep="\t", dtype={"slide_id": str})
    assert sorted(counts.slide_id) == test
    side = np.sqrt(HOTSPOT_MM2) * 1000 / MPP
    for slide in test:
        assert not (res / "oof" / "heatmaps" / f"{slide}.npz").exists()
        points = pd.read_csv(res / "points" / f"{slide}.csv")
        same_points(points, res / "heatmaps" / f"{slide}.npz", settings)  # the fold ensemble's
        row = counts.set_index("slide_id").loc[slide]
        assert row.n_points == len(points) and row.hotspot_kind == "window"
        assert row.hotspot_x2 - row.hotspot_x1 == pytest.approx(side)
        inside = points.x.between(row.hotspot_x1, row.hotspot_x2) & points.y.between(
            row.hotspot_y1, row.hotspot_y2
        )
        assert row.hotspot_count == inside.sum() <= len(points)
        feats = json.loads((res / "points" / f"{slide}.geojson").read_text())["features"]
        assert feats[-1]["properties"]["classification"]["name"] == "Hotspot"
        assert len(feats) == len(points) + 1

    metrics = json.loads((res / "metrics" / "points.json").read_text())
    assert metrics["n_images"] == 4 and "folds" in metrics and "count_mae" in metrics
    assert metrics["test"]["n_images"] == 2 and metrics["test"]["n_truth"] == 18
    assert metrics["test"]["threshold"] == settings["threshold"]
    found = int(counts.n_points.sum())
    assert metrics["test"]["tp"] + metrics["test"]["fp"] == found

    # New slides (target predict): their ensemble heatmaps at the same tuned setting.
    new = tmp_path / "new"
    new.mkdir()
    sheet = pd.read_csv(write_fields(new, seed=9, n=2, prefix="N"), sep="\t")
    sheet[["slide_id", "path", "mpp"]].to_csv(tmp_path / "new.tsv", sep="\t", index=False)
    snakemake(tmp_path, "predict", "--config", "predict={samples: new.tsv}")
    pred = res / "predict"
    table = pd.read_csv(pred / "points" / "counts.tsv", sep="\t", dtype={"slide_id": str})
    assert sorted(table.slide_id) == ["N0", "N1"]
    for slide in ("N0", "N1"):
        points = pd.read_csv(pred / "points" / f"{slide}.csv")
        same_points(points, pred / "heatmaps" / f"{slide}.npz", settings)
        assert table.set_index("slide_id").loc[slide, "n_points"] == len(points)
