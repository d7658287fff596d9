"""Snakemake script of rule evaluate."""

import pandas as pd

from histodetect.evaluation.cohort import evaluate_cohort, slide_truth
from histodetect.runner import rule_context

with rule_context(snakemake):
    sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str)
    evaluate_cohort(
        box_paths=snakemake.input.boxes,
        score_paths=snakemake.input.scores,
        label_paths=snakemake.input.labels,
        truth=slide_truth(
            sheet,
            snakemake.input.annotations,
            snakemake.params.annotation_import,
            snakemake.input.summaries,
        ),
        sheet=sheet,
        giou=snakemake.params.evaluate["giou"],
        beta=snakemake.params.evaluate["beta"],
        outputs=snakemake.output,
    )
