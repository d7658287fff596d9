"""Does the cohort's own encoder help? Random initialisation against ``ssl``, same tiles.

(Named ``ssl_encoder.py``, not ``ssl.py``: run as a script, ``bench/`` comes first on
``sys.path`` and a ``bench/ssl.py`` would stand in for the standard library's ``ssl``.)

Same architecture (``--arch``, ResNet-10t by default) and the same tiles on both sides; the
encoder is pretrained by ``histodetect.features.pretrain.pretrain_encoder`` (what rule
``pretrain_encoder`` runs) on tiles that the probe never scores:

1. **Linear probe, LC25000 hard pair** (adenocarcinoma vs squamous cell carcinoma, 64 px):
   the pair's groups are split in two (seeded); the encoder learns, without labels, on the
   first half's patches; the probe (logistic regression on standardised frozen features,
   5-fold StratifiedGroupKFold by group, out-of-fold balanced accuracy) runs on the second.
2. **Linear probe, MITOS 2012 mitosis vs look-alike** (24 um tiles at 0.5 um/px, 48 px): the
   encoder learns on random tissue tiles of slides A00-A01; the probe tells the expert mitoses
   of A02-A04 from the darkest nucleus-like blobs more than 10 um from any (the look-alikes of
   ``bench/mitos2012.py``), leave one slide out.
3. **Fine-tuning** (``--finetune``): ``bench/mitos2012.py``'s workflow from scratch against
   ``train.init: ssl`` (rule ``pretrain_encoder`` on every training field's tiles, then the
   five fold models start from it), pooled out-of-fold point F1.

Each method of ``--methods`` (SimCLR, BYOL) is pretrained and probed; the better one by mean
probe balanced accuracy is the one reported (and the one fine-tuned). Last line:
``probe_bal_acc_random=<a> probe_bal_acc_ssl=<b> mitos_f1_scratch=<c> mitos_f1_ssl=<d>``
(probe figures: the mean of the two tasks).

    flock /tmp/histodetect-heavy.lock .venv/bin/python bench/ssl_encoder.py --finetune  # ~25 min

On 2 CPU cores, the settings that fit in 60 minutes: ``--ssl-tiles 3000 --ssl-epochs 8``
(about 2 minutes of pretraining per method and task) and ``--mitos-epochs 4`` for the two
fine-tuning workflow runs (4-7 minutes each).

Measured (2026-12-04, 2 cores shared with other work):

- method choice, ``--ssl-tiles 2000 --ssl-epochs 3 --mitos-epochs 2`` (22.8 min): probe
  balanced accuracy LC25000 random 0.833, SimCLR 0.875, BYOL 0.835; MITOS random 0.583, SimCLR
  0.693, BYOL 0.703; mean random 0.708, SimCLR 0.784, BYOL 0.769: SimCLR (``ssl.method``'s
  default). At 2 epochs neither fine-tuned model found mitoses (F1 0.028 and 0.060).
- ``--methods simclr --ssl-tiles 3000 --ssl-epochs 8 --mitos-epochs 4 --finetune`` (15.9 min):
  probe LC25000 0.833 -> 0.900, MITOS 0.583 -> 0.722; fine-tuned MITOS pooled F1 0.216
  (95% bootstrap 0.103-0.323; two folds, A00 and A03, at 0) from scratch against 0.364
  (0.259-0.443; one fold, A01, at 0) from the cohort's own encoder. Last line:
  ``probe_bal_acc_random=0.708 probe_bal_acc_ssl=0.811 mitos_f1_scratch=0.216
  mitos_f1_ssl=0.364``.

The probes are clean (the encoder never saw a probe tile). The fine-tuning is not quite: with
``split.test_fraction: 0`` every field is a training field, so rule ``pretrain_encoder`` learns
(without labels) on the tiles of every fold, the held-out slide's included; the fold models
then never saw that slide's labels. A stricter comparison pretrains once per fold.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from histodetect.features.encoder import build_encoder
from histodetect.features.extract import extract_features
from histodetect.features.pretrain import SSLConfig, pretrain_encoder
from histodetect.features.settings import EncoderSpec
from histodetect.testdata import default_local

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mitos2012  # the MITOS bench's data and workflow helpers

DATA = default_local()
LC_PX = 64
MITOS_PX = 48
MITOS_UM = 24.0


def lc25000_tables(workdir: Path, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The aca/scc patches as image tables: the pretraining half and the probe half (by group)."""
    root = DATA / "lc25000_lung"
    labels = pd.read_csv(root / "labels.csv")
    pair = labels[labels.label.isin(["lung_aca", "lung_scc"])].drop_duplicates("git_blob_sha1")
    groups = np.sort(pair.group_id.unique())
    rng = np.random.default_rng(seed)
    ssl_groups = set(rng.permutation(groups)[: len(groups) // 2])
    table = pd.DataFrame(
        {
            "slide_id": pair.group_id.to_numpy(),
            "path": [str(root / p) for p in pair.path],
            "tile_px": LC_PX,
            "label": (pair.label == "lung_scc").astype(int).to_numpy(),
        }
    )
    in_ssl = table.slide_id.isin(ssl_groups)
    return table[in_ssl].reset_index(drop=True), table[~in_ssl].reset_index(drop=True)


def _crop(image: Image.Image, x: float, y: float, out: Path) -> str:
    side = MITOS_UM / mitos2012.MPP
    box = (round(x - side / 2), round(y - side / 2), round(x + side / 2), round(y + side / 2))
    image.crop(box).resize((MITOS_PX, MITOS_PX), Image.Resampling.BOX).save(out)
    return str(out)


def mitos_tables(workdir: Path, seed: int, n_ssl: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random tissue tiles of A00-A01 (pretraining) and mitosis / look-alike tiles of A02-A04."""
    folder = workdir / "mitos_tiles"
    folder.mkdir(parents=True, exist_ok=True)
    points = pd.read_csv(DATA / "mitos2012" / "points.csv")
    rng = np.random.default_rng(seed)
    ssl_rows, probe_rows = [], []
    half = MITOS_UM / mitos2012.MPP / 2
    fields = sorted((DATA / "mitos2012" / "images").glob("*.jpg"))
    per_field = -(-n_ssl // sum(p.stem[:3] in ("A00", "A01") for p in fields))
    for path in fields:
        slide = path.stem[:3]
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            w, h = rgb.size
            if slide in ("A00", "A01"):
                for k in range(per_field):
                    x, y = rng.uniform(half, w - half), rng.uniform(half, h - half)
                    crop = _crop(rgb, x, y, folder / f"{path.stem}_r{k}.png")
                    ssl_rows.append((slide, crop))
                continue
            truth = points[points.image == path.name][["x", "y"]].to_numpy(float)
            for k, (x, y) in enumerate(truth):
                crop = _crop(rgb, x, y, folder / f"{path.stem}_m{k}.png")
                probe_rows.append((slide, crop, 1))
            blobs = mitos2012.dark_blobs(path, 110.0)
            far = [
                (x, y)
                for x, y in blobs[["x", "y"]].to_numpy(float)
                if half <= x <= w - half
                and half <= y <= h - half
                and (len(truth) == 0 or np.hypot(*(truth - (x, y)).T).min() * mitos2012.MPP > 10)
            ][:15]
            for k, (x, y) in enumerate(far):
                crop = _crop(rgb, x, y, folder / f"{path.stem}_n{k}.png")
                probe_rows.append((slide, crop, 0))
    ssl = pd.DataFrame(ssl_rows, columns=["slide_id", "path"]).assign(tile_px=MITOS_PX)
    probe = pd.DataFrame(probe_rows, columns=["slide_id", "path", "label"]).assign(tile_px=MITOS_PX)
    return ssl.iloc[:n_ssl], probe


def probe(features: np.ndarray, table: pd.DataFrame, seed: int) -> float:
    """Out-of-fold balanced accuracy of a logistic regression, folds grouped by slide/group."""
    y, groups = table.label.to_numpy(), table.slide_id.to_numpy()
    n_splits = min(5, len(np.unique(groups)))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    pred = np.empty_like(y)
    for train, test in cv.split(features, y, groups):
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced")
        )
        model.fit(features[train], y[train])
        pred[test] = model.predict(features[test])
    return float(balanced_accuracy_score(y, pred))


def ssl_encoder(
    name: str, pool: pd.DataFrame, workdir: Path, method: str, args: argparse.Namespace
) -> Path:
    out = workdir / f"ssl_{name}_{method}"
    split = (
        pool[["slide_id"]].drop_duplicates().assign(patient_id=lambda d: d.slide_id, split="train")
    )
    cfg = SSLConfig(
        method=method, model=args.arch, epochs=args.ssl_epochs, batch_size=64,
        max_tiles=args.ssl_tiles, seed=args.seed, num_workers=1, device="cpu",
    )  # fmt: skip
    t0 = time.perf_counter()
    metrics = pretrain_encoder(
        pool, split, out, cfg, source=name, mlflow_uri=f"sqlite:///{out}/mlflow.db",
        experiment="bench_ssl", tb_dir=out / "tb",
    )  # fmt: skip
    print(f"{name}: {method} on {metrics['n_tiles']} tiles x {args.ssl_epochs} epochs "
          f"in {(time.perf_counter() - t0) / 60:.1f} min, loss {metrics['ssl_loss']:.3f}")  # fmt: skip
    return out / "encoder.pt"


def features_of(spec: EncoderSpec, table: pd.DataFrame, tile_px: int) -> np.ndarray:
    encoder = build_encoder(spec, tile_px)
    return extract_features(table, encoder, batch_size=128, num_workers=1, device="cpu")


def finetune(workdir: Path, init: str | None, args: argparse.Namespace) -> float:
    """Pooled out-of-fold point F1 of bench/mitos2012.py's workflow, from scratch or ssl."""
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    points = pd.read_csv(DATA / "mitos2012" / "points.csv")
    mitos2012.write_inputs(workdir, points, 15)
    path = mitos2012.workflow_config(workdir, args.mitos_epochs, args.seed)
    config = yaml.safe_load(path.read_text())
    if init == "ssl":
        config["train"]["init"] = "ssl"
        config["ssl"] |= {"method": args.best_method, "epochs": args.ssl_epochs,
                          "max_tiles": args.ssl_tiles, "batch_size": 64, "num_workers": 1,
                          "device": "cpu"}  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    t0 = time.perf_counter()
    mitos2012.run_workflow(workdir, 2)
    per_image = pd.read_csv(workdir / "results" / "metrics" / "points_per_image.tsv", sep="\t")
    total = mitos2012.report(f"fine-tuned ({init or 'scratch'})", per_image, args.seed)
    print(f"  workflow {(time.perf_counter() - t0) / 60:.1f} min")
    return float(total["f1"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/histodetect-ssl"))
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--methods", default="simclr,byol")
    parser.add_argument("--ssl-epochs", type=int, default=8)
    parser.add_argument("--ssl-tiles", type=int, default=3000)
    parser.add_argument("--mitos-epochs", type=int, default=4)
    parser.add_argument("--finetune", action="store_true", help="also the two MITOS workflow runs")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)
    tasks = {
        "lc25000": (*lc25000_tables(args.workdir, args.seed), LC_PX),
        "mitos": (*mitos_tables(args.workdir, args.seed, args.ssl_tiles), MITOS_PX),
    }
    scores: dict[str, dict[str, float]] = {}
    for name, (pool, table, px) in tasks.items():
        print(f"{name}: pretraining on {len(pool)} tiles of {pool.slide_id.nunique()} groups/slides; "
              f"probe on {len(table)} tiles ({int(table.label.sum())} positive) of "
              f"{table.slide_id.nunique()} groups/slides")  # fmt: skip
        random = features_of(EncoderSpec(model=args.arch, seed=args.seed), table, px)
        scores.setdefault("random", {})[name] = probe(random, table, args.seed)
        print(
            f"{name}: probe on random-init features: balanced accuracy {scores['random'][name]:.3f}"
        )
        for method in args.methods.split(","):
            path = ssl_encoder(name, pool, args.workdir, method, args)
            spec = EncoderSpec(model=args.arch, source="ssl", checkpoint=str(path))
            scores.setdefault(method, {})[name] = probe(
                features_of(spec, table, px), table, args.seed
            )
            print(
                f"{name}: probe on {method} features: balanced accuracy {scores[method][name]:.3f}"
            )
    mean = {k: float(np.mean(list(v.values()))) for k, v in scores.items()}
    args.best_method = max((m for m in mean if m != "random"), key=mean.get)
    print("mean probe balanced accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))
    f1_scratch = f1_ssl = float("nan")
    if args.finetune:
        f1_scratch = finetune(args.workdir / "mitos_scratch", None, args)
        f1_ssl = finetune(args.workdir / "mitos_ssl", "ssl", args)
    print(f"total {(time.perf_counter() - start) / 60:.1f} min; best method {args.best_method}")
    print(f"probe_bal_acc_random={mean['random']:.3f} probe_bal_acc_ssl={mean[args.best_method]:.3f} "
          f"mitos_f1_scratch={f1_scratch:.3f} mitos_f1_ssl={f1_ssl:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
