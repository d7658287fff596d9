"""Mitoses in the 15 MITOS 2012 test fields (5 slides), leave one slide out, through the workflow.

What it does, in a scratch folder (``--workdir``, one subfolder per run):

1. Writes a sample sheet (one row per field: ``slide_id`` the image name, ``patient_id`` its
   slide ``A00``-``A04``, ``path``, ``mpp`` 0.2456, ``annotation``) and one point file per field
   (``x,y,class``) from ``mitos2012/points.csv`` of the real data (``histodetect.testdata``'s
   folder: ``HISTODETECT_TEST_DATA``, else ``../shared/data``): the expert centres as
   ``mitosis`` and, as ``hard_negative``, the darkest nucleus-like blobs of the baseline below
   lying more than 10 um from any expert centre (look-alikes: sampling keeps them first).
2. Runs ``snakemake results/metrics/points.json`` on the repository's Snakefile with a config
   of 24 um tiles every 8 um at 0.5 um/px, a ResNet-10t, ``labels.overlap: point`` with a
   point radius of 8 um, ``split.test_fraction: 0`` and ``folds: 5``: each fold holds out one
   slide's fields; D4 and colour augmentation in training; ``train.calibration: none`` (raw
   fold models: the bench applies each calibration itself, below). One workflow run per
   ``--runs`` entry: ``scratch`` (random init, as before), ``scratch+hn``
   (``points.hard_negative_rounds: 1``: each fold retrained with its round-0 model's false
   positives on its own training fields as extra negatives) and ``ssl`` (``train.init: ssl``,
   the SimCLR encoder of rule ``pretrain_encoder`` on the training fields' tiles,
   ``--ssl-epochs``, 3000 tiles).
3. For each run, calibration: every fold model's validation rows (its held-out slide's
   tiles) give each method's log loss and ECE, every field scored by the map fitted on the
   fold's other fields (out of sample); then for ``plain`` (raw) and each method fitted on
   the fold's validation rows (``temperature``, ``platt``, ``isotonic``), every field's
   out-of-fold heatmap is calibrated by its fold's map, its points extracted (the workflow's
   ``points`` settings) and scored with the 8 um greedy match, each fold at the score
   threshold best on the *other* folds' fields: per fold and pooled F1, and the count error
   (mean absolute error of the per-field count of detections at that threshold against the
   expert count, and Spearman's rho over the 15 fields). Note: a fold's map is fitted on
   its held-out slide's tile labels (the issue's design: calibration on the model's own
   validation rows), so the calibrated rows use one or two numbers learnt from the fold
   they score; ``platt_field_out`` fits each field's map on its slide's other fields only,
   to show how much of the gain that is.
4. The baseline, no network: dark blobs of the grey image (Gaussian-smoothed, at or below a
   grey level) 10-200 um^2 in area, their centroids scored by darkness; the grey level and
   the score threshold of each fold are chosen on the other folds' fields, the same way.

The last line is ``f1=<best> f1_plain=<scratch, raw> mae_count=<of the best> baseline_f1=<b>``
(best over runs and calibrations, named on the line before). Not a test: run it by hand
under the heavy-run lock, e.g.

    flock /tmp/histodetect-heavy.lock .venv/bin/python bench/mitos2012.py   # ~30 min, 2 cores
    .venv/bin/python bench/mitos2012.py --epochs 1 --runs scratch --workdir /tmp/m1  # plumbing

Measured (2026-12-04, 2 cores shared with other work, 4 epochs), ``scratch`` (workflow 17.8
min): calibration mean out-of-sample NLL/ECE platt 0.148/0.024, temperature 0.165/0.041,
isotonic 0.201/0.021, raw 0.182/0.068; pooled point F1 plain 0.216 (folds A00 and A03 at 0),
platt 0.346 (no fold at 0; count MAE 5.60 against 7.00, Spearman 0.566 against -0.428),
isotonic 0.331, temperature 0.072 (it keeps 0.5 fixed, so the folds' thresholds stay apart),
platt_field_out 0.303 (one fold, A02, at 0). ``ssl`` (workflow 27.2 min): NLL/ECE platt
0.097/0.018, isotonic 0.140/0.019, temperature 0.168/0.076, raw 0.195/0.109; pooled F1 plain
0.364 (A01 at 0), temperature 0.432 (A01 at 0), platt 0.407 (no fold at 0; count MAE 3.73,
Spearman 0.744), isotonic 0.408, platt_field_out 0.444 (no fold at 0). Baseline 0.122. Both
runs 45 min. ``scratch+hn`` (workflow 10.4 min on 2 cores alone; 129 false-positive tiles
added in fold 0): NLL/ECE platt 0.123/0.014, raw 0.182/0.087; pooled F1 plain 0.168 (A04 and
A03 at 0), platt 0.342 (no fold at 0; count MAE 6.33, Spearman -0.141), isotonic 0.330,
temperature 0.282, platt_field_out 0.267 (A03 at 0): the hard-negative round does not help,
so ``points.hard_negative_rounds`` stays 0. The last line (``--runs scratch,ssl,scratch+hn``,
the first two on the finished runs, 11.6 min in all):
``f1=0.444 f1_plain=0.216 mae_count=6.73 baseline_f1=0.122``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from scipy import ndimage
from scipy.stats import spearmanr

from histodetect.detection.heatmap import Heatmap
from histodetect.points.detect import points_from_heatmap
from histodetect.points.metrics import (
    best_f1_threshold,
    bootstrap_f1,
    evaluate_out_of_fold,
    image_counts,
    pooled,
    scored_matches,
    truth_by_image,
)
from histodetect.testdata import default_local
from histodetect.training.calibration import (
    METHODS,
    Calibration,
    compare_methods,
    fit_calibration,
    prediction_arrays,
)

REPO = Path(__file__).resolve().parents[1]
DATA = default_local() / "mitos2012"
MPP = 0.2456  # scanner A (Aperio XT), 40x
MATCH_UM = 8.0
GREY_LEVELS = (70.0, 90.0, 110.0, 130.0)
BLOB_AREA_UM2 = (10.0, 200.0)


def dark_blobs(path: Path, grey_level: float) -> pd.DataFrame:
    """Centroids ``x, y, score`` (level-0 px) of dark nucleus-sized blobs, darkest first."""
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L"), np.float32)
    smooth = ndimage.gaussian_filter(grey, sigma=1.0 / MPP)  # 1 um
    labels, n = ndimage.label(smooth <= grey_level)
    if n == 0:
        return pd.DataFrame(columns=["x", "y", "score"], dtype=float)
    index = np.arange(1, n + 1)
    area = ndimage.sum_labels(np.ones_like(smooth), labels, index) * MPP * MPP
    keep = (area >= BLOB_AREA_UM2[0]) & (area <= BLOB_AREA_UM2[1])
    centres = np.asarray(ndimage.center_of_mass(np.ones_like(smooth), labels, index[keep]))
    darkness = 255.0 - np.asarray(ndimage.mean(smooth, labels, index[keep]))
    table = pd.DataFrame(
        {"x": centres[:, 1] if keep.any() else [], "y": centres[:, 0] if keep.any() else [],
         "score": darkness / 255.0 if keep.any() else []}
    )  # fmt: skip
    return table.sort_values("score", ascending=False, ignore_index=True)


def write_inputs(workdir: Path, points: pd.DataFrame, hard_per_field: int) -> pd.DataFrame:
    """Sample sheet, point files (mitoses and baseline look-alikes) and an empty box CSV."""
    rows = []
    for image, centres in points.groupby("image", sort=True):
        slide_id = Path(image).stem
        blobs = dark_blobs(DATA / "images" / image, max(GREY_LEVELS))
        xy = centres[["x", "y"]].to_numpy(float)
        far = np.hypot(*(blobs[["x", "y"]].to_numpy()[:, None] - xy[None]).transpose(2, 0, 1))
        look_alikes = blobs[far.min(1) * MPP > 10.0].head(hard_per_field)
        table = pd.concat(
            [centres[["x", "y"]].assign(**{"class": "mitosis"}),
             look_alikes[["x", "y"]].round(1).assign(**{"class": "hard_negative"})]
        )  # fmt: skip
        ann = workdir / "points" / f"{slide_id}.csv"
        ann.parent.mkdir(parents=True, exist_ok=True)
        write_if_changed(ann, table.to_csv(index=False))
        rows.append(
            (slide_id, centres.patient_id.iloc[0], str(DATA / "images" / image), MPP, str(ann))
        )
    sheet = pd.DataFrame(rows, columns=["slide_id", "patient_id", "path", "mpp", "annotation"])
    write_if_changed(workdir / "samples.tsv", sheet.to_csv(sep="\t", index=False))
    write_if_changed(workdir / "boxes.csv", "filename,x1,x2,y1,y2\n")
    return sheet


def workflow_config(
    workdir: Path,
    epochs: int,
    seed: int,
    *,
    init: str = "scratch",
    ssl_epochs: int = 8,
    hard_negative_rounds: int = 0,
) -> Path:
    """The workflow's config: raw fold models (``train.calibration: none``, the bench applies
    each calibration itself), from scratch or, with ``init="ssl"``, from the SimCLR encoder
    of the cohort's training fields (rule ``pretrain_encoder``; bench/ssl_encoder.py's settings)."""
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    overrides = {
        "demo": {**base["demo"], "enabled": False},
        "samples": str(workdir / "samples.tsv"),
        "annotations": str(workdir / "boxes.csv"),
        "seed": seed,
        "tiling": {**base["tiling"], "tile_um": 24.0, "stride_um": 8.0, "target_mpp": 0.5,
                   "min_tissue": 0.0},
        "annotation_import": {**base["annotation_import"], "point_radius_um": 8.0},
        "labels": {**base["labels"], "overlap": "point", "negative_classes": ["hard_negative"]},
        "split": {**base["split"], "test_fraction": 0.0},
        "folds": 5,
        "sampling": {**base["sampling"], "neg_ratio": 4.0, "max_val_tiles": 1000},
        "train": {**base["train"], "backbone": "resnet10t", "epochs": epochs, "batch_size": 64, "lr": 0.002,
                  "early_stopping_patience": epochs, "colour_jitter": 0.1, "num_workers": 0,
                  "dropout": 0.2, "device": "cpu", "calibration": "none",
                  "init": "ssl" if init == "ssl" else None},
        "ssl": {**base["ssl"], "method": "simclr", "epochs": ssl_epochs, "max_tiles": 3000,
                "batch_size": 64, "num_workers": 1, "device": "cpu"},
        "infer": {**base["infer"], "batch_size": 256, "device": "cpu"},
        "points": {**base["points"], "method": "maxima", "min_distance_um": 8.0,
                   "min_score": 0.05, "match_um": MATCH_UM,
                   "hard_negative_rounds": hard_negative_rounds},
    }  # fmt: skip
    path = workdir / "config.yaml"
    write_if_changed(path, yaml.safe_dump({**base, **overrides}))
    return path


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds it (a rerun of the bench on a finished
    run then leaves its inputs' times, and so the workflow's outputs, alone)."""
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def run_workflow(workdir: Path, cores: int) -> None:
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
        "--workflow-profile", "none", "--cores", str(cores), "results/metrics/points.json",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": str(cores)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


def baseline(points: pd.DataFrame, folds: dict[str, int]) -> pd.DataFrame:
    """Per-field counts of the colour-threshold baseline, grey level and threshold out of fold."""
    images = sorted(folds)
    truth = truth_by_image(points.assign(image=points.image.str.replace(".jpg", "")), images)
    n_truth = {i: len(truth[i]) for i in images}
    mpp = dict.fromkeys(images, MPP)
    matches = {
        level: scored_matches(
            {i: dark_blobs(DATA / "images" / f"{i}.jpg", level) for i in images}, truth, mpp, MATCH_UM
        )
        for level in GREY_LEVELS
    }  # fmt: skip
    out = []
    for k in sorted(set(folds.values())):
        others = [i for i in images if folds[i] != k]
        n_others = sum(n_truth[i] for i in others)
        scored = {
            lv: best_f1_threshold(m[m.image.isin(others)], n_others) for lv, m in matches.items()
        }
        level = max(scored, key=lambda lv: scored[lv][1])
        mine = [i for i in images if folds[i] == k]
        counts = image_counts(matches[level][matches[level].image.isin(mine)],
                              {i: n_truth[i] for i in mine}, scored[level][0])  # fmt: skip
        out.append(counts.assign(fold=k, threshold=scored[level][0], grey_level=level))
    return pd.concat(out, ignore_index=True)


def stage_times(workdir: Path) -> str:
    """Seconds per workflow stage, summed over its jobs (Snakemake's benchmark files)."""
    parts = []
    for stage in ("tile_slide", "label_tiles", "train_fold", "infer_oof", "oof_points"):
        files = sorted((workdir / "benchmarks" / stage).glob("*.tsv"))
        total = sum(float(pd.read_csv(f, sep="\t").s.iloc[0]) for f in files)
        parts.append(f"{stage} {total:.0f} s ({len(files)} jobs)")
    tiles = pd.read_csv(workdir / "results" / "qc" / "tiling_summary.tsv", sep="\t")
    return f"stages: {', '.join(parts)}; {int(tiles.tiles.sum())} tiles of 24 um every 8 um"


def report(name: str, per_image: pd.DataFrame, seed: int) -> dict[str, float]:
    for k, part in per_image.groupby("fold"):
        p = pooled(part)
        slides = ",".join(sorted({i[:3] for i in part.image}))
        print(f"{name} fold {k} ({slides}, {len(part)} fields, threshold {part.threshold.iloc[0]:.3f}): "
              f"precision {p['precision']:.3f} recall {p['recall']:.3f} F1 {p['f1']:.3f} "
              f"(tp {p['tp']}, fp {p['fp']}, fn {p['fn']})")  # fmt: skip
    total = pooled(per_image)
    lo, hi = bootstrap_f1(per_image, seed=seed)
    print(f"{name} pooled: precision {total['precision']:.3f} recall {total['recall']:.3f} "
          f"F1 {total['f1']:.3f} (95% bootstrap over fields {lo:.3f}-{hi:.3f})")  # fmt: skip
    return total


def fold_calibrations(results: Path, method: str) -> dict[int, Calibration]:
    """Each fold model's ``method`` calibration, fitted on its own validation rows."""
    out = {}
    for path in sorted((results / "models").glob("fold_*/val_predictions.parquet")):
        y, probs = prediction_arrays(pd.read_parquet(path))
        out[int(path.parent.name.split("_")[1])] = fit_calibration(y, probs, method)
    return out


def calibration_scores(results: Path) -> pd.DataFrame:
    """Log loss and ECE of every method per fold, each field's tiles calibrated by the map
    fitted on the fold's other validation fields (:func:`compare_methods`)."""
    tables = []
    for path in sorted((results / "models").glob("fold_*/val_predictions.parquet")):
        scores = compare_methods(pd.read_parquet(path), METHODS, group="slide_id")
        tables.append(scores.assign(fold=int(path.parent.name.split("_")[1])))
    table = pd.concat(tables, ignore_index=True)
    for fold, part in table.groupby("fold"):
        cells = ", ".join(f"{r.method} {r.nll:.3f}/{r.ece:.3f}" for r in part.itertuples())
        print(f"calibration fold {fold} ({int(part.n_rows.iloc[0])} val tiles), NLL/ECE: {cells}")
    mean = table.groupby("method")[["nll", "ece"]].mean().reindex(list(METHODS))
    cells = ", ".join(f"{m} {r.nll:.3f}/{r.ece:.3f}" for m, r in mean.iterrows())
    print(f"calibration mean over folds, NLL/ECE: {cells}; least NLL: {mean.nll.idxmin()}")
    return mean


def field_out_calibrations(
    results: Path, folds: dict[str, int], method: str
) -> dict[str, Calibration]:
    """Per field, ``method`` fitted on its fold's validation rows of the *other* fields of
    that slide: no field's own labels calibrate it (the slide's other fields still do)."""
    out = {}
    for image, fold in folds.items():
        table = pd.read_parquet(results / "models" / f"fold_{fold}" / "val_predictions.parquet")
        y, probs = prediction_arrays(table[table.slide_id.astype(str) != image])
        out[image] = fit_calibration(y, probs, method)
    return out


def variant_points(
    results: Path, folds: dict[str, int], calibrations: dict[str, Calibration] | None
) -> dict[str, pd.DataFrame]:
    """Every field's out-of-fold points, from its heatmap calibrated by its map."""
    cfg = yaml.safe_load((results.parent / "config.yaml").read_text())["points"]
    out = {}
    for image in folds:
        heatmap = Heatmap.load(results / "oof" / "heatmaps" / f"{image}.npz")
        prob = heatmap.prob.astype(np.float64)
        if calibrations is not None:
            finite = np.isfinite(prob)
            prob[finite] = calibrations[image].apply(prob[finite])
        out[image] = points_from_heatmap(
            dataclasses.replace(heatmap, prob=prob.astype(np.float32)),
            cfg["min_score"],
            method=cfg["method"],
            min_distance_um=cfg["min_distance_um"],
        )
    return out


def count_error(per_image: pd.DataFrame) -> tuple[float, float]:
    """Mean absolute error of the per-field mitosis count and Spearman's rho over fields."""
    found, true = per_image.tp + per_image.fp, per_image.tp + per_image.fn
    return float((found - true).abs().mean()), float(spearmanr(found, true).statistic)


def score_variants(
    results: Path, points: pd.DataFrame, folds: dict[str, int], seed: int, label: str
) -> dict[str, tuple[dict[str, float], pd.DataFrame]]:
    """Per fold and pooled point F1 and count error of the raw and each calibrated variant."""
    truth = points.assign(image=points.image.str.replace(".jpg", ""))
    mpp = dict.fromkeys(folds, MPP)
    out = {}
    for method in (*METHODS, "platt_field_out"):
        if method == "platt_field_out":
            calibrations = field_out_calibrations(results, folds, "platt")
        elif method != "none":
            by_fold = fold_calibrations(results, method)
            calibrations = {image: by_fold[fold] for image, fold in folds.items()}
        else:
            calibrations = None
        detections = variant_points(results, folds, calibrations)
        floor = yaml.safe_load((results.parent / "config.yaml").read_text())["points"]["min_score"]
        _, per_image = evaluate_out_of_fold(
            detections, truth, folds, mpp, match_um=MATCH_UM, floor=floor, bootstrap=10, seed=seed
        )
        name = f"{label} {'plain' if method == 'none' else method}"
        total = report(name, per_image, seed)
        mae, rho = count_error(per_image)
        print(f"{name} count per field: MAE {mae:.2f}, Spearman {rho:.3f}")
        out[method] = (total | {"mae_count": mae, "spearman_count": rho}, per_image)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/histodetect-mitos2012"))
    parser.add_argument("--epochs", type=int, default=4)  # 3 runs in ~30 min, 2 cores
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--hard-per-field", type=int, default=15)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--runs", default="scratch,ssl,scratch+hn", help="comma list of scratch, ssl, +hn"
    )
    parser.add_argument("--ssl-epochs", type=int, default=8)
    args = parser.parse_args()
    start = time.perf_counter()
    points = pd.read_csv(DATA / "points.csv")
    results_of: dict[str, dict[str, tuple[dict[str, float], pd.DataFrame]]] = {}
    for run in args.runs.split(","):
        t0 = time.perf_counter()
        init, rounds = run.removesuffix("+hn"), int(run.endswith("+hn"))
        workdir = args.workdir / run.replace("+", "_")
        workdir.mkdir(parents=True, exist_ok=True)
        write_inputs(workdir, points, args.hard_per_field)
        workflow_config(
            workdir, args.epochs, args.seed, init=init, ssl_epochs=args.ssl_epochs,
            hard_negative_rounds=rounds,
        )  # fmt: skip
        run_workflow(workdir, args.cores)
        results = workdir / "results"
        record = json.loads((results / "metrics" / "points.json").read_text())
        per_image = pd.read_csv(results / "metrics" / "points_per_image.tsv", sep="\t")
        folds = dict(zip(per_image.image, per_image.fold, strict=True))
        print(
            f"== {run}: MITOS 2012 test set, {len(folds)} fields of 5 slides, "
            f"{record['n_truth']} mitoses; leave one slide out; match within {MATCH_UM:g} um"
        )
        print(f"workflow ({run}, 5 fold models x {args.epochs} epochs, out-of-fold heatmaps, "
              f"points): {(time.perf_counter() - t0) / 60:.1f} min on {args.cores} cores; "
              f"its points.json (raw models): F1 {record['f1']:.3f}")  # fmt: skip
        print(stage_times(workdir))
        calibration_scores(results)
        results_of[run] = score_variants(results, points, folds, args.seed, run)
    first = next(iter(results_of.values()))
    base = report("baseline", baseline(points, dict(zip(first["none"][1].image,
                                                       first["none"][1].fold, strict=True))),
                  args.seed)  # fmt: skip
    best_run, best_method = max(
        ((i, m) for i in results_of for m in results_of[i]),
        key=lambda im: results_of[im[0]][im[1]][0]["f1"],
    )
    best = results_of[best_run][best_method][0]
    plain = results_of[next(iter(results_of))]["none"][0]
    print(f"best: {best_run} {best_method}; total {(time.perf_counter() - start) / 60:.1f} min")
    print(f"f1={best['f1']:.3f} f1_plain={plain['f1']:.3f} mae_count={best['mae_count']:.2f} "
          f"baseline_f1={base['f1']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
