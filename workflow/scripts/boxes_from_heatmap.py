"""Snakemake script of rule boxes_from_heatmap."""

import pandas as pd

from histodetect.detection.slide_outputs import detect_slide, expected_count
from histodetect.evaluation.cohort import slide_truth
from histodetect.runner import rule_context

with rule_context(snakemake):
    sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str)
    detect_slide(
        snakemake.input.heatmap,
        snakemake.params.path,
        slide_truth(
            sheet,
            snakemake.input.annotations,
            snakemake.params.annotation_import,
            [snakemake.input.summary],
        ),
        snakemake.params.boxes,
        out_boxes=snakemake.output.boxes,
        out_geojson=snakemake.output.geojson,
        out_overlay=snakemake.output.overlay,
        expected=expected_count(sheet, snakemake.wildcards.slide, snakemake.input.sheet),
    )
