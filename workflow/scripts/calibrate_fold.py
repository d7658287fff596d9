"""Snakemake script of rule calibrate_fold."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.runner import log, rule_context
from histodetect.training.calibration import write_calibration

with rule_context(snakemake):
    calibration = write_calibration(
        snakemake.input.predictions,
        snakemake.input.model,
        snakemake.params.method,
        snakemake.output.calibration,
    )
    log.info("fold %s: %s %s", snakemake.wildcards.fold, calibration.method, calibration.fit)
