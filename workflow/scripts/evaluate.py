"""Snakemake script of rule evaluate."""

import pandas as pd

from histodetect.annotations import read_digilut_csv, slide_name_map
from histodetect.evaluation import evaluate_cohort
from histodetect.runner import rule_context

with rule_context(snakemake):
    sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str)
    evaluate_cohort(
        box_paths=snakemake.input.boxes,
        score_paths=snakemake.input.scores,
        label_paths=snakemake.input.labels,
        truth=read_digilut_csv(snakemake.input.annotations, slide_name_map(sheet)),
        sheet=sheet,
        giou=snakemake.params.evaluate["giou"],
        beta=snakemake.params.evaluate["beta"],
        outputs=snakemake.output,
    )
