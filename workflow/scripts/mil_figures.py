"""Snakemake script of rule mil_figures: ROC curves and confusion matrices of the bags."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import json
from pathlib import Path

from histodetect.mil.figures import confusion_png, read_predictions, roc_png
from histodetect.runner import rule_context

with rule_context(snakemake):
    table = read_predictions(snakemake.input.predictions)
    classes = json.loads(Path(snakemake.input.metrics).read_text())["classes"]
    roc_png(table, classes, snakemake.output.roc)
    confusion_png(table, classes, snakemake.output.confusion)
