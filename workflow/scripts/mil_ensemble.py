"""Snakemake script of rule mil_ensemble: predictions.tsv and metrics.json."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from pathlib import Path

import torch

from histodetect.cohort.bags import read_bag_folds
from histodetect.mil.data import FeatureSource
from histodetect.mil.ensemble import ensemble, write_outputs
from histodetect.mil.summary_image import TileSource
from histodetect.mil.tile_models import tile_scorer
from histodetect.runner import rule_context
from histodetect.slides.threads import use_rule_threads

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    use_rule_threads(snakemake)
    path = snakemake.input.folds
    folds = read_bag_folds(path)  # a tampered table is refused
    models = list(snakemake.input.models)
    tiles = TileSource(snakemake.params.tiles_dir, snakemake.params.scores_dir)
    scorer = tile_scorer(models, tiles)  # None: a bag model over the features
    table, metrics = ensemble(
        folds, models, list(snakemake.input.predictions),
        FeatureSource(snakemake.params.feature_dir, {"encoder_id": snakemake.params.encoder_id}),
        n_bootstrap=snakemake.params.bootstrap, seed=snakemake.params.seed, scorer=scorer,
        survival=snakemake.params.survival,
    )  # fmt: skip
    write_outputs(
        table, metrics, Path(snakemake.output.predictions), Path(snakemake.output.metrics)
    )
