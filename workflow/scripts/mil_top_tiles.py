"""Snakemake script of rule mil_top_tiles: the most attended tiles of a few labelled test bags,
or out-of-fold training bags where no test bag carries a label (each ranked by its own fold's
model; models that read tiles: the summary image's occlusion effect, the top-k model's tile
scores)."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import json
from pathlib import Path

import torch

from histodetect.cohort.bags import read_bag_folds
from histodetect.mil.data import FeatureSource, bags_of
from histodetect.mil.figures import labelled, read_predictions
from histodetect.mil.models import load_mil_model
from histodetect.mil.summary_image import TileSource
from histodetect.mil.tile_models import tile_weights
from histodetect.mil.top_tiles import (
    pick_bags,
    pick_spread,
    scoring_models,
    shown_split,
    top_tiles,
    top_tiles_png,
)
from histodetect.runner import rule_context
from histodetect.training.thresholds import model_meta

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    folds = read_bag_folds(snakemake.input.folds)
    table = read_predictions(snakemake.input.predictions)
    metrics = json.loads(Path(snakemake.input.metrics).read_text())
    classes, survival = metrics["classes"], metrics["task"] == "survival"
    paths = list(snakemake.input.models)
    model_folds = [int(model_meta(p)["fold"]) for p in paths]
    weigh = tile_weights(paths, TileSource(snakemake.params.tiles_dir, snakemake.params.scores_dir))
    models = [] if weigh else [load_mil_model(p)[:2] for p in paths]
    source = FeatureSource(
        snakemake.params.feature_dir, {"encoder_id": snakemake.params.encoder_id}
    )
    split = shown_split(table)
    part = labelled(table, split)
    bags = {b.bag_id: b for b in bags_of(folds)}
    rows = []
    n = snakemake.params.bags
    spread = "risk" if survival else "target"
    for bag_id in pick_bags(part, classes, n) if classes else pick_spread(part, n, spread):
        row, bag = part[part.bag_id == bag_id].iloc[0], bags[bag_id]
        which = scoring_models(range(len(paths)), model_folds, bag)  # its own fold's, or all
        if weigh:
            weights = weigh[0](bag, which)
            tiles = top_tiles(None, source, bag, snakemake.params.tiles, weights=weights)
        else:
            tiles = top_tiles([models[i] for i in which], source, bag, snakemake.params.tiles)
        if classes:
            call = row.call
        elif survival:  # its log risk and group
            call = f"risk {float(row.risk):.3g} ({row.risk_group})"
        else:  # a number: its prediction
            call = f"{row.prediction:.3g}"
        rows.append((bag_id, row.label, call, tiles))
    top_tiles_png(
        rows, snakemake.params.slide_paths, snakemake.output.png, split=split,
        judged=bool(classes),
    )  # fmt: skip
