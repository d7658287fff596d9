"""LC25000 lung benchmark: 5-fold CV grouped by original image, against a colour-only baseline.

Trains one 3-class model per fold (lung_aca, lung_n, lung_scc) with histodetect.train on
reduced patches (at most ``--per-group`` images of each training group) and scores every image
of the held-out groups (mean of the 8 D4 symmetries unless ``--no-tta``) with the weight average
(``--ema``) of the last epoch: nothing is selected on the fold that is scored. It reports, per fold
and as the mean: the AUC of cancer (aca + scc) against
benign (score ``1 - p(lung_n)``), the 3-class balanced accuracy, the same for logistic
regression on per-channel colour histograms, training img/s and loader img/s (the training
loader iterated alone, same workers, with the training's stain normalisation and random crops:
the images a training step gets, without the network). Fold models and the colour model are
saved under ``--out`` with ``manifest.json``, which names this run's fold models and every
image they trained or were validated on. ``--score DIR_OR_CSV`` scores other images of the
same classes with exactly those models (mean of softmax), and refuses images the models have
seen: the same path, the same content (``git_blob_sha1``) or the same ``group_id``. Not a
test: run it by hand, e.g.

    .venv/bin/python bench/lc25000.py --quick          # 2 folds, few images, 1 epoch
    .venv/bin/python bench/lc25000.py                  # the full benchmark
    .venv/bin/python bench/lc25000.py --score /data/lc25000_heldout --out /tmp/lc25000_bench
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from histodetect.cohort.patches import (
    assign_folds,
    fold_tables,
    read_patch_labels,
    seen_images,
    subsample_groups,
)
from histodetect.fit.data import d4_transforms, make_loader, prepare_batch, random_crop
from histodetect.fit.model import load_model, resolve_device
from histodetect.fit.stain import StainNormalizer
from histodetect.testdata import default_local
from histodetect.training.train import TrainConfig, train_fold

DATA = default_local() / "lc25000_lung"  # all 11,493 patches: a local copy only
CLASSES = ["lung_aca", "lung_n", "lung_scc"]
BENIGN = CLASSES.index("lung_n")
BINS = 16


def cancer_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """AUC of cancer (aca or scc) against benign, scoring each image by ``1 - p(benign)``."""
    return float(roc_auc_score(y != BENIGN, 1 - probs[:, BENIGN]))


def scores(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    return {"auc": cancer_auc(y, probs), "bal_acc": balanced_accuracy_score(y, probs.argmax(1))}


def colour_features(df: pd.DataFrame, workers: int) -> np.ndarray:
    """Per-channel RGB histograms (``BINS`` bins each, as fractions) of each patch."""
    feats = []
    for images, _ in make_loader(df, 128, workers, False, 0):
        x = images.numpy().reshape(len(images), 3, -1) // (256 // BINS)
        hist = np.stack([np.stack([np.bincount(c, minlength=BINS) for c in im]) for im in x])
        feats.append(hist.reshape(len(images), -1) / x.shape[-1])
    return np.concatenate(feats)


def colour_model() -> object:
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))


def loader_speed(df: pd.DataFrame, cfg: TrainConfig) -> float:
    """Images per second of the training input alone: the loader with the training's stain
    normalisation, then its random crops (one pass, worker start-up included)."""
    stain = StainNormalizer(cfg.stain_norm, cfg.stain_reference) if cfg.stain_norm else None
    gen = torch.Generator().manual_seed(cfg.seed)
    start, count = time.perf_counter(), 0
    for images, _ in make_loader(
        df, cfg.batch_size, cfg.workers(), True, cfg.seed, transform=stain
    ):
        if cfg.crop_px:
            images = random_crop(images, cfg.crop_px, gen)
        count += len(images)
    return count / max(time.perf_counter() - start, 1e-9)


@torch.inference_mode()
def predict(
    model_paths: list[Path], df: pd.DataFrame, workers: int, tta: bool = False
) -> np.ndarray:
    """Mean softmax of the fold models (and of the 8 D4 symmetries with ``tta``) over ``df``."""
    transforms = d4_transforms() if tta else d4_transforms()[:1]
    device = resolve_device("auto")
    total = None
    for path in model_paths:
        model, meta = load_model(path, device)
        stain = StainNormalizer(meta["stain_norm"]) if meta.get("stain_norm") else None
        table = df.assign(tile_px=meta["tile_px"])
        probs = []
        for images, _ in make_loader(table, 128, workers, False, 0, transform=stain):
            x = prepare_batch(images, device, mean=meta["mean"], std=meta["std"])
            x = x.contiguous(memory_format=torch.channels_last)
            p = sum(torch.softmax(model(t(x)).float(), 1) for t in transforms) / len(transforms)
            probs.append(p.cpu().numpy())
        p = np.concatenate(probs)
        total = p if total is None else total + p
    assert total is not None
    return total / len(model_paths)


def run_cv(args: argparse.Namespace) -> None:
    out = Path(args.out)
    patches = read_patch_labels(Path(args.data) / "labels.csv", CLASSES)
    if args.groups:
        keep = patches.drop_duplicates("group_id").groupby("label").head(args.groups // 3)
        patches = patches[patches.group_id.isin(keep.group_id)]
    folded = assign_folds(patches, k=args.folds, seed=args.seed)
    # Training sees at most per_group images of each group (the CPU budget); validation scores
    # every image of the fold's groups, so the metrics do not depend on per_group.
    kept = subsample_groups(folded, per_group=args.per_group, seed=args.seed)
    is_kept = folded.index.isin(kept.index)
    cfg = TrainConfig.from_dict(
        {
            "backbone": args.backbone, "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "loss": "ce", "scheduler": "cosine", "early_stopping_patience": 0,
            "seed": args.seed, "hidden": 128, "colour_jitter": args.jitter,
            "jitter_space": args.jitter_space, "stain_norm": args.stain_norm,
            "crop_px": args.crop_px or None, "label_smoothing": args.label_smoothing,
            "mixup_alpha": args.mixup, "ema_decay": args.ema or None, "select": args.select,
            "num_workers": args.workers,
        }
    )  # fmt: skip
    print(
        f"{len(folded)} images of {folded.group_id.nunique()} groups, {args.folds} folds, "
        f"{args.tile_px} px (training crops {args.crop_px or args.tile_px} px, TTA {args.tta}), "
        f"training on {is_kept.sum()} images ({args.per_group} per group at most), validating "
        f"on all images of each fold; {args.backbone}, "
        f"{args.epochs} epochs, {cfg.workers()} loader worker(s), {torch.get_num_threads()} threads",
        flush=True,
    )
    table = folded.assign(tile_px=args.tile_px)
    feats = colour_features(table, cfg.workers())
    rows, colour_fits = [], []
    for fold in range(args.max_folds or args.folds):
        train, _ = fold_tables(kept, fold=fold, tile_px=args.tile_px)
        _, val = fold_tables(folded, fold=fold, tile_px=args.tile_px)
        is_val = (folded.fold == fold).to_numpy()
        fit = ~is_val & is_kept  # the colour model learns from the same images as the network
        colour = colour_model().fit(feats[fit], folded.label[fit])
        colour_fits.append(colour)
        c = scores(val.label.to_numpy(), colour.predict_proba(feats[is_val]))
        load_s = loader_speed(train, cfg)
        model_dir = out / "models" / f"fold_{fold}"
        metrics = train_fold(
            train, val, model_dir, cfg, fold=fold, run_name=f"fold_{fold}",
            mlflow_uri=f"sqlite:///{out / 'mlflow.db'}", experiment="lc25000",
            tb_dir=out / "tensorboard" / f"fold_{fold}",
        )  # fmt: skip
        probs = predict([model_dir / "model.pt"], val, cfg.workers(), tta=args.tta)
        m = scores(val.label.to_numpy(), probs)
        row = {"fold": fold, "n_train": len(train), "n_val": len(val), **m}
        row |= {f"colour_{k}": v for k, v in c.items()}
        row |= {"train_img_s": metrics["train_img_s"], "loader_img_s": load_s}
        rows.append(row)
        print(json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    colour_all = colour_model().fit(feats[is_kept], folded.label[is_kept])
    with (out / "colour_model.pkl").open("wb") as f:
        pickle.dump({"model": colour_all, "tile_px": args.tile_px}, f)
    n_folds = args.max_folds or args.folds
    manifest = {
        "run": uuid.uuid4().hex,
        "models": [f"models/fold_{k}/model.pt" for k in range(n_folds)],
        "seen": "seen.csv",
    }
    # Every image a fold model trained or was validated on (validation: all images of its fold).
    seen = folded[folded.fold.lt(n_folds) | is_kept]
    seen[["path", "group_id", "git_blob_sha1"]].to_csv(out / "seen.csv", index=False)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    table = pd.DataFrame(rows).set_index("fold")
    table.loc["mean"] = table.mean()
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    mean = table.loc["mean"]
    print(
        f"cv_auc={mean.auc:.4f} cv_bal_acc={mean.bal_acc:.4f} colour_auc={mean.colour_auc:.4f} "
        f"colour_bal_acc={mean.colour_bal_acc:.4f} train_img_s={mean.train_img_s:.1f} "
        f"loader_img_s={mean.loader_img_s:.1f}"
    )


def run_score(args: argparse.Namespace) -> None:
    out = Path(args.out)
    target = Path(args.score)
    csv = target / "labels.csv" if target.is_dir() else target
    manifest_path = out / "manifest.json"
    if not manifest_path.exists():
        raise SystemExit(f"{manifest_path}: no manifest of a CV run; run the CV first")
    manifest = json.loads(manifest_path.read_text())
    models = [out / m for m in manifest["models"]]
    missing = [str(m) for m in models if not m.exists()]
    if missing:
        raise SystemExit(f"{manifest_path}: run {manifest['run']} lacks {', '.join(missing)}")
    patches = read_patch_labels(csv, CLASSES)
    seen = seen_images(pd.read_csv(out / manifest["seen"], dtype=str), patches)
    if len(seen):
        why = seen.seen_by.value_counts().to_dict()
        raise SystemExit(
            f"{csv}: {len(seen)} of {len(patches)} images were seen by the fold models of run "
            f"{manifest['run']} in training or validation ({why}); score held-out images only"
        )
    y = patches.label.to_numpy()
    m = scores(y, predict(models, patches, TrainConfig().workers(), tta=args.tta))
    with (out / "colour_model.pkl").open("rb") as f:
        colour = pickle.load(f)
    feats = colour_features(patches.assign(tile_px=colour["tile_px"]), TrainConfig().workers())
    c = scores(y, colour["model"].predict_proba(feats))
    print(
        f"{len(patches)} images of {csv}, ensemble of the {len(models)} fold models of run {manifest['run']}"
    )
    print(
        f"auc={m['auc']:.4f} bal_acc={m['bal_acc']:.4f} "
        f"colour_auc={c['auc']:.4f} colour_bal_acc={c['bal_acc']:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="folder with labels.csv")
    parser.add_argument("--out", default="/tmp/lc25000_bench", help="models, MLflow, logs")
    parser.add_argument("--score", help="score the saved models on this labels.csv (or folder)")
    parser.add_argument("--quick", action="store_true", help="2 folds, 60 groups, 1 epoch")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-folds", type=int, default=0, help="run only the first n folds")
    parser.add_argument("--groups", type=int, default=0, help="use this many groups (0: all)")
    parser.add_argument("--per-group", type=int, default=20, help="training images per group")
    parser.add_argument("--tile-px", type=int, default=96, help="images are resized to this")
    parser.add_argument("--crop-px", type=int, default=0, help="train on random crops (0: none)")
    parser.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=True,
        help="score with the mean of the 8 D4 symmetries",
    )  # fmt: skip
    parser.add_argument("--backbone", default="mobilenetv3_small_100")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--jitter", type=float, default=0.05)
    parser.add_argument("--jitter-space", default="hsv", choices=["hsv", "hed"])
    parser.add_argument("--stain-norm", default=None, choices=["macenko", "reinhard"])
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0: off)")
    parser.add_argument("--ema", type=float, default=0.998, help="weight EMA decay (0: off)")
    parser.add_argument(
        "--select", default="last", choices=["best", "last"],
        help="fold model: last epoch, or best on the fold it is then scored on (optimistic)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, help="loader workers (default: TrainConfig's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.folds, args.groups, args.per_group, args.epochs = 2, 60, 2, 1
    logging.basicConfig(level=logging.WARNING)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    run_score(args) if args.score else run_cv(args)


if __name__ == "__main__":
    main()
