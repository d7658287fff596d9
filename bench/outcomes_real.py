"""A number from real tissue: each region's tumour fraction, learnt from the region alone.

The data: the regions of ``bench/weak_real.py`` (``idc_breast`` of the real test data, 31 H&E
slides of 31 patients at 4.0 um/px, an expert's IDC call on every tiled patch): a bag is a
1,600 um square of a slide with its tissue tiles, and its target the share of those tiles the
expert called invasive ductal carcinoma (0 to 1; a tumour fraction, as pathologists estimate
it for molecular testing). No tile label is given to any model. 5 folds over patients
(the workflow's ``bag_folds``, stratified by the fraction's quartile), every region predicted
by the fold model blind to its patient.

It reuses what ``bench/weak_real.py`` left in ``--workdir`` (run that first): the regions'
feature files of the default features (the cohort's own SimCLR encoder with each tile's 8
neighbours beside it, ``features_ssl_ctx``). Arms, on the same regions and folds:

- ``ridge_mean``: a ridge regression (scikit-learn, alpha chosen by inner cross-validation) on
  each region's mean feature vector: the classical baseline;
- ``mean_mil``: ``mil.task: regression`` with ``mil.model: mean`` through the package's
  ``train_fold`` (the rule train_mil's code), Huber loss;
- ``abmil_mil``: the same with gated attention (``mil.model: abmil``, the default family).

Prints one line per arm (out-of-fold MAE, RMSE, R2, Pearson, Spearman; minutes) and the last
line ``r2_ridge_mean= r2_mean_mil= r2_abmil_mil= best= mae_best= pearson_best=``. Run by hand:

    .venv/bin/python bench/outcomes_real.py --workdir /tmp/wr

Measured (2026-12-07, 2 cores shared with other work; 26 minutes): 640 regions of 31 patients,
tumour fraction mean 0.258 (median 0: 369 regions without IDC); out of fold: ridge_mean MAE
0.189, R2 0.500, Pearson 0.715; mean_mil MAE 0.165, R2 0.621, Pearson 0.789 (7.9 min);
abmil_mil MAE 0.153, RMSE 0.216, R2 0.653, Pearson 0.810, Spearman 0.773 (17.8 min). Last line
``r2_ridge_mean=0.500 r2_mean_mil=0.621 r2_abmil_mil=0.653 best=abmil_mil mae_best=0.153
pearson_best=0.810``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from histodetect.cohort.bags import bag_folds
from histodetect.mil.data import FeatureSource, bags_of
from histodetect.mil.outcomes import regression_scores
from histodetect.mil.train import MilConfig, train_fold
from histodetect.testdata import TestData

sys.path.insert(0, str(Path(__file__).parent))
from weak_real import cut_regions  # the bags of bench/weak_real.py


def region_folds(table: pd.DataFrame, folds: int, seed: int) -> pd.DataFrame:
    """One row per region with its fraction as ``target``; folds over patients, stratified
    by the fraction's quartile (``y``)."""
    strata = pd.qcut(table.idc_share.rank(method="first"), 4, labels=False).astype(int)
    rows = table.assign(
        slide_id=table.bag_id, group=table.patient_id, y=strata, label=table.idc_share.map("{:.4f}".format),
        split="train", target=table.idc_share,
    )[["slide_id", "bag_id", "patient_id", "group", "y", "label", "split", "target"]]  # fmt: skip
    return bag_folds(rows, k=folds, seed=seed, source="bench outcomes_real")


def ridge_oof(folds: pd.DataFrame, source: FeatureSource) -> np.ndarray:
    """Each region's out-of-fold prediction of a ridge regression on its mean feature."""
    bags = bags_of(folds)
    x = np.stack([source.bag(b).numpy().mean(0) for b in bags])
    y = np.array([b.target for b in bags])
    fold = np.array([b.fold for b in bags])
    pred = np.empty(len(bags))
    for k in np.unique(fold):
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
        model.fit(x[fold != k], y[fold != k])
        pred[fold == k] = model.predict(x[fold == k])
    return pred


def mil_oof(folds: pd.DataFrame, source: FeatureSource, cfg: MilConfig, out: Path) -> np.ndarray:
    """Each region's out-of-fold prediction of ``cfg``'s bag model, trained per fold."""
    for k in sorted(set(folds.fold)):
        fold_dir = out / f"fold_{k}"
        train_fold(
            folds, int(k), source, fold_dir, cfg, [],
            mlflow_uri=f"sqlite:///{out / 'mlflow.db'}", experiment="bench_outcomes_real",
            tb_dir=out / "tensorboard" / f"fold_{k}",
        )  # fmt: skip
    table = pd.concat(
        [pd.read_parquet(out / f"fold_{k}" / "val_predictions.parquet") for k in sorted(set(folds.fold))]
    ).set_index("bag_id")  # fmt: skip
    return table.prediction.reindex([b.bag_id for b in bags_of(folds)]).to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/histodetect-bench-weak-real"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(2)
    regions = argparse.Namespace(task="idc", region_um=1600.0, min_tiles=8, hard=False)
    sheet = pd.read_csv(
        args.workdir / "samples.tsv", sep="\t", dtype={"slide_id": str, "patient_id": str}
    )
    patches = pd.read_csv(
        TestData().path("idc_breast/patches.tsv"), sep="\t", dtype={"patient_id": str}
    )
    table, _ = cut_regions(args.workdir, sheet, patches, regions)
    folds = region_folds(table, args.folds, args.seed)
    features = args.workdir / "bench" / "regions_1600um" / "features_ssl_ctx"
    if not features.is_dir():
        raise SystemExit(f"{features}: run bench/weak_real.py --workdir {args.workdir} first")
    source = FeatureSource(features)
    y = np.array([b.target for b in bags_of(folds)])
    print(f"{len(folds)} regions of {folds.patient_id.nunique()} patients; tumour fraction mean "
          f"{y.mean():.3f}, median {np.median(y):.3f}, {int((y > 0).sum())} with any IDC", flush=True)  # fmt: skip
    out = args.workdir / "bench" / "outcomes_real"
    arms = {
        "ridge_mean": lambda: ridge_oof(folds, source),
        **{
            f"{model}_mil": (lambda model=model: mil_oof(
                folds, source,
                MilConfig(model=model, task="regression", regression_loss="huber",
                          epochs=args.epochs, seed=args.seed),
                out / model,
            ))
            for model in ("mean", "abmil")
        },
    }  # fmt: skip
    scores = {}
    for name, run in arms.items():
        t0 = time.perf_counter()
        scores[name] = regression_scores(y, run())
        s = scores[name]
        print(f"{name}: MAE {s['mae']:.3f} RMSE {s['rmse']:.3f} R2 {s['r2']:.3f} Pearson "
              f"{s['pearson']:.3f} Spearman {s['spearman']:.3f} "
              f"({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)  # fmt: skip
    best = max(scores, key=lambda n: scores[n]["r2"])
    print(" ".join(f"r2_{n}={s['r2']:.3f}" for n, s in scores.items())
          + f" best={best} mae_best={scores[best]['mae']:.3f} pearson_best={scores[best]['pearson']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
