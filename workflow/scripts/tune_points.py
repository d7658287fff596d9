"""Snakemake script of rule tune_points."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from pathlib import Path

import pandas as pd

from histodetect.points.metrics import read_point_truth
from histodetect.points.tuning import tune_point_files
from histodetect.runner import log, rule_context

with rule_context(snakemake):
    slides = [Path(p).stem for p in snakemake.input.heatmaps]
    truth, _ = read_point_truth(
        pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str),
        snakemake.input.summaries,
        slides,
        snakemake.params.annotation_import,
        snakemake.params.labels["negative_classes"],
    )
    record = tune_point_files(
        snakemake.input.heatmaps,
        truth,
        pd.read_csv(snakemake.input.split, sep="\t", dtype=str),
        snakemake.params.points,
        source=snakemake.input.split,
        out_settings=snakemake.output.settings,
        out_search=snakemake.output.search,
    )
    log.info(
        "points tuned out of fold over %d fields (%d centres): %s, pooled F1 %.3f "
        "(the config's method and distance: %.3f)",
        record["n_slides"], record["n_truth"], record["settings"], record["oof_f1"],
        record["config_oof_f1"],
    )  # fmt: skip
