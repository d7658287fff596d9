"""Snakemake script of rule train_mil: one fold of mil.model's family (a bag model over the
feature files, or a model that reads tiles: the summary image, the top-k tile encoder)."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from pathlib import Path

import torch

from histodetect.cohort.bags import mil_classes, read_bag_folds
from histodetect.mil.data import FeatureSource
from histodetect.mil.families import family
from histodetect.mil.summary_image import TileSource
from histodetect.mil.train import train_fold
from histodetect.runner import rule_context
from histodetect.slides.threads import use_rule_threads

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    use_rule_threads(snakemake)
    path = snakemake.input.folds
    folds = read_bag_folds(path)  # a tampered table is refused
    mil, params = snakemake.params.mil, snakemake.params
    chosen = family(mil["model"])
    cfg = chosen.options_from(mil, params.seed, params.topk_encoder)
    if chosen.reads_tiles:
        source = TileSource(params.tiles_dir, params.scores_dir)
    else:
        source = FeatureSource(params.feature_dir, {"encoder_id": params.encoder_id})
    train_fold(
        folds, params.fold, source, Path(snakemake.output.model).parent, cfg,
        mil_classes(folds.label, mil, path),
        mlflow_uri=params.mlflow_uri, experiment=params.experiment, tb_dir=Path(params.tb_dir),
        extra_meta={"encoder_id": params.encoder_id, "bag": mil["bag"]},
    )  # fmt: skip
