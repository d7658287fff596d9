"""Snakemake script of rule label_tiles."""

import json
from pathlib import Path

import pandas as pd

from histodetect.annotations import check_boxes_inside, read_digilut_csv, slide_name_map
from histodetect.io import atomic_path
from histodetect.labels import LabelSettings, label_tiles
from histodetect.runner import rule_context

with rule_context(snakemake):
    sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype=str)
    boxes = read_digilut_csv(snakemake.input.annotations, slide_name_map(sheet))
    boxes = boxes[boxes.slide_id == snakemake.wildcards.slide]
    info = json.loads(Path(snakemake.input.summary).read_text())
    check_boxes_inside(boxes, info["width"], info["height"], snakemake.input.annotations)
    tiles = pd.read_parquet(snakemake.input.tiles)
    labelled = label_tiles(tiles, boxes, LabelSettings(**snakemake.params.labels))
    with atomic_path(snakemake.output[0]) as tmp:
        labelled.to_parquet(tmp, index=False)
