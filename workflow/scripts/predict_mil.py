"""Snakemake script of checkpoint predict_mil: the new slides' bags through the fold ensemble."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import logging
from pathlib import Path

import pandas as pd
import torch

from histodetect.mil.data import FeatureSource
from histodetect.mil.predict import (
    left_out_bags,
    load_ensemble,
    predict_bag_table,
    predict_bags,
    write_predictions,
)
from histodetect.mil.summary_image import TileSource
from histodetect.mil.tile_models import tile_scorer
from histodetect.runner import rule_context
from histodetect.slides.threads import use_rule_threads

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    use_rule_threads(snakemake)
    sheet_path = snakemake.input.sheet
    sheet = pd.read_csv(sheet_path, sep="\t", dtype=str, keep_default_na=False)
    tiling = pd.read_csv(
        snakemake.input.tiling, sep="\t", dtype={"slide_id": str}, keep_default_na=False
    )
    features = {Path(p).stem: p for p in snakemake.input.features}
    bag_table = predict_bag_table(sheet, snakemake.params.bag, tiling, features, sheet_path)
    encoder_id = snakemake.params.encoder_id
    loaded, decision = load_ensemble(snakemake.input.models, snakemake.input.decision, encoder_id)
    source = FeatureSource(snakemake.params.feature_dir, {"encoder_id": encoder_id})
    # families that read tiles (concat, topk) score the new slides' tiles, not their features
    scorer = tile_scorer(snakemake.input.models, TileSource(snakemake.params.tiles_dir))
    table = predict_bags(bag_table, loaded, decision, source, scorer)
    for row in bag_table[bag_table.split == "excluded"].itertuples():
        logging.warning("slide %s left out: %s", row.slide_id, row.error)
    for bag in left_out_bags(bag_table):
        logging.warning("bag %s left out: none of its slides tiled and extracted", bag)
    write_predictions(
        table, bag_table, Path(snakemake.output.predictions), Path(snakemake.output.bags)
    )
