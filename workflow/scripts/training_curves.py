"""Snakemake script of rule training_curves."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.evaluation.cohort import read_training_curves
from histodetect.evaluation.plots import training_curves_png
from histodetect.runner import rule_context

with rule_context(snakemake):
    curves = read_training_curves(snakemake.params.tb_dirs)
    training_curves_png(curves, snakemake.output[0])
