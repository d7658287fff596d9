"""Snakemake script of rule mil_attention: one slide's attention GeoJSON and overlay
(summary-image models: each tile's occlusion effect in the bag's test-time draws)."""

import torch

from histodetect.cohort.bags import read_bag_folds
from histodetect.mil.attention import slide_attention, slide_thumbnail, write_attention
from histodetect.mil.data import FeatureSource, bags_of
from histodetect.mil.summary_image import TileSource
from histodetect.mil.train import load_mil_model
from histodetect.mil.train_concat import is_concat_model, load_concat_model, occlusion_weights
from histodetect.runner import log, rule_context

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    slide = snakemake.wildcards.slide
    folds = read_bag_folds(snakemake.input.folds)
    bag_id = folds.bag_id[folds.slide_id == slide].iloc[0]
    bag = bags_of(folds[folds.bag_id == bag_id])[0]
    source = FeatureSource(
        snakemake.params.feature_dir, {"encoder_id": snakemake.params.encoder_id}
    )
    paths = list(snakemake.input.models)
    if is_concat_model(paths[0]):
        loaded = [load_concat_model(p) for p in paths]
        tiles = TileSource(snakemake.params.tiles_dir, snakemake.params.scores_dir)
        weights = occlusion_weights([m[:2] for m in loaded], tiles, bag, loaded[0][2])
        log.info("%s: summary-image model, attention = occlusion effect in the draws", slide)
        feats, attention, n = slide_attention(None, source, bag, slide, weights=weights)
    else:
        models = [load_mil_model(p)[:2] for p in paths]
        feats, attention, n = slide_attention(models, source, bag, slide)
    thumb, ds = slide_thumbnail(snakemake.params.slide, feats, snakemake.params.cell_px)
    label = folds.label[folds.bag_id == bag_id].iloc[0] if bag.y >= 0 else "none"
    title = f"{slide}: attention in bag {bag_id} (label {label}, {bag.split}), {n} tiles"
    write_attention(
        feats, attention, n, slide, snakemake.output.geojson, snakemake.output.png,
        thumb, ds, title,
    )  # fmt: skip
