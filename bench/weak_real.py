"""Slide labels on real tissue: regions of 31 real breast slides as bags, IDC or not.

The data: ``idc_breast`` of the real test data (:mod:`histodetect.testdata`): 31 H&E slides
of 31 patients at 4.0 um/px, each tiled patch of which an expert called invasive ductal
carcinoma (IDC) or not. No tile label is given to any model: a bag is a square region of a
slide (``--region-um``, 1,600 um: 8 x 8 patches) with its tissue tiles, IDC when any of its
tiles is an IDC patch, grouped by patient; 5 folds over patients (the workflow's
``bag_folds``), every bag scored out of fold. ``--hard`` keeps only the positive bags whose IDC
tiles are at most ``--hard-share`` of their tissue tiles (the lesion a small part of the bag).
``--task lc25000``: the second task, below.

What it does, in ``--workdir``:

1. Runs the workflow (``snakemake features`` on the repository's Snakefile) on the 31 slides
   twice, with the tile grid the patches' own (200 um at 4.0 um/px): ``features.source: timm``
   (random-init resnet18: what the default was) and the default now, ``auto``, which resolves to
   the cohort's own SimCLR encoder (rule ``pretrain_encoder``, on every patient's tiles with no
   label: split.test_fraction 0, as small cohorts are run).
2. Cuts the regions (feature files and tile tables of each region, written as the workflow
   writes a slide's) and trains, per fold, through the package functions the rule train_mil
   calls, on the same folds:

   - ``colour``: a logistic regression on the bag's mean HSV histogram of its tiles;
   - ``naive_tiles``: a resnet18 from random init, each of 8 random tiles a bag per epoch
     inheriting its bag's label (``--tile-epochs`` epochs, 4: 2 cores' time) (``mil.model: topk`` with ``select: random``), the bag's answer
     the mean over its tiles;
   - ``mean_random``, ``abmil_random``: mean pooling and ABMIL on the random-init features;
   - ``mean_ssl``, ``abmil_ssl``: the same on the cohort's own encoder;
   - ``abmil_ssl_ctx``: ABMIL on the cohort's encoder with context (``features.context:
     neighbours``, ``features.extract.with_context``): each tile's features beside the mean of
     its 8 neighbours' on the whole slide's tile grid (600 um of tissue around a 200 um tile);
   - ``topk_ssl``: the tile encoder fine-tuned from the bag labels (``mil.model: topk``, its
     defaults but ``--tile-epochs``), starting from the cohort's own encoder.

3. Where the attention went: for each positive bag, the share of its 10 most attended tiles
   (by the fold model blind to it) that are IDC patches, and the ceiling of that share (a bag
   with 3 IDC tiles cannot put 10 of 10 there).

Prints one line per model (out-of-fold AUC, balanced accuracy at 0.5, attention, minutes);
the last line ``auc_colour= auc_naive_tiles= auc_default_before= auc_default= auc_best= best=
attention_in_idc=`` (``default_before``: ABMIL on random-init features; ``default``: the
model ``mil.model`` names by default, on the default features: ``abmil_ssl_ctx``). Not a test: run it by hand,

    flock /tmp/histodetect-heavy.lock .venv/bin/python bench/weak_real.py
    flock /tmp/histodetect-heavy.lock .venv/bin/python bench/weak_real.py --hard --region-um 1200

Measured (2026-12-07, 2 cores shared with the test suite; about 2 hours, of which topk_ssl 55
min and naive_tiles 18): 640 regions of 1,600 um (35 tiles each), 271 IDC (a positive region's
median IDC share 0.64); out-of-fold AUC colour 0.856, naive_tiles 0.886, mean_random 0.892,
abmil_random 0.887, mean_ssl 0.915, abmil_ssl 0.909, abmil_ssl_ctx 0.933, topk_ssl 0.894
(4 epochs); attention in IDC (ceiling 0.891) naive 0.760, abmil_random 0.702, abmil_ssl 0.675,
abmil_ssl_ctx 0.739, topk_ssl 0.768. The first run, begun before ``features.context:
neighbours`` became the default, printed its default then (abmil_ssl, 0.909); the run
again on its finished folds (every model resumed from its ``last.pt``, the figures the same)
printed ``auc_colour=0.856 auc_naive_tiles=0.886 auc_default_before=0.887
auc_default=0.933 auc_best=0.933 best=abmil_ssl_ctx attention_in_idc=0.739``. The self-supervised encoder saw every
patient's tiles without labels (split.test_fraction 0, as ``snakemake mil`` does on a small
cohort); the bag models never saw a held-out patient's label.

``--hard --region-um 1200`` (the feature arms only: ``--arms colour mean_random abmil_random
mean_ssl abmil_ssl abmil_ssl_ctx``): 612 regions of 1,200 um (21.4 tiles each), 70 IDC, each
with IDC in at most a quarter of its tiles (median 0.14); AUC colour 0.681, mean_random 0.673,
abmil_random 0.663, mean_ssl 0.700, abmil_ssl 0.739, abmil_ssl_ctx 0.798 (attention in IDC
0.240 of a 0.380 ceiling); last line ``auc_colour=0.681 auc_naive_tiles=nan
auc_default_before=0.663 auc_default=0.798 auc_best=0.798 best=abmil_ssl_ctx
attention_in_idc=0.240``.

``supervised_tiles`` (a reference, not a contender: it sees the experts' tile labels): a
logistic regression on the default features' tiles (``ssl_ctx``) trained on the other folds'
labelled tiles, a bag's answer its highest tile. Measured (2026-12-07, the same folds): 1,600
um regions AUC 0.926, top-10 tiles in IDC 0.783 (ceiling 0.891); hard regions AUC 0.761,
0.263 (ceiling 0.380). The default's attention (0.739, 0.240) is near what these features
allow with every tile labelled: 0.8 of the top 10 in IDC is beyond them.

``--task lc25000``: LC25000's adenocarcinoma and squamous cell carcinoma patches (the pair a
colour histogram does not separate alone), each ``group_id`` (the copies of one original
image: rotations and flips) a bag, squamous 1; every patch one tile at 64 px; the cohort's
encoder pretrained with the shipped ``ssl`` settings on every patch without labels (as
``snakemake mil`` on a small cohort). No tile labels: the attention measure is not made.
Measured (2026-12-07, 2 cores shared with the test suite): 376 bags (192 squamous), 7,211
patches (19.2 a bag); pretraining 8.2 min; out-of-fold AUC colour 0.934, mean_random 0.901,
abmil_random 0.894, mean_ssl 0.962, abmil_ssl 0.960, abmil_ssl_ctx 0.962 (the default; each
tile is its own context on one-tile slides), naive_tiles 0.928 (14.6 min alone), topk_ssl
0.957 (17.8 min alone); the last line (all arms) ``auc_colour=0.934 auc_naive_tiles=0.928 auc_default_before=0.894 auc_default=0.962
auc_best=0.962 best=mean_ssl attention_in_idc=nan``. The default is 0.068 above random-init
features and 0.034 above naive tiles, 0.028 above colour (short of the issue's 0.03).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from matplotlib.colors import rgb_to_hsv
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from histodetect.cohort.bags import bag_folds
from histodetect.config.validation import merge_config
from histodetect.features.encoder import build_encoder
from histodetect.features.extract import extract_features, with_context
from histodetect.features.pretrain import SSLConfig, pretrain_encoder
from histodetect.features.settings import EncoderSpec
from histodetect.features.store import SlideFeatures, read_features, write_features
from histodetect.mil.data import Bag, FeatureSource, bags_of
from histodetect.mil.models import load_mil_model, score_bag
from histodetect.mil.summary_image import TILE_COLUMNS, TileSource
from histodetect.mil.train import MilConfig, train_fold
from histodetect.mil.train_topk import TopkConfig, TopkScorer
from histodetect.testdata import TestData, default_local

REPO = Path(__file__).resolve().parents[1]
TOP_TILES = 10
BINS = 12
LC_READ, LC_PX = 224, 64  # an LC25000 patch's side, and the side it is resized to


def write_sheet(workdir: Path, data: TestData) -> pd.DataFrame:
    """The 31 slides as a sample sheet (label: has IDC; the workflow's MIL split needs one)."""
    slides = pd.read_csv(data.path("idc_breast/slides.tsv"), sep="\t", dtype={"patient_id": str})
    sheet = pd.DataFrame(
        {
            "slide_id": slides.slide_id,
            "patient_id": slides.patient_id,
            "path": [str(data.path(f"idc_breast/{p}")) for p in slides.path],
            "mpp": slides.mpp,
            "label": (slides.idc_patches > 0).astype(int),
        }
    )
    workdir.mkdir(parents=True, exist_ok=True)
    text, path = sheet.to_csv(sep="\t", index=False), workdir / "samples.tsv"
    if not path.exists() or path.read_text() != text:  # a rewrite would rerun the workflow
        path.write_text(text)
    return sheet


def run_features(workdir: Path, source: str, cores: int, seed: int) -> Path:
    """``snakemake features`` with ``features.source``; the folder of its feature files."""
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    over = {
        "samples": str(workdir / "samples.tsv"),
        "annotations": str(workdir / "none.csv"),
        "demo": {"enabled": False},
        "tiling": {"tile_um": 200.0, "target_mpp": 4.0},
        "split": {"test_fraction": 0.0, "stratify_by": None},
        "folds": 5,
        "seed": seed,
        # each tile alone: the ctx arm adds the neighbourhood (what features.context does)
        "features": {"source": source, "device": "cpu", "context": "none"},
        "mil": {"enabled": True, "device": "cpu"},
    }
    config = workdir / f"config_{source}.yaml"
    merge_config(base, over)
    config.write_text(yaml.safe_dump(base))
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(config), "--workflow-profile", "none",
        "--cores", str(cores), "features",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    chosen = [line for line in proc.stderr.splitlines() if "slide-label features" in line]
    print(f"features.source {source}: {chosen[0] if chosen else ''}", flush=True)
    names = "random" if source == "timm" else "ssl"
    (folder,) = [p for p in (workdir / "results" / "features").glob(f"resnet18-{names}-*")]
    return folder


def cut_regions(
    workdir: Path, sheet: pd.DataFrame, patches: pd.DataFrame, args: argparse.Namespace
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Each slide's tiles grouped by region: the bag table and each bag's IDC tiles."""
    idc = {(str(p), int(x), int(y)) for p, x, y in patches.loc[patches.label == 1, ["patient_id", "x", "y"]].itertuples(index=False)}  # fmt: skip
    rows, inside = [], {}
    tiles_out = workdir / "bench" / variant(args) / "tiles"
    tiles_out.mkdir(parents=True, exist_ok=True)
    for slide in sheet.itertuples():
        tiles = pd.read_parquet(workdir / "results" / "tiles" / f"{slide.slide_id}.parquet")
        summary = json.loads((workdir / "results" / "tiles" / f"{slide.slide_id}.json").read_text())
        side = round(args.region_um / float(slide.mpp))  # level-0 px
        region = (tiles.y // side).astype(int) * 10_000 + (tiles.x // side).astype(int)
        for key, part in tiles.groupby(region, sort=True):
            if len(part) < args.min_tiles:
                continue
            is_idc = np.array([(slide.patient_id, x, y) in idc for x, y in zip(part.x, part.y, strict=True)])  # fmt: skip
            bag_id = f"{slide.slide_id}_r{key}"
            part.assign(slide_id=bag_id).to_parquet(tiles_out / f"{bag_id}.parquet")
            (tiles_out / f"{bag_id}.json").write_text(json.dumps({**summary, "slide_id": bag_id}))
            inside[bag_id] = is_idc
            rows.append((bag_id, slide.slide_id, slide.patient_id, int(is_idc.any()), is_idc.mean(), part.index.to_numpy()))  # fmt: skip
    table = pd.DataFrame(rows, columns=["bag_id", "source_slide", "patient_id", "y", "idc_share", "rows"])  # fmt: skip
    if args.hard:
        table = table[(table.y == 0) | (table.idc_share <= args.hard_share)]
    return table.reset_index(drop=True), inside


def variant(args: argparse.Namespace) -> str:
    """The folder of one task's bags and models under ``<workdir>/bench``."""
    if args.task == "lc25000":
        return "lc25000_aca_scc"
    return f"{'hard' if args.hard else 'regions'}_{args.region_um:.0f}um"


def write_region_features(
    workdir: Path,
    folder: Path,
    table: pd.DataFrame,
    name: str,
    args: argparse.Namespace,
    *,
    context: bool = False,
) -> Path:
    """Each region's rows of its slide's feature file, as a feature file of its own
    (``context``: each tile with its neighbours' mean, from the whole slide)."""
    out = workdir / "bench" / variant(args) / f"features_{name}"
    out.mkdir(parents=True, exist_ok=True)
    expect = {"encoder_id": folder.name}
    cache: dict[str, Any] = {}
    for row in table.itertuples():
        if row.source_slide not in cache:
            feats = read_features(folder / f"{row.source_slide}.h5", expect)
            if context:
                feats.features = with_context(feats.features, feats.grid["row"], feats.grid["col"])  # fmt: skip
            cache = {row.source_slide: feats}
        feats = cache[row.source_slide]
        sub = type(feats)(feats.features[row.rows], feats.coords[row.rows], dict(feats.attrs))
        write_features(out / f"{row.bag_id}.h5", sub)
    return out


def fold_table(table: pd.DataFrame, folds: int, seed: int) -> pd.DataFrame:
    """One row per slide of a bag (a region: its own slide), folds over patients stratified
    by label."""
    slides = table if "slide_id" in table else table.assign(slide_id=table.bag_id)
    rows = slides.assign(group=slides.patient_id, label=slides.y.astype(str), split="train")[
        ["slide_id", "bag_id", "patient_id", "group", "y", "label", "split"]
    ]
    return bag_folds(rows, k=folds, seed=seed, source="bench weak_real")


def colour_features(tiles: TileSource, bags: list[Bag]) -> np.ndarray:
    """Each bag's mean HSV histogram over its tiles (``BINS`` bins a channel)."""
    out = []
    for bag in bags:
        pixels = tiles.read(bag, np.arange(len(tiles.table(bag)))).reshape(-1, 3) / 255.0
        hsv = rgb_to_hsv(pixels)
        hist = [np.histogram(hsv[:, c], BINS, (0, 1))[0] / len(hsv) for c in range(3)]
        out.append(np.concatenate(hist))
    return np.array(out)


def colour_oof(folds: pd.DataFrame, tiles: TileSource) -> np.ndarray:
    bags = bags_of(folds)
    x, y = colour_features(tiles, bags), np.array([b.y for b in bags])
    fold = np.array([b.fold for b in bags])
    prob = np.zeros(len(bags))
    for k in sorted(set(fold)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(x[fold != k], y[fold != k])
        prob[fold == k] = model.predict_proba(x[fold == k])[:, 1]
    return prob


def attention_in_idc(
    bags: list[Bag], weights_of: Any, inside: dict[str, np.ndarray]
) -> tuple[float, float]:
    """Mean share of each positive bag's 10 most attended tiles that are IDC, and its ceiling."""
    shares, ceilings = [], []
    for bag in bags:
        if bag.y != 1:
            continue
        w, idc = weights_of(bag), inside[bag.bag_id]
        top = np.argsort(-w, kind="stable")[:TOP_TILES]
        shares.append(float(idc[top].mean()))
        ceilings.append(min(int(idc.sum()), len(top)) / len(top))
    return float(np.mean(shares)), float(np.mean(ceilings))


def train_arm(
    name: str,
    folds: pd.DataFrame,
    out: Path,
    source: FeatureSource | TileSource,
    cfg: MilConfig | TopkConfig,
) -> dict[int, Path]:
    """One model per fold; the fold model files."""
    models = {}
    for fold in sorted(set(folds.fold)):
        fold_dir = out / name / f"fold_{fold}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        train_fold(
            folds, int(fold), source, fold_dir, cfg, ["0", "1"],  # type: ignore[arg-type]
            mlflow_uri=f"sqlite:///{out / 'mlflow.db'}", experiment="bench_weak_real",
            tb_dir=out / "tensorboard" / name / f"fold_{fold}",
        )  # fmt: skip
        models[int(fold)] = fold_dir / "model.pt"
    return models


def oof_probs(models: dict[int, Path], bags: list[Bag]) -> np.ndarray:
    """Each bag's out-of-fold probability, from its fold's val_predictions.parquet."""
    table = pd.concat(
        [pd.read_parquet(p.with_name("val_predictions.parquet")) for p in models.values()]
    ).set_index("bag_id")
    return table.prob.reindex([b.bag_id for b in bags]).to_numpy()


def supervised_scores(
    folds: pd.DataFrame, source: FeatureSource, inside: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Each bag's tile scores from a logistic regression on the experts' tile labels of the
    other folds' bags: what the features allow a tile ranking when the tiles are labelled."""
    bags = bags_of(folds)
    x = {b.bag_id: source.bag(b).numpy() for b in bags}
    scores = {}
    for k in sorted({b.fold for b in bags}):
        train = [b for b in bags if b.fold != k]
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        model.fit(np.concatenate([x[b.bag_id] for b in train]), np.concatenate([inside[b.bag_id] for b in train]))  # fmt: skip
        scores |= {b.bag_id: model.decision_function(x[b.bag_id]) for b in bags if b.fold == k}
    return scores


@dataclass
class Task:
    """One task's bags (``table``: a row per bag, or per slide of a bag with ``slide_id``),
    tile labels where known (``inside``), feature folders by name, tiles and encoder."""

    table: pd.DataFrame
    inside: dict[str, np.ndarray]
    sources: dict[str, FeatureSource]
    tiles: TileSource
    ssl_encoder: Path
    out: Path


def idc_task(workdir: Path, args: argparse.Namespace) -> Task:
    """The idc_breast regions: the workflow's tiles, encoder and features, cut into bags."""
    data = TestData()
    sheet = write_sheet(workdir, data)
    t0 = time.perf_counter()
    folders = {name: run_features(workdir, source, args.cores, args.seed)
               for name, source in (("random", "timm"), ("ssl", "auto"))}  # fmt: skip
    print(f"workflow: tiles, ssl encoder, features {(time.perf_counter() - t0) / 60:.1f} min")
    patches = pd.read_csv(data.path("idc_breast/patches.tsv"), sep="\t", dtype={"patient_id": str})
    table, inside = cut_regions(workdir, sheet, patches, args)
    pos = table[table.y == 1]
    print(
        f"{'hard ' if args.hard else ''}regions of {args.region_um:.0f} um: {len(table)} bags of "
        f"{table.patient_id.nunique()} patients, {int(table.y.sum())} IDC; {table.rows.map(len).mean():.1f} "
        f"tiles a bag; IDC share of a positive bag's tiles: median {pos.idc_share.median():.2f}",
        flush=True,
    )  # fmt: skip
    sources = {n: FeatureSource(write_region_features(workdir, f, table, n, args)) for n, f in folders.items()}  # fmt: skip
    if any(a.endswith("_ctx") for a in args.arms):  # tiles with their neighbourhood
        ctx = write_region_features(workdir, folders["ssl"], table, "ssl_ctx", args, context=True)
        sources["ssl_ctx"] = FeatureSource(ctx)
    out = workdir / "bench" / variant(args)
    encoder = workdir / "results" / "encoder" / "ssl" / "encoder.pt"
    return Task(table, inside, sources, TileSource(out / "tiles"), encoder, out)


def lc25000_task(workdir: Path, args: argparse.Namespace) -> Task:
    """LC25000's adenocarcinoma and squamous cell carcinoma patches (the hard pair), a bag per
    ``group_id`` (the copies of one original image), squamous 1; every patch a slide of one
    tile, resized to ``LC_PX`` (the tile models read them so), and a feature file a bag. The encoder and features as the workflow makes them: SimCLR
    with the shipped ``ssl`` settings on every patch without labels, then frozen features."""
    root = default_local() / "lc25000_lung"
    labels = pd.read_csv(root / "labels.csv")
    pair = labels[labels.label.isin(["lung_aca", "lung_scc"])].drop_duplicates("git_blob_sha1")
    group = pair.group_id.astype(str).to_numpy()
    table = pd.DataFrame({
        "slide_id": [Path(p).stem for p in pair.path], "bag_id": group, "patient_id": group,
        "y": (pair.label == "lung_scc").astype(int).to_numpy(),
        "path": [str(root / p) for p in pair.path], "tile_px": LC_PX,
    })  # fmt: skip
    out = workdir / "bench" / variant(args)
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    for row in table.itertuples():
        dest = out / "tiles" / f"{row.slide_id}.parquet"
        if not dest.exists():
            summary = {"slide_id": row.slide_id, "path": row.path}
            dest.with_suffix(".json").write_text(json.dumps(summary))
            pd.DataFrame([(0, 0, 0, LC_READ, LC_PX)], columns=list(TILE_COLUMNS)).to_parquet(dest)
    print(
        f"LC25000 adenocarcinoma vs squamous cell carcinoma: {table.bag_id.nunique()} bags "
        f"(groups), {table.drop_duplicates('bag_id').y.sum()} squamous; {len(table)} patches, "
        f"{len(table) / table.bag_id.nunique():.1f} a bag, at {LC_PX} px",
        flush=True,
    )  # fmt: skip
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["ssl"]
    ssl = {**shipped, "model": "resnet18", "device": "cpu", "num_workers": 1, "seed": args.seed}
    encoder = out / "encoder" / "encoder.pt"
    if not encoder.exists():
        t0 = time.perf_counter()
        split = table[["slide_id", "patient_id"]].assign(split="train")
        pretrain_encoder(
            table[["slide_id", "path", "tile_px"]], split, encoder.parent, SSLConfig.from_dict(ssl),
            source="bench lc25000", mlflow_uri=f"sqlite:///{out / 'mlflow.db'}",
            experiment="bench_weak_real", tb_dir=out / "tensorboard" / "ssl",
        )  # fmt: skip
        print(f"pretrain_encoder: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    specs = {
        "random": EncoderSpec(model="resnet18", source="timm", seed=args.seed),
        "ssl": EncoderSpec(model="resnet18", source="ssl", checkpoint=str(encoder), seed=args.seed),
    }
    for name, spec in specs.items():
        if (out / f"features_{name}" / "done").exists():
            continue
        t0 = time.perf_counter()
        feats = extract_features(table, build_encoder(spec, LC_PX), num_workers=1, device="cpu")
        folders = [name] + ([f"{name}_ctx"] if name == "ssl" else [])
        for folder in folders:
            (out / f"features_{folder}").mkdir(parents=True, exist_ok=True)
        attrs = {"encoder_id": name, "status": "ok"}
        for bag, rows in table.groupby("bag_id", sort=False).indices.items():  # a file a bag
            x, xy = feats[rows], np.zeros((len(rows), 2), np.int64)
            write_features(out / f"features_{name}" / f"{bag}.h5", SlideFeatures(x, xy, attrs))
            if name == "ssl":  # features.context on one-tile slides: each tile its own context
                alone = np.arange(len(rows)) * 3  # grid cells with no neighbour
                ctx = SlideFeatures(with_context(x, alone, alone), xy, attrs)
                write_features(out / "features_ssl_ctx" / f"{bag}.h5", ctx)
        for folder in folders:
            (out / f"features_{folder}" / "done").write_text("")
        print(f"features {name}: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    sources = {n: FeatureSource(out / f"features_{n}") for n in ("random", "ssl", "ssl_ctx")}
    return Task(table[["slide_id", "bag_id", "patient_id", "y"]], {}, sources, TileSource(out / "tiles"), encoder, out)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=["idc", "lc25000"], default="idc")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/histodetect-bench-weak-real"))
    parser.add_argument("--region-um", type=float, default=1600.0)
    parser.add_argument("--min-tiles", type=int, default=8, help="smaller regions are left out")
    parser.add_argument("--hard", action="store_true", help="positive bags: little IDC only")
    parser.add_argument("--hard-share", type=float, default=0.25)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--tile-epochs", type=int, default=4, help="naive_tiles, topk_ssl")
    parser.add_argument("--arms", nargs="+", default=["colour", "naive_tiles", "mean_random", "abmil_random", "mean_ssl", "abmil_ssl", "abmil_ssl_ctx", "topk_ssl", "supervised_tiles"])  # fmt: skip
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    torch.set_num_threads(args.cores)
    task = (lc25000_task if args.task == "lc25000" else idc_task)(workdir, args)
    folds = fold_table(task.table, args.folds, args.seed)
    bags = bags_of(folds)
    # the feature files hold a bag each (LC25000: its patches; idc: the region, its own slide)
    feature_folds = folds.drop_duplicates("bag_id").assign(slide_id=lambda d: d.bag_id)
    feature_bags = {b.bag_id: b for b in bags_of(feature_folds)}
    y = np.array([b.y for b in bags])
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    mil = shipped["mil"]
    results: dict[str, dict[str, float]] = {}
    os.chdir(workdir)  # the tile tables name their slides as the workflow wrote them
    for arm in args.arms:
        if arm == "supervised_tiles" and not task.inside:
            continue  # no tile labels (LC25000: the whole patch is its class)
        t0 = time.perf_counter()
        weights_of, attention = None, (float("nan"), float("nan"))
        if arm == "colour":
            prob = colour_oof(folds, task.tiles)
        elif arm == "supervised_tiles":  # a reference, not a contender: it sees tile labels
            scores = supervised_scores(feature_folds, task.sources["ssl_ctx"], task.inside)
            prob = np.array([1 / (1 + np.exp(-scores[b.bag_id].max())) for b in bags])
            attention = attention_in_idc(bags, lambda b, _s=scores: _s[b.bag_id], task.inside)
        else:
            model, _, feats = arm.partition("_")  # e.g. abmil, ssl_ctx
            if model in ("mean", "abmil"):
                cfg: MilConfig | TopkConfig = MilConfig.from_section({**mil, "model": model}, args.seed)  # fmt: skip
                models = train_arm(arm, feature_folds, task.out, task.sources[feats], cfg)
                loaded = {k: load_mil_model(p)[:2] for k, p in models.items()}

                def weights_of(bag: Bag, _l: Any = loaded, _s: Any = task.sources[feats]) -> np.ndarray:  # fmt: skip
                    return score_bag(*_l[bag.fold], _s.bag(feature_bags[bag.bag_id]))[1]
            else:
                encoder = {"backbone": "resnet18", "checkpoint": str(task.ssl_encoder) if feats == "ssl" else None}  # fmt: skip
                topk = {"select": "random", "k": 8} if model == "naive" else {}
                topk["epochs"] = args.tile_epochs
                cfg = TopkConfig.from_section({**mil, "topk": topk}, args.seed, encoder)
                models = train_arm(arm, folds, task.out, task.tiles, cfg)
                scorers = {k: TopkScorer([p], task.tiles) for k, p in models.items()}

                def weights_of(bag: Bag, _s: Any = scorers) -> np.ndarray:
                    return _s[bag.fold].weights(bag)

            prob = oof_probs(models, bags)
            if model != "mean" and task.inside:
                attention = attention_in_idc(bags, weights_of, task.inside)
        auc = float(roc_auc_score(y, prob))
        bal = float(balanced_accuracy_score(y, prob >= 0.5))
        results[arm] = {"auc": auc, "balanced_accuracy": bal, "attention": attention[0]}
        print(
            f"{arm}: oof_auc {auc:.3f} balanced_accuracy {bal:.3f} attention_in_idc "
            f"{attention[0]:.3f} (ceiling {attention[1]:.3f}) ({(time.perf_counter() - t0) / 60:.1f} min)",
            flush=True,
        )  # fmt: skip
    # what snakemake mil does with no model settings: mil.model on the default features
    default = f"{mil['model']}_ssl" + (
        "_ctx" if shipped["features"]["context"] == "neighbours" else ""
    )
    contenders = [a for a in results if a not in ("colour", "supervised_tiles")]
    best = max(contenders, key=lambda a: results[a]["auc"])
    get = lambda a, k="auc": results.get(a, {}).get(k, float("nan"))  # noqa: E731
    print(
        f"auc_colour={get('colour'):.3f} auc_naive_tiles={get('naive_tiles'):.3f} "
        f"auc_default_before={get('abmil_random'):.3f} auc_default={get(default):.3f} "
        f"auc_best={get(best):.3f} best={best} attention_in_idc={get(default, 'attention'):.3f}"
    )


if __name__ == "__main__":
    main()
