"""Snakemake script of rule train_mil: one fold's bag model."""

from pathlib import Path

import torch

from histodetect.cohort.bags import mil_classes, read_bag_folds
from histodetect.mil.data import FeatureSource
from histodetect.mil.train import MilConfig, train_mil_fold
from histodetect.runner import rule_context

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    path = snakemake.input.folds
    folds = read_bag_folds(path)  # a tampered table is refused
    mil = snakemake.params.mil
    train_mil_fold(
        folds, snakemake.params.fold,
        FeatureSource(snakemake.params.feature_dir, {"encoder_id": snakemake.params.encoder_id}),
        Path(snakemake.output.model).parent, MilConfig.from_section(mil, snakemake.params.seed),
        mil_classes(folds.label, mil, path),
        mlflow_uri=snakemake.params.mlflow_uri, experiment=snakemake.params.experiment,
        tb_dir=Path(snakemake.params.tb_dir),
        extra_meta={"encoder_id": snakemake.params.encoder_id, "bag": mil["bag"]},
    )  # fmt: skip
