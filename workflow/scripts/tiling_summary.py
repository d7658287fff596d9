"""Snakemake script of rule tiling_summary."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import json
import logging
from pathlib import Path

from histodetect.io import atomic_path
from histodetect.runner import rule_context
from histodetect.slides.tiling import excluded_report, summarise

with rule_context(snakemake):
    table = summarise([json.loads(Path(p).read_text()) for p in snakemake.input])
    with atomic_path(snakemake.output[0]) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    report = excluded_report(table)
    if report:
        logging.warning("%s (see %s)", report, snakemake.output[0])
    logging.info("%d slides, %d tiles", len(table), int(table.tiles.sum()))
