"""Snakemake script of rule boxes_from_heatmap."""

import pandas as pd

from histodetect.annotations import read_digilut_csv, slide_name_map
from histodetect.detection import detect_slide
from histodetect.runner import rule_context

with rule_context(snakemake):
    sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str)
    truth = read_digilut_csv(snakemake.input.annotations, slide_name_map(sheet))
    detect_slide(
        snakemake.input.heatmap,
        snakemake.params.path,
        truth[truth.slide_id == snakemake.wildcards.slide],
        snakemake.params.boxes,
        thumb_mpp=snakemake.params.thumb_mpp,
        out_boxes=snakemake.output.boxes,
        out_geojson=snakemake.output.geojson,
        out_overlay=snakemake.output.overlay,
    )
