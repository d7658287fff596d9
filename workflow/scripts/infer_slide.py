"""Snakemake script of rule infer_slide."""

import json
from pathlib import Path

import pandas as pd
import torch

from histodetect.detection.inference import heatmap_from_tiles, predict_tiles
from histodetect.io import atomic_path
from histodetect.runner import rule_context

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    info = json.loads(Path(snakemake.input.summary).read_text())
    tiles = pd.read_parquet(snakemake.input.tiles).assign(path=info["path"])
    probs = predict_tiles(
        tiles, [Path(p) for p in snakemake.input.models], **snakemake.params.infer
    )
    heatmap = heatmap_from_tiles(
        tiles,
        probs,
        slide_id=snakemake.wildcards.slide,
        mpp=info["mpp"],
        level=info["level"],
        slide_width=info["width"],
        slide_height=info["height"],
    )
    heatmap.save(snakemake.output.heatmap)
    with atomic_path(snakemake.output.scores) as tmp:
        tiles.drop(columns="path").assign(prob=probs).to_parquet(tmp, index=False)
