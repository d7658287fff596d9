"""Snakemake script of rule oof_threshold."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.runner import log, rule_context
from histodetect.training.thresholds import write_threshold

with rule_context(snakemake):
    record = write_threshold(
        snakemake.input.predictions,
        snakemake.input.models,
        snakemake.output.threshold,
        list(zip(snakemake.input.metrics, snakemake.output.metrics, strict=True)),
        calibrated=True,  # each fold's rows through its calibration.json (rule calibrate_fold)
    )
    log.info("out of fold, %d rows: %s", record["n_rows"], record["decision"])
