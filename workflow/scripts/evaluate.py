"""Snakemake script of rule evaluate."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import json
from pathlib import Path

from histodetect.annotations.lesions import slide_mpps
from histodetect.detection.slide_score import SlideScore
from histodetect.evaluation.cohort import evaluate_cohort, rule_truth
from histodetect.runner import rule_context
from histodetect.training.thresholds import Decision

with rule_context(snakemake):
    sheet, truth = rule_truth(snakemake.input, snakemake.params.annotation_import)
    evaluate_cohort(
        box_paths=snakemake.input.boxes,
        score_paths=snakemake.input.scores,
        label_paths=snakemake.input.labels,
        truth=truth,
        sheet=sheet,
        giou=snakemake.params.evaluate["giou"],
        beta=snakemake.params.evaluate["beta"],
        outputs=snakemake.output,
        slide_score=SlideScore.from_dict(snakemake.params.slide_score),
        tuning=json.loads(Path(tuned).read_text())
        if (tuned := getattr(snakemake.input, "tuned", None))
        else None,
        mpps=slide_mpps(snakemake.input.summaries),
        froc_rule=snakemake.params.evaluate["froc_rule"],
        classes=snakemake.params.classes,
        decision=Decision.read(snakemake.input.threshold),
    )
