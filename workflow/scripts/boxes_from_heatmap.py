"""Snakemake script of rules boxes_from_heatmap and predict_boxes."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import pandas as pd

from histodetect.detection.slide_outputs import box_settings, detect_slide, expected_count
from histodetect.evaluation.cohort import slide_truth
from histodetect.runner import rule_context

with rule_context(snakemake):
    sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str)
    if getattr(snakemake.input, "boxes", None):
        truth = slide_truth(
            sheet,
            None,
            snakemake.params.annotation_import,
            [snakemake.input.summary],
            box_index=snakemake.input.boxes,
        )
    else:  # new slides: nothing to compare with
        truth = pd.DataFrame({c: pd.Series(dtype=float) for c in ("x1", "y1", "x2", "y2")})
        truth.insert(0, "slide_id", pd.Series(dtype=str))
    detect_slide(
        snakemake.input.heatmap,
        snakemake.params.path,
        truth,
        box_settings(snakemake.params.boxes, getattr(snakemake.input, "tuned", None)),
        out_boxes=snakemake.output.boxes,
        out_geojson=snakemake.output.geojson,
        out_overlay=snakemake.output.overlay,
        expected=expected_count(sheet, snakemake.wildcards.slide, snakemake.input.sheet),
    )
