"""Snakemake script of rule mil_top_tiles: the most attended tiles of a few test bags
(models that read tiles: the summary image's occlusion effect, the top-k model's tile
scores)."""

import json
from pathlib import Path

import torch

from histodetect.cohort.bags import read_bag_folds
from histodetect.mil.data import FeatureSource, bags_of
from histodetect.mil.figures import labelled, read_predictions
from histodetect.mil.summary_image import TileSource
from histodetect.mil.tile_models import tile_weights
from histodetect.mil.top_tiles import pick_bags, top_tiles, top_tiles_png
from histodetect.mil.train import load_mil_model
from histodetect.runner import rule_context

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    folds = read_bag_folds(snakemake.input.folds)
    table = read_predictions(snakemake.input.predictions)
    classes = json.loads(Path(snakemake.input.metrics).read_text())["classes"]
    paths = list(snakemake.input.models)
    weigh = tile_weights(paths, TileSource(snakemake.params.tiles_dir, snakemake.params.scores_dir))
    models = None if weigh else [load_mil_model(p)[:2] for p in paths]
    source = FeatureSource(
        snakemake.params.feature_dir, {"encoder_id": snakemake.params.encoder_id}
    )
    test = labelled(table, "test")
    bags = {b.bag_id: b for b in bags_of(folds)}
    rows = []
    for bag_id in pick_bags(test, classes, snakemake.params.bags):
        row, bag = test[test.bag_id == bag_id].iloc[0], bags[bag_id]
        if weigh:
            tiles = top_tiles(None, source, bag, snakemake.params.tiles, weights=weigh[0](bag))
        else:
            tiles = top_tiles(models, source, bag, snakemake.params.tiles)
        rows.append((bag_id, row.label, row.call, tiles))
    top_tiles_png(rows, snakemake.params.slide_paths, snakemake.output.png)
