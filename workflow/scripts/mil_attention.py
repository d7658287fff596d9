"""Snakemake script of rule mil_attention: one slide's attention GeoJSON and overlay."""

import torch

from histodetect.cohort.bags import read_bag_folds
from histodetect.mil.attention import slide_attention, write_attention
from histodetect.mil.data import FeatureSource, bags_of
from histodetect.mil.train import load_mil_model
from histodetect.runner import rule_context

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    slide = snakemake.wildcards.slide
    folds = read_bag_folds(snakemake.input.folds)
    bag_id = folds.bag_id[folds.slide_id == slide].iloc[0]
    bag = bags_of(folds[folds.bag_id == bag_id])[0]
    models = [load_mil_model(p)[:2] for p in snakemake.input.models]
    source = FeatureSource(
        snakemake.params.feature_dir, {"encoder_id": snakemake.params.encoder_id}
    )
    feats, attention, n = slide_attention(models, source, bag, slide)
    write_attention(
        feats, attention, n, slide, snakemake.output.geojson, snakemake.output.png,
        snakemake.params.cell_px,
    )  # fmt: skip
