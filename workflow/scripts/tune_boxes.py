"""Snakemake script of rule tune_boxes."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import pandas as pd

from histodetect.evaluation.cohort import rule_truth
from histodetect.evaluation.tuning import tune_cohort
from histodetect.runner import log, rule_context

with rule_context(snakemake):
    sheet, truth = rule_truth(snakemake.input, snakemake.params.annotation_import)
    record = tune_cohort(
        heatmap_paths=snakemake.input.heatmaps,
        score_paths=snakemake.input.scores,
        truth=truth,
        sheet=sheet,
        split=pd.read_csv(snakemake.input.split, sep="\t", dtype=str),
        boxes_cfg=snakemake.params.boxes,
        slide_cfg=snakemake.params.slide_score,
        giou=snakemake.params.evaluate["giou"],
        beta=snakemake.params.evaluate["beta"],
        outputs=snakemake.output,
        source=snakemake.input.split,
    )
    log.info(
        "out-of-fold mean F2 over %d slides: %.3f tuned, %.3f with the config's settings: %s",
        record["n_slides"],
        record["oof_mean_f2"],
        record["config_oof_mean_f2"],
        record["settings"],
    )
