"""Slide-label models on the graded demo cohort and on a harder one; ``--speed``: train_mil at scale.

What it does, per cohort (``demo``: ``config/mil_demo.yaml``; ``harder``: the same with
:data:`histodetect.slides.graded.HARDER`, as ``config/mil_harder.yaml``), in a scratch folder:

1. Runs the workflow up to the bag models (``snakemake mil --omit-from train_mil`` on the
   repository's Snakefile, ``--directory <workdir>/<cohort>_<features>``): the cohort, tiling
   (``--tile-um``, 32 um: the harder cohort's 100-160 um lesions then cover 9-25 tiles, so
   that a slide's 10 most attended tiles can all lie in one), the feature files
   (``results/features/<encoder_id>/<slide>.h5``) and the bag folds, with
   ``split.test_fraction: 0`` so that every bag is in a fold and scored out of fold. The
   features (``--features``): ``ssl``, the cohort's own SimCLR encoder (rule
   ``pretrain_encoder``, ``--ssl-tiles`` tiles of all slides, no labels, ``--ssl-epochs``;
   it sees the validation bags' tiles unlabelled), or ``timm``, the config's random-init
   resnet18 (no hub weights offline).
2. Trains each model of ``--models`` directly through the package on the same feature files
   and the same folds (``mil.train.train_fold`` per fold, the rule train_mil's code; faster
   than one workflow run per model, the features are extracted once; ``concat``, the summary
   image, is ``mil.train_concat.train_fold`` on the same tiles read from the slides,
   ``--concat-epochs``, the config's ``mil.concat`` section), then ``mil.ensemble.ensemble``
   gives the out-of-fold figures the workflow reports (``oof_auc``: macro one-vs-rest;
   ``oof_qwk`` at the grade decision chosen out of fold).
3. Where the attention went: for every slide with a hidden lesion, its 10 most attended tiles
   by the fold model blind to it (concat: the occlusion effect of each drawn tile, the
   workflow's attention of that model); a tile is in a lesion when the slide's lesion mask
   (the renderer's, re-rendered from the cohort's specs) covers at least a quarter of it.

Prints one line per cohort and model; the last line (harder cohort) is
``auc_mean_pool=<a> auc_best=<b> best=<name> qwk_best=<c> attention_in_lesion=<d>``
(goals: b >= a + 0.05, d >= 0.8). ``--speed`` instead times ``train_fold`` on
``--bags`` bags of ``--tiles`` tiles of 512-dim float16 features written as the feature stage
writes them (``features.store.write_features``) in a scratch folder removed after, and prints
seconds per fold and peak memory. Not a test: run it by hand under the heavy-run lock, e.g.

    flock /tmp/histodetect-heavy.lock .venv/bin/python bench/mil.py            # both cohorts
    flock /tmp/histodetect-heavy.lock .venv/bin/python bench/mil.py --speed    # 5 GB of bags

Measured (2026-12-04, 2 CPU cores alone, defaults, 26 min in all; out of fold over 24 bags,
4 folds): demo (6.15% of tiles in a lesion) mean AUC 0.898 / QWK 0.911, ABMIL 0.880 / 0.911
with attention in lesion 1.000, CLAM-SB 0.931 / 0.889 (1.000), concat 0.623 / 0.409 (0.194);
harder (1.25%) mean 0.778 / 0.786, ABMIL 0.859 / 0.900 (0.806), CLAM-SB 0.773 / 0.688
(0.761), concat 0.525 / 0.057 (0.017): ``auc_mean_pool=0.778 auc_best=0.859 best=abmil
qwk_best=0.900 attention_in_lesion=0.806``. With ``--features timm`` (random-init resnet18)
the harder cohort gave mean 0.674, ABMIL 0.773 with attention in lesion 0.233, CLAM-SB 0.750
(0.394): a linear probe on those features, trained on tile lesion masks, puts only 48% of a
slide's 10 best tiles in a lesion (80% on the SimCLR features), so the features, not the
pooling, were the limit. The summary image (16 random tiles of ~1,850) rarely draws a lesion
tile of the harder cohort and stays near chance.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from histodetect.cohort.bags import mil_classes, read_bag_folds
from histodetect.features.store import SlideFeatures, write_features
from histodetect.mil.data import Bag, FeatureSource, bags_of
from histodetect.mil.ensemble import ensemble
from histodetect.mil.models import load_mil_model, score_bag
from histodetect.mil.summary_image import TileSource
from histodetect.mil.train import MilConfig, train_fold
from histodetect.mil.train_concat import (
    ConcatConfig,
    ConcatScorer,
    load_concat_model,
    occlusion_weights,
)
from histodetect.slides.graded import HARDER, plan_demo
from histodetect.slides.synthetic import COARSE, render_slide

REPO = Path(__file__).resolve().parents[1]
TOP_TILES = 10
IN_LESION = 0.25  # share of a tile the lesion mask must cover


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys, nested sections merged key by key."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def cohort_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The full config of one cohort: config.yaml, then mil_demo.yaml, then the bench's."""
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    demo = yaml.safe_load((REPO / "config" / "mil_demo.yaml").read_text())
    config = deep_merge(base, demo)
    harder = {k: list(v) if isinstance(v, tuple) else v for k, v in HARDER.items()}
    over: dict[str, Any] = {
        "demo": {"n_slides": args.slides, "n_patients": args.slides},  # the config's seed
        "split": {"test_fraction": 0.0},
        "folds": args.folds,
        "features": {"device": "cpu"},
        "mil": {"device": "cpu"},
        "seed": args.seed,
    }
    if name == "harder":
        over["demo"] |= harder
    if args.features == "ssl":  # the cohort's own SimCLR encoder (rule pretrain_encoder)
        over["features"]["source"] = "ssl"
        over["ssl"] = {"epochs": args.ssl_epochs, "max_tiles": args.ssl_tiles}
    if args.tile_um:
        over["tiling"] = {"tile_um": args.tile_um}
    return deep_merge(config, over)


def prepare(workdir: Path, config: dict[str, Any], cores: int) -> None:
    """Run the workflow up to the bag models: cohort, tiles, feature files and bag folds."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
        "--workflow-profile", "none", "--cores", str(cores), "mil", "--omit-from", "train_mil",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": str(cores)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


def lesion_masks(demo: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each slide's coarse lesion mask (``COARSE`` level-0 px per cell), re-rendered."""
    return {spec.slide_id: render_slide(spec).lesion for spec in plan_demo(demo)}


def in_lesion(coords: np.ndarray, size0: int, mask: np.ndarray) -> np.ndarray:
    """Whether the lesion mask covers at least :data:`IN_LESION` of each tile."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1))
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    x0, y0 = coords[:, 0] // COARSE, coords[:, 1] // COARSE
    x1 = np.minimum(-(-(coords[:, 0] + size0) // COARSE), mask.shape[1])
    y1 = np.minimum(-(-(coords[:, 1] + size0) // COARSE), mask.shape[0])
    covered = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return covered / np.maximum((x1 - x0) * (y1 - y0), 1) >= IN_LESION


def feature_weights(
    models: dict[int, Path], source: FeatureSource
) -> Callable[[Bag, list[int] | None], np.ndarray]:
    """A bag's tile weights (attention) by the bag models of the given folds, averaged."""
    loaded = {fold: load_mil_model(path)[:2] for fold, path in models.items()}

    def weights(bag: Bag, which: list[int] | None) -> np.ndarray:
        chosen = [loaded[f] for f in which] if which else list(loaded.values())
        x = source.bag(bag)
        return np.mean([score_bag(model, task, x)[1] for model, task in chosen], axis=0)

    return weights


def concat_weights(
    models: dict[int, Path], tiles: TileSource
) -> Callable[[Bag, list[int] | None], np.ndarray]:
    """A bag's tile weights by the summary-image models of the given folds: the occlusion
    effect of each drawn tile (``occlusion_weights``, the workflow's attention of concat)."""
    loaded = {fold: load_concat_model(path) for fold, path in models.items()}

    def weights(bag: Bag, which: list[int] | None) -> np.ndarray:
        chosen = [loaded[f] for f in which] if which else list(loaded.values())
        pairs = [(model, task) for model, task, _ in chosen]
        return occlusion_weights(pairs, tiles, bag, chosen[0][2])

    return weights


def attention_in_lesion(
    folds: pd.DataFrame,
    bag_weights: Callable[[Bag, list[int] | None], np.ndarray],
    source: FeatureSource,
    masks: dict[str, Any],
) -> tuple[float, float]:
    """Mean over slides with a lesion of the share of their top tiles inside one (each bag
    weighted by the fold model blind to it, ``bag_weights(bag, [fold])``; a test bag by all
    folds', ``None``), and the ceiling of that share (a slide with fewer than 10 lesion tiles
    cannot reach 1)."""
    shares, ceilings = [], []
    trained = set(folds[folds.split == "train"].fold)
    for bag in bags_of(folds):
        if bag.y <= 0:
            continue
        weights = bag_weights(bag, [bag.fold] if bag.fold in trained else None)
        start = 0
        for sid in bag.slide_ids:
            feats = source.slide(sid)
            w = weights[start : start + len(feats)]
            start += len(feats)
            inside = in_lesion(feats.coords, int(feats.attrs["size0"]), masks[sid])
            if inside.any():
                top = np.argsort(-w, kind="stable")[:TOP_TILES]
                shares.append(float(inside[top].mean()))
                ceilings.append(min(int(inside.sum()), len(top)) / len(top))
    if not shares:
        return float("nan"), float("nan")
    return float(np.mean(shares)), float(np.mean(ceilings))


def bench_cohort(name: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every model of ``args.models`` on one cohort: out-of-fold AUC, QWK, attention."""
    config = cohort_config(name, args)
    workdir = args.workdir / f"{name}_{args.features}"
    t0 = time.perf_counter()
    prepare(workdir, config, args.cores)
    prep_s = time.perf_counter() - t0
    folds_path = next((workdir / "results" / "mil").glob("folds.tsv"))
    folds = read_bag_folds(folds_path)
    feature_dir = next((workdir / "results" / "features").iterdir())
    source = FeatureSource(feature_dir, {"encoder_id": feature_dir.name})
    masks = lesion_masks(config["demo"])
    classes = mil_classes(folds.label, config["mil"], folds_path)
    n_lesion_tiles = [
        int(in_lesion(f.coords, int(f.attrs["size0"]), masks[s]).sum())
        for s in folds.slide_id
        for f in [source.slide(s)]
    ]
    n_tiles = [len(source.slide(s)) for s in folds.slide_id]
    print(
        f"{name}: {len(folds)} slides, {np.mean(n_tiles):.0f} tiles per slide, "
        f"{np.sum(n_lesion_tiles) / np.sum(n_tiles):.2%} of tiles in a lesion; "
        f"workflow to features and folds {prep_s:.0f} s",
        flush=True,
    )
    results = {}
    # the tile tables name their slides relative to the run's folder, as the workflow reads them
    os.chdir(workdir)
    tiles = TileSource(workdir / "results" / "tiles")
    for model_name in args.models:
        t0 = time.perf_counter()
        concat = model_name == "concat"
        epochs = args.concat_epochs if concat else args.epochs
        section = {**config["mil"], "model": model_name, "epochs": epochs}
        options = ConcatConfig if concat else MilConfig
        cfg, fold_source = options.from_section(section, args.seed), tiles if concat else source
        out = workdir / "bench" / model_name
        models = {}
        for fold in sorted(set(folds[folds.split == "train"].fold)):
            fold_dir = out / f"fold_{fold}"
            fold_dir.mkdir(parents=True, exist_ok=True)
            train_fold(
                folds, int(fold), fold_source, fold_dir, cfg, classes,
                mlflow_uri=f"sqlite:///{out / 'mlflow.db'}", experiment="bench_mil",
                tb_dir=out / "tensorboard" / f"fold_{fold}",
            )  # fmt: skip
            models[int(fold)] = fold_dir / "model.pt"
        paths = [models[k] for k in sorted(models)]
        _, metrics = ensemble(
            folds, paths, [p.with_name("val_predictions.parquet") for p in paths], source,
            n_bootstrap=0, seed=args.seed, scorer=ConcatScorer(paths, tiles) if concat else None,
        )  # fmt: skip
        bag_weights = concat_weights(models, tiles) if concat else feature_weights(models, source)
        # mean pooling weighs every tile alike: its "most attended" tiles say nothing
        uniform = model_name == "mean"
        attention, ceiling = (
            (float("nan"), float("nan"))
            if uniform
            else attention_in_lesion(folds, bag_weights, source, masks)
        )
        results[model_name] = {
            "auc": metrics["oof_auc"],
            "qwk": metrics.get("oof_qwk", float("nan")),
            "balanced_accuracy": metrics["oof_balanced_accuracy"],
            "attention_in_lesion": attention,
        }
        print(
            f"{name} {model_name}: oof_auc {metrics['oof_auc']:.3f} "
            f"oof_qwk {results[model_name]['qwk']:.3f} "
            f"oof_balanced_accuracy {metrics['oof_balanced_accuracy']:.3f} "
            f"attention_in_lesion {attention:.3f} (ceiling {ceiling:.3f}) ({time.perf_counter() - t0:.0f} s, "
            f"{len(models)} folds x {epochs} epochs max)",
            flush=True,
        )
    return results


def write_bags(folder: Path, n_bags: int, n_tiles: int, dim: int, seed: int) -> pd.DataFrame:
    """``n_bags`` one-slide bags of random float16 features (binary labels); their fold table."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_tiles)))
    cells = np.arange(n_tiles)
    coords = np.stack([cells % side, cells // side], 1) * 224
    attrs = {"slide_id": "", "status": "ok", "error": "", "encoder_id": "speed", "size0": 224}
    rows = []
    for i in range(n_bags):
        y = i % 2
        feats = rng.standard_normal((n_tiles, dim), np.float32)
        feats[: n_tiles // 100, :8] += 2.0 * y  # one percent of the tiles carry the label
        sid = f"B{i:05d}"
        write_features(
            folder / f"{sid}.h5", SlideFeatures(feats, coords, attrs | {"slide_id": sid})
        )
        rows.append({"slide_id": sid, "patient_id": sid, "bag_id": sid, "group": sid,
                     "label": str(y), "y": y, "split": "train", "fold": i % 5})  # fmt: skip
    return pd.DataFrame(rows)


class EpochClock(logging.Handler):
    """Times of train_fold's per-epoch log lines (``fold k epoch e: ...``)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if " epoch " in record.getMessage():
            self.times.append(time.perf_counter())


def speed(args: argparse.Namespace) -> None:
    """Seconds per fold of ``train_fold`` at scale, and the peak memory.

    Each configuration trains ``--speed-epochs`` epochs (at least 2): the gap between the
    first two epochs' log lines is one epoch (a training pass and a validation pass); the rest
    of the fold (tile statistics, the first epoch, the final model and predictions) is fixed,
    so the full default schedule (``MilConfig.epochs``, no early stop) is estimated as the
    fold's time plus the missing epochs.
    """
    scratch = Path(tempfile.mkdtemp(prefix="milspeed-", dir=args.scratch))
    clock = EpochClock()
    logging.getLogger("histodetect.mil.train").addHandler(clock)
    logging.getLogger("histodetect.mil.train").setLevel(logging.INFO)
    try:
        t0 = time.perf_counter()
        folds = write_bags(scratch / "features", args.bags, args.tiles, 512, args.seed)
        gb = sum(p.stat().st_size for p in (scratch / "features").iterdir()) / 1e9
        print(f"wrote {args.bags} bags x {args.tiles} tiles x 512 float16: {gb:.2f} GB "
              f"in {time.perf_counter() - t0:.0f} s; fold 0 of 5: {int((folds.fold != 0).sum())} "
              f"training bags, {int((folds.fold == 0).sum())} validation bags", flush=True)  # fmt: skip
        source = FeatureSource(scratch / "features", {"encoder_id": "speed"})
        full = MilConfig().epochs
        for max_tiles in args.max_tiles:
            cap = max_tiles or None
            section = {"model": "abmil", "task": "binary", "epochs": args.speed_epochs,
                       "max_tiles": cap, "device": "cpu", "early_stopping_patience": 0}  # fmt: skip
            cfg = MilConfig.from_section(section, args.seed)
            out = scratch / f"fold_cap{max_tiles}"
            out.mkdir()
            clock.times.clear()
            t0 = time.perf_counter()
            metrics = train_fold(
                folds, 0, source, out, cfg, ["0", "1"],
                mlflow_uri=f"sqlite:///{scratch / 'mlflow.db'}", experiment="bench_mil_speed",
                tb_dir=scratch / "tensorboard",
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            epoch_s = clock.times[1] - clock.times[0]
            estimate = seconds + (full - args.speed_epochs) * epoch_s
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"train_fold abmil max_tiles={cap}: {seconds:.0f} s per fold of "
                  f"{args.speed_epochs} epochs (one epoch {epoch_s:.0f} s: training and "
                  f"validation passes); full default schedule of {full} epochs, estimated: "
                  f"{estimate:.0f} s; val_auc {metrics['val_auc']:.3f}; "
                  f"peak memory (maxrss) {peak:.0f} MB", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/histodetect-bench-mil"))
    parser.add_argument("--cohorts", nargs="+", default=["demo", "harder"])
    parser.add_argument("--models", nargs="+", default=["mean", "abmil", "clam_sb", "concat"])
    parser.add_argument("--slides", type=int, default=24, help="slides (= patients) per cohort")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--concat-epochs", type=int, default=10, help="summary-image model")
    parser.add_argument("--tile-um", type=float, default=32.0, help="tile side (config: 64)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--features", choices=["timm", "ssl"], default="ssl",
        help="timm: the config's random-init resnet18; ssl: the cohort's own SimCLR encoder",
    )  # fmt: skip
    parser.add_argument("--ssl-epochs", type=int, default=8)
    parser.add_argument("--ssl-tiles", type=int, default=5000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--speed", action="store_true", help="time train_mil at scale instead")
    parser.add_argument("--bags", type=int, default=1000)
    parser.add_argument("--tiles", type=int, default=5000)
    parser.add_argument("--max-tiles", type=int, nargs="+", default=[0, 512], help="0: all")
    parser.add_argument("--speed-epochs", type=int, default=2)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    torch.set_num_threads(args.cores)
    if args.speed:
        speed(args)
        return
    results = {name: bench_cohort(name, args) for name in args.cohorts}
    last = results[args.cohorts[-1]]
    best = max(last, key=lambda m: last[m]["auc"])
    mean_auc = last.get("mean", {}).get("auc", float("nan"))
    print(
        f"auc_mean_pool={mean_auc:.3f} auc_best={last[best]['auc']:.3f} best={best} "
        f"qwk_best={last[best]['qwk']:.3f} "
        f"attention_in_lesion={last[best]['attention_in_lesion']:.3f}"
    )


if __name__ == "__main__":
    main()
