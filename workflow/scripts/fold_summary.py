"""Snakemake script of rule fold_summary."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.evaluation.cohort import summarise_folds
from histodetect.io import atomic_path
from histodetect.runner import rule_context

with rule_context(snakemake):
    table = summarise_folds(snakemake.input.metrics)
    with atomic_path(snakemake.output[0]) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
