"""Snakemake script of rule mil_top_tiles: the most attended tiles of a few labelled test bags,
or out-of-fold training bags where no test bag carries a label (each ranked by its own fold's
model; summary-image models: each tile's occlusion effect in the bag's test-time draws)."""

import json
from pathlib import Path

import torch

from histodetect.cohort.bags import read_bag_folds
from histodetect.mil.data import FeatureSource, bags_of
from histodetect.mil.figures import labelled, read_predictions
from histodetect.mil.summary_image import TileSource
from histodetect.mil.top_tiles import (
    pick_bags,
    scoring_models,
    shown_split,
    top_tiles,
    top_tiles_png,
)
from histodetect.mil.train import load_mil_model
from histodetect.mil.train_concat import is_concat_model, load_concat_model, occlusion_weights
from histodetect.runner import rule_context

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    folds = read_bag_folds(snakemake.input.folds)
    table = read_predictions(snakemake.input.predictions)
    classes = json.loads(Path(snakemake.input.metrics).read_text())["classes"]
    paths = list(snakemake.input.models)
    concat = is_concat_model(paths[0])
    if concat:
        loaded = [load_concat_model(p) for p in paths]
        tile_source = TileSource(snakemake.params.tiles_dir, snakemake.params.scores_dir)
    else:
        loaded = [load_mil_model(p) for p in paths]
    models = [m[:2] for m in loaded]
    model_folds = [int(m[2]["fold"]) for m in loaded]
    source = FeatureSource(
        snakemake.params.feature_dir, {"encoder_id": snakemake.params.encoder_id}
    )
    split = shown_split(table)
    part = labelled(table, split)
    bags = {b.bag_id: b for b in bags_of(folds)}
    rows = []
    for bag_id in pick_bags(part, classes, snakemake.params.bags):
        row, bag = part[part.bag_id == bag_id].iloc[0], bags[bag_id]
        use = scoring_models(models, model_folds, bag)
        if concat:
            weights = occlusion_weights(use, tile_source, bag, loaded[0][2])
            tiles = top_tiles(None, source, bag, snakemake.params.tiles, weights=weights)
        else:
            tiles = top_tiles(use, source, bag, snakemake.params.tiles)
        rows.append((bag_id, row.label, row.call, tiles))
    top_tiles_png(rows, snakemake.params.slide_paths, snakemake.output.png, split=split)
