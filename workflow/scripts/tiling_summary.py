"""Snakemake script of rule tiling_summary."""

import json
import logging
from pathlib import Path

from histodetect.io import atomic_path
from histodetect.runner import rule_context
from histodetect.tiling import summarise

with rule_context(snakemake):
    table = summarise([json.loads(Path(p).read_text()) for p in snakemake.input])
    for row in table[table.status != "ok"].itertuples():
        logging.warning("slide %s (%s): no tissue tiles", row.slide_id, row.path)
    with atomic_path(snakemake.output[0]) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
