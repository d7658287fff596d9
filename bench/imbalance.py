"""Imbalanced classes: train.class_balance none / sampler / loss, at 0.5 and out of fold.

LC25000 lung made imbalanced by keeping 1 group (original image) in 5 of the minority:

- ``binary``: benign (lung_n, label 1) against cancer (aca or scc, label 0), 1 benign group in 5
  (easy: every setting reaches an AUC near 1);
- ``aca_scc``: adenocarcinoma (lung_aca, label 1) against squamous cell carcinoma (lung_scc,
  label 0), 1 adenocarcinoma group in 5: two cancers that look alike, the hard binary case;
- ``3class``: lung_aca, lung_n, lung_scc with 1 cancer group in 5 (aca and scc each).

Folds are grouped by ``group_id`` (StratifiedGroupKFold). For each variant and
``class_balance`` setting one model per fold is trained (histodetect.train, last epoch kept) on
at most ``--per-group`` images of each training group and scores at most ``--val-per-group``
images of each held-out group (its ``val_predictions.parquet``). Per fold it reports the AUC
(binary, or one-vs-rest weighted by class size), the balanced accuracy at 0.5 (binary) or of the
argmax (3-class), and at the out-of-fold decision: the threshold (binary) or class priors
(3-class) with the best balanced accuracy on the *other* folds' validation rows, each scored by
its own fold model (:func:`histodetect.training.thresholds.fit_decision`), so the fold reported
never chooses its own threshold. ``ref_bal_acc`` (the best over thresholds or priors on the
held-out fold itself) is what the AUC allows: printed for reference, never used to choose. The
setting with the best mean balanced accuracy at the out-of-fold decision (mean of the variants)
is ``best`` (a tie goes to the earlier of ``--settings``: ``none`` first); a ``goal`` line per
variant says whether it is within 0.03 of ``ref_bal_acc`` and not below ``none`` (the issue's
goal). ``--quick`` (3.6 min on 2 shared cores) checks that it runs, no more: after 1 epoch
every fold model gives nearly one probability to all images, so all settings tie. Not a test:
run it by hand, e.g.

    .venv/bin/python bench/imbalance.py --quick        # 2 folds, few groups, 1 epoch
    .venv/bin/python bench/imbalance.py                # the default: 27 fold models, 21 min

Measured (2026-12-01, the defaults, alone on 2 cores: ``real 21m7s``), balanced accuracy at the
out-of-fold decision (at 0.5 / the argmax in brackets), mean of 3 folds:

    variant   none            sampler         loss            AUC none/sampler/loss
    binary    1.000 (1.000)   1.000 (1.000)   0.995 (0.999)   1.000 / 1.000 / 1.000
    aca_scc   0.808 (0.791)   0.872 (0.847)   0.841 (0.827)   0.933 / 0.947 / 0.947
    3class    0.855 (0.859)   0.776 (0.814)   0.789 (0.814)   0.990 / 0.987 / 0.988
    mean      0.888 (0.883)   0.883 (0.887)   0.875 (0.880)

``best=none`` by the mean, by 0.005: the settings disagree per task. On the hard binary pair
the sampler gains 0.06 (and the AUC 0.014); on three classes it loses 0.08, half of it at the
out-of-fold priors (fitted on the other fold models, whose calibration the sampler moves).

Last line: ``bal_acc_none_05=<a> bal_acc_best=<b> best=<setting> auc_best=<c>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from histodetect.cohort.patches import assign_folds, fold_tables, read_patch_labels
from histodetect.cohort.patches import subsample_groups as per_group
from histodetect.fit.metrics import balanced_accuracy, binary_auc, multiclass_auc
from histodetect.testdata import default_local
from histodetect.training.thresholds import fit_decision, prob_matrix
from histodetect.training.train import BALANCES, PREDICTIONS, TrainConfig, train_fold

DATA = default_local() / "lc25000_lung"
CLASSES = ["lung_aca", "lung_n", "lung_scc"]
VARIANTS = ("binary", "aca_scc", "3class")
BINARY = {"binary": ("lung_n", ["cancer", "benign"]), "aca_scc": ("lung_aca", ["scc", "aca"])}
"""Binary variants: the minority class (label 1) and the class names (label 0, label 1)."""


def imbalanced(patches: pd.DataFrame, variant: str, seed: int) -> pd.DataFrame:
    """Keep 1 group in 5 of the minority (see the module docstring for each variant)."""
    rng = np.random.default_rng(seed)
    if variant == "aca_scc":
        patches = patches[patches.class_name != "lung_n"]
    minority = [BINARY[variant][0]] if variant in BINARY else ["lung_aca", "lung_scc"]
    keep = set(patches.loc[~patches.class_name.isin(minority), "group_id"])
    for name in minority:
        groups = np.sort(patches.loc[patches.class_name == name, "group_id"].unique())
        keep |= set(rng.choice(groups, size=max(1, round(len(groups) / 5)), replace=False))
    out = patches[patches.group_id.isin(keep)].reset_index(drop=True)
    if variant in BINARY:  # the minority is label 1
        positive = out.class_name == BINARY[variant][0]
        out = out.assign(label=positive.astype(np.int64))
        out["class_name"] = np.where(positive, BINARY[variant][1][1], BINARY[variant][1][0])
    return out


def scores(table: pd.DataFrame, decision: object | None) -> tuple[float, float]:
    """AUC and balanced accuracy of a predictions table (plain decision when None)."""
    y, probs = table.label.to_numpy(np.int64), prob_matrix(table)
    k = probs.shape[1] if probs.ndim == 2 else 2
    auc = multiclass_auc(y, probs) if probs.ndim == 2 else binary_auc(y, probs)
    if decision is not None:
        pred = decision.predict(probs)  # type: ignore[attr-defined]
    else:
        pred = probs.argmax(1) if probs.ndim == 2 else (probs >= 0.5).astype(int)
    return auc, balanced_accuracy(y, pred, k)


def run_setting(
    folded: pd.DataFrame, variant: str, balance: str, args: argparse.Namespace
) -> list[dict]:
    """Train every fold with ``class_balance=balance``; one row of scores per fold."""
    out = Path(args.out) / variant / balance
    train_rows = per_group(folded, per_group=args.per_group, seed=args.seed)
    val_rows = per_group(folded, per_group=args.val_per_group, seed=args.seed + 1)
    cfg = TrainConfig.from_dict(
        {
            "backbone": args.backbone, "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "loss": "bce" if variant in BINARY else "ce",
            "scheduler": "cosine", "early_stopping_patience": 0, "seed": args.seed,
            "hidden": 64, "colour_jitter": 0.05, "select": "last", "class_balance": balance,
            "num_workers": args.workers,
        }
    )  # fmt: skip
    preds = []
    for fold in range(args.folds):
        train, _ = fold_tables(train_rows, fold=fold, tile_px=args.tile_px)
        _, val = fold_tables(val_rows, fold=fold, tile_px=args.tile_px)
        model_dir = out / f"fold_{fold}"
        train_fold(
            train, val, model_dir, cfg, fold=fold, run_name=f"{variant}_{balance}_{fold}",
            mlflow_uri=f"sqlite:///{Path(args.out) / 'mlflow.db'}", experiment="imbalance",
            tb_dir=model_dir / "tb",
        )  # fmt: skip
        preds.append(pd.read_parquet(model_dir / PREDICTIONS))
    classes = BINARY[variant][1] if variant in BINARY else CLASSES
    rows = []
    for fold, table in enumerate(preds):
        others = pd.concat([p for k, p in enumerate(preds) if k != fold], ignore_index=True)
        auc, at_05 = scores(table, None)
        _, at_oof = scores(table, fit_decision(others, classes))
        _, ref = scores(table, fit_decision(table, classes))
        rows.append(
            {"variant": variant, "class_balance": balance, "fold": fold, "n_val": len(table),
             "auc": auc, "bal_acc_05": at_05, "bal_acc_oof": at_oof, "ref_bal_acc": ref}
        )  # fmt: skip
        print(
            json.dumps(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}
            ),
            flush=True,
        )
    return rows


def goal_line(variant: str, best: str, row: pd.Series, settings: pd.DataFrame) -> str:
    """The issue's goal for one variant: ``best`` at its out-of-fold decision within 0.03 of
    ``ref_bal_acc`` and not below ``none`` (at 0.5, nor at its own out-of-fold decision)."""
    gap = row.ref_bal_acc - row.bal_acc_oof
    floor = (
        settings.loc["none", ["bal_acc_05", "bal_acc_oof"]].max()
        if "none" in settings.index
        else -1.0
    )
    ok = gap <= 0.03 and row.bal_acc_oof >= floor
    return (
        f"goal {variant}: {best} bal_acc_oof {row.bal_acc_oof:.4f}, ref_bal_acc "
        f"{row.ref_bal_acc:.4f} (gap {gap:.4f}, goal <= 0.03), none best of 0.5/oof "
        f"{floor:.4f}: {'met' if ok else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="folder with labels.csv")
    parser.add_argument("--out", default="/tmp/imbalance_bench", help="models, MLflow")
    parser.add_argument("--quick", action="store_true", help="2 folds, 40 groups a class, 1 epoch")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--groups", type=int, default=100, help="groups per class before imbalance")
    parser.add_argument("--per-group", type=int, default=6, help="training images per group")
    parser.add_argument("--val-per-group", type=int, default=6, help="scored images per group")
    parser.add_argument("--tile-px", type=int, default=64, help="images are resized to this")
    parser.add_argument("--backbone", default="mobilenetv3_small_100")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--settings", nargs="+", default=list(BALANCES), choices=BALANCES)
    parser.add_argument("--workers", type=int, default=1, help="loader workers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.folds, args.groups, args.epochs = 2, 40, 1
    logging.basicConfig(level=logging.WARNING)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    patches = read_patch_labels(Path(args.data) / "labels.csv", CLASSES)
    keep = patches.drop_duplicates("group_id").groupby("class_name").head(args.groups)
    patches = patches[patches.group_id.isin(keep.group_id)]
    rows = []
    for variant in args.variants:
        folded = assign_folds(imbalanced(patches, variant, args.seed), k=args.folds, seed=args.seed)
        counts = folded.drop_duplicates("group_id").class_name.value_counts().to_dict()
        print(f"{variant}: {len(folded)} images, groups {counts}, {args.folds} grouped folds; "
              f"{args.backbone} {args.tile_px} px, {args.epochs} epochs, "
              f"{torch.get_num_threads()} threads", flush=True)  # fmt: skip
        for balance in args.settings:
            rows += run_setting(folded, variant, balance, args)
    table = pd.DataFrame(rows)
    means = table.groupby(["variant", "class_balance"]).mean(numeric_only=True).drop(columns="fold")
    print(means.to_string(float_format=lambda v: f"{v:.4f}"))
    overall = means.groupby("class_balance").mean()
    print("mean of the variants:")
    print(overall.to_string(float_format=lambda v: f"{v:.4f}"))
    order = [b for b in args.settings if b in overall.index]  # ties: the earlier, none first
    best = str(overall.bal_acc_oof.reindex(order).idxmax())
    none_05 = overall.bal_acc_05.get("none", float("nan"))
    print(f"{time.perf_counter() - start:.0f} s; ref_bal_acc of {best} "
          f"(held-out best, reference only): {overall.ref_bal_acc[best]:.4f}")  # fmt: skip
    for variant, row in means.xs(best, level="class_balance").iterrows():
        print(goal_line(str(variant), best, row, means.loc[variant]), flush=True)
    print(
        f"bal_acc_none_05={none_05:.4f} bal_acc_best={overall.bal_acc_oof[best]:.4f} "
        f"best={best} auc_best={overall.auc[best]:.4f}"
    )


if __name__ == "__main__":
    main()
