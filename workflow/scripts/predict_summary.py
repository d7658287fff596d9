"""Snakemake script of rule predict_summary."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import json
from pathlib import Path

import pandas as pd

from histodetect.detection.predictions import write_predictions
from histodetect.detection.slide_score import SlideScore
from histodetect.runner import rule_context

with rule_context(snakemake):
    slide_cfg = dict(snakemake.params.slide_score)
    if getattr(snakemake.input, "tuned", None):
        slide_cfg = json.loads(Path(snakemake.input.tuned).read_text())["slide_score"]
    write_predictions(
        sheet=pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str),
        summary_paths=snakemake.input.summaries,
        box_paths=snakemake.input.boxes,
        score_paths=snakemake.input.scores,
        slide_score=SlideScore.from_dict(slide_cfg),
        submission=snakemake.params.submission,
        out_slides=snakemake.output.slides,
        out_submission=snakemake.output.submission,
    )
