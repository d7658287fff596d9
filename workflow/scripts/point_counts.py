"""Snakemake script of rules point_counts and predict_point_counts: one table of counts."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.points.detect import write_count_table
from histodetect.runner import log, rule_context

with rule_context(snakemake):
    table = write_count_table(snakemake.input.counts, snakemake.output.table)
    log.info("counts of %d slides: %d points", len(table), int(table.n_points.sum()))
