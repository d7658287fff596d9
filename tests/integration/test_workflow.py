"""The workflow end to end on a small synthetic cohort, and partial reruns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _workflow import SMALL_CONFIG, planned_jobs, snakemake, write_config
from mlflow.tracking import MlflowClient
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from histodetect.detection.boxes import boxes_from_heatmap
from histodetect.detection.heatmap import Heatmap
from histodetect.evaluation.cohort import slide_truth
from histodetect.evaluation.detection_metrics import slide_fbeta


def test_dry_run_has_one_training_job_per_fold(tmp_path: Path) -> None:
    for k in (2, 4):
        write_config(tmp_path, {**SMALL_CONFIG, "folds": k})
        proc = snakemake(tmp_path, "-n")
        jobs = planned_jobs(proc.stdout + proc.stderr)
        assert jobs["train_fold"] == k
        assert jobs["undersample"] == k
        assert jobs["tile_slide"] == SMALL_CONFIG["demo"]["n_slides"]


def test_full_run_writes_every_output(small_run: Path) -> None:
    res = small_run / "results"
    folds = SMALL_CONFIG["folds"]
    metrics = json.loads((res / "metrics" / "detection.json").read_text())
    # The model ranks tiles well (patch AUC 0.95 when written) but after 2 epochs its
    # probabilities are squeezed around 0.4, so the run's own boxes at 0.5 find nothing:
    # the floor on detection is the box step on the run's own heatmaps, thresholded just above
    # the test tiles' background (label 0) probabilities. A broken model, label step, heatmap
    # geometry or box step falls below these floors.
    assert metrics["n_slides"] >= 1 and 0.0 <= metrics["mean_f2"] <= 1.0
    assert metrics["patch"]["auc"] >= 0.8 and metrics["patch"]["n_pos"] > 0
    # Tile decisions at 0.5 and at the out-of-fold threshold, which the tile scores carry.
    threshold = json.loads((res / "models" / "threshold.json").read_text())["decision"]["threshold"]
    assert metrics["patch"]["oof_threshold"] == threshold
    assert 0 <= metrics["patch"]["balanced_accuracy_at_oof_threshold"] <= 1
    assert 0 <= metrics["patch"]["balanced_accuracy_at_0.5"] <= 1
    split = pd.read_csv(res / "splits" / "split.tsv", sep="\t")
    test_slides = split.loc[split.split == "test", "slide_id"].tolist()
    for slide in test_slides:
        scores = pd.read_parquet(res / "scores" / f"{slide}.parquet")
        assert (scores.call_at_oof_threshold == (scores.prob >= threshold)).all()
    truth_boxes = slide_truth(
        pd.read_csv(res / "demo" / "samples.tsv", sep="\t", dtype=str),
        res / "demo" / "annotations.csv",
        {},
        [res / "tiles" / f"{s}.json" for s in test_slides],
    )
    f2, recall = [], []
    for slide in test_slides:
        tiles = pd.read_parquet(res / "scores" / f"{slide}.parquet").merge(
            pd.read_parquet(res / "labels" / f"{slide}.parquet")[["x", "y", "label"]]
        )
        cut = tiles.prob[tiles.label == 0].max() + 1e-6
        boxes = boxes_from_heatmap(
            Heatmap.load(res / "heatmaps" / f"{slide}.npz"), threshold=float(cut), min_size_um=0
        )
        gt = truth_boxes.loc[truth_boxes.slide_id == slide, ["x1", "y1", "x2", "y2"]]
        got = slide_fbeta(boxes[["x1", "y1", "x2", "y2"]].to_numpy(), boxes.score, gt.to_numpy())
        f2.append(got["f2"])
        recall.append(got["recall"])
    assert np.mean(f2) >= 0.5 and np.mean(recall) >= 0.5, (f2, recall)
    truth = pd.read_csv(small_run / "results" / "demo" / "annotations.csv")
    for slide in test_slides:
        boxes = pd.read_csv(res / "boxes" / f"{slide}.csv", dtype={"slide_id": str})
        assert {"slide_id", "x1", "y1", "x2", "y2", "score"} <= set(boxes.columns)
        assert (boxes.slide_id == slide).all() and (boxes.x1 < boxes.x2).all()
        assert boxes.score.is_monotonic_decreasing
        n_true = int((truth.filename == f"{slide}.tiff").sum())
        geo = json.loads((res / "boxes" / f"{slide}.geojson").read_text())
        assert geo["type"] == "FeatureCollection" and len(geo["features"]) >= len(boxes) + n_true
        heat = np.load(res / "heatmaps" / f"{slide}.npz")
        scores = pd.read_parquet(res / "scores" / f"{slide}.parquet")
        assert np.isfinite(heat["prob"]).sum() == len(scores) > 0
        assert scores.prob.between(0, 1).all()
        with Image.open(res / "overlays" / f"{slide}.png") as png:
            assert max(png.size) >= 1000
    for fold in range(folds):
        assert (res / "models" / f"fold_{fold}" / "model.pt").exists()
    # MLflow: one run per fold, with per-epoch metrics.
    client = MlflowClient(tracking_uri=f"sqlite:///{res / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("histodetect")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == folds
    # TensorBoard: an event file per fold with a loss curve.
    for fold in range(folds):
        acc = EventAccumulator(str(res / "tensorboard" / f"fold_{fold}")).Reload()
        assert any("loss" in tag for tag in acc.Tags()["scalars"])
    submission = pd.read_csv(res / "metrics" / "submission.csv")
    assert list(submission.columns) == ["filename", "x1", "x2", "y1", "y2"]
    # No patient on both sides of the split.
    assert split.groupby("patient_id").split.nunique().max() == 1


def test_second_run_is_a_no_op(small_run: Path) -> None:
    proc = snakemake(small_run)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_rerun_of_one_fold_touches_only_its_descendants(small_run: Path) -> None:
    proc = snakemake(small_run, "-f", "results/models/fold_1/model.pt")
    ran = planned_jobs(proc.stdout + proc.stderr)
    assert ran == {"train_fold": 1}
    plan = planned_jobs(snakemake(small_run, "-n").stdout)
    # Whatever still needs doing depends on fold 1's model; nothing upstream or beside it.
    # (out-of-fold heatmaps read every fold model: all of them and the tuning redo)
    # (the fold's metrics.json is oof_threshold's, its curves are redrawn, it is recalibrated)
    after = {"infer_slide", "boxes_from_heatmap", "evaluate", "oof_threshold", "fold_summary"}
    after |= {"training_curves", "calibrate_fold"}
    assert set(plan) <= after | {"infer_oof", "tune_boxes", "report_description", "all"}
    snakemake(small_run)
    assert "Nothing to be done" in snakemake(small_run, "-n").stdout


def test_tile_slide_reads_a_real_aperio_slide(tmp_path: Path, cmu_svs: Path) -> None:
    slide = cmu_svs
    sheet = tmp_path / "samples.tsv"
    pd.DataFrame({"slide_id": ["CMU-1"], "patient_id": ["p1"], "path": [str(slide)]}).to_csv(
        sheet, sep="\t", index=False
    )
    ann = tmp_path / "annotations.csv"
    ann.write_text("filename,x1,x2,y1,y2\n")
    write_config(
        tmp_path,
        {"demo": {"enabled": False}, "samples": str(sheet), "annotations": str(ann)},
    )
    snakemake(tmp_path, "results/tiles/CMU-1.parquet")
    tiles = pd.read_parquet(tmp_path / "results" / "tiles" / "CMU-1.parquet")
    info = json.loads((tmp_path / "results" / "tiles" / "CMU-1.json").read_text())
    assert info["mpp"] == 0.499
    assert len(tiles) > 10
    assert (tiles.x + tiles["size"] <= 2220).all() and (tiles.y + tiles["size"] <= 2967).all()
    assert (tmp_path / "results" / "qc" / "CMU-1.png").exists()


# Partial reruns on a private copy of the small run (the session's run stays untouched). The
# rerun triggers are the default profile's: mtime, params, input, software-env (not code).
TRIGGERS = ("--rerun-triggers", "mtime", "params", "input", "software-env")


def _jobs_besides_all(output: str) -> dict[str, int]:
    return {rule: n for rule, n in planned_jobs(output).items() if rule != "all"}


def _test_slides(workdir: Path) -> list[str]:
    split = pd.read_csv(workdir / "results" / "splits" / "split.tsv", sep="\t", dtype=str)
    return sorted(split.loc[split.split == "test", "slide_id"])


def _set_config(workdir: Path, section: str, key: str, value: object) -> None:
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    assert config[section][key] != value
    config[section][key] = value
    path.write_text(yaml.safe_dump(config))


def test_rerun_of_one_slide_redoes_its_inference_boxes_and_evaluation(run_copy: Path) -> None:
    slide = _test_slides(run_copy)[0]
    proc = snakemake(run_copy, *TRIGGERS, "--forcerun", f"results/heatmaps/{slide}.npz")
    out = proc.stdout + proc.stderr
    assert _jobs_besides_all(out) == {
        "infer_slide": 1,
        "boxes_from_heatmap": 1,
        "evaluate": 1,
        "report_description": 1,
    }
    assert set(re.findall(r"wildcards: slide=(\w+)", out)) == {slide}
    assert "Nothing to be done" in snakemake(run_copy, *TRIGGERS, "-n").stdout


def test_changed_box_threshold_reruns_only_boxes_and_evaluation(run_copy: Path) -> None:
    _set_config(run_copy, "boxes", "threshold", 0.3)
    plan = _jobs_besides_all(snakemake(run_copy, *TRIGGERS, "-n").stdout)
    assert plan == {
        "tune_boxes": 1,  # its search starts from the config's box settings
        "boxes_from_heatmap": len(_test_slides(run_copy)),
        "evaluate": 1,
        "report_description": 1,
    }
    before = (run_copy / "results" / "heatmaps").stat().st_mtime_ns
    snakemake(run_copy, *TRIGGERS)
    assert (run_copy / "results" / "heatmaps").stat().st_mtime_ns == before
    assert "Nothing to be done" in snakemake(run_copy, *TRIGGERS, "-n").stdout


def test_changed_learning_rate_retrains_every_fold_and_keeps_the_tiles(run_copy: Path) -> None:
    _set_config(run_copy, "train", "lr", 0.0005)
    plan = _jobs_besides_all(snakemake(run_copy, *TRIGGERS, "-n").stdout)
    n_test = len(_test_slides(run_copy))
    assert plan["train_fold"] == SMALL_CONFIG["folds"]
    assert plan["infer_slide"] == plan["boxes_from_heatmap"] == n_test
    assert plan["evaluate"] == plan["fold_summary"] == 1
    upstream = {"make_demo_cohort", "tile_slide", "label_tiles", "tiling_summary"}
    upstream |= {"split_patients", "make_folds", "undersample"}
    assert not upstream & set(plan), plan
