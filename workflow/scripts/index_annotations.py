"""Snakemake script of rule index_annotations."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import pandas as pd

from histodetect.annotations.formats import ImportSettings
from histodetect.annotations.lesions import write_box_index
from histodetect.io import atomic_path
from histodetect.runner import log, rule_context

with rule_context(snakemake):
    sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str)
    with atomic_path(snakemake.output[0]) as tmp:
        tolerance = ImportSettings(**snakemake.params.annotation_import).edge_tolerance
        n = write_box_index(sheet, snakemake.input.annotations, tmp, tolerance)
    log.info("%d boxes of %s indexed by slide", n, snakemake.input.annotations)
