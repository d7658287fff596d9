"""Snakemake script of rule train_mil: one fold's bag model (or summary-image or top-k
tile model)."""

from pathlib import Path

import torch

from histodetect.cohort.bags import mil_classes, read_bag_folds
from histodetect.mil.data import FeatureSource
from histodetect.mil.summary_image import TileSource
from histodetect.mil.train import MilConfig, train_mil_fold
from histodetect.mil.train_concat import ConcatConfig, train_concat_fold
from histodetect.mil.train_topk import TopkConfig, train_topk_fold
from histodetect.runner import rule_context

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    path = snakemake.input.folds
    folds = read_bag_folds(path)  # a tampered table is refused
    mil, seed = snakemake.params.mil, snakemake.params.seed
    tiles = TileSource(snakemake.params.tiles_dir, snakemake.params.scores_dir)
    if mil["model"] == "concat":
        train, cfg, source = train_concat_fold, ConcatConfig.from_section(mil, seed), tiles
    elif mil["model"] == "topk":  # the encoder starts where the features' does
        cfg = TopkConfig.from_section(mil, seed, snakemake.params.topk_encoder)
        train, source = train_topk_fold, tiles
    else:
        train, cfg = train_mil_fold, MilConfig.from_section(mil, seed)
        expect = {"encoder_id": snakemake.params.encoder_id}
        source = FeatureSource(snakemake.params.feature_dir, expect)
    train(
        folds, snakemake.params.fold, source, Path(snakemake.output.model).parent, cfg,
        mil_classes(folds.label, mil, path),
        mlflow_uri=snakemake.params.mlflow_uri, experiment=snakemake.params.experiment,
        tb_dir=Path(snakemake.params.tb_dir),
        extra_meta={"encoder_id": snakemake.params.encoder_id, "bag": mil["bag"]},
    )  # fmt: skip
