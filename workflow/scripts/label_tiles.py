"""Snakemake script of rule label_tiles."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import json
from pathlib import Path

import pandas as pd

from histodetect.annotations.formats import ImportSettings
from histodetect.annotations.labels import LabelSettings, label_tiles
from histodetect.annotations.lesions import clip_to_slide, read_cohort_annotations
from histodetect.io import atomic_path
from histodetect.runner import log, rule_context

with rule_context(snakemake):
    slide = snakemake.wildcards.slide
    sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str)
    info = json.loads(Path(snakemake.input.summary).read_text())
    settings = ImportSettings(**snakemake.params.annotation_import)
    annotations = read_cohort_annotations(
        sheet,
        None,
        settings,
        slides=[slide],
        mpps={slide: info.get("mpp")},
        box_index=snakemake.input.boxes,
    )
    if "width" in info:  # a slide left out by tile_slide has no geometry (and no tiles)
        points = snakemake.params.labels["overlap"] == "point"
        annotations = clip_to_slide(
            annotations, info["width"], info["height"], centres=points,
            tolerance=settings.edge_tolerance,
        )  # fmt: skip
    tiles = pd.read_parquet(snakemake.input.tiles)
    labelled = label_tiles(tiles, annotations, LabelSettings(**snakemake.params.labels))
    log.info(
        "%s: %d annotations; %d tiles: %s",
        slide,
        len(annotations),
        len(labelled),
        labelled.label.value_counts().sort_index().to_dict(),
    )
    with atomic_path(snakemake.output[0]) as tmp:
        labelled.to_parquet(tmp, index=False)
