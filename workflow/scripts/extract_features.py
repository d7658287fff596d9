"""Snakemake script of rule extract_features."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import json
from pathlib import Path

import pandas as pd
import torch

from histodetect.features.encoder import build_encoder
from histodetect.features.extract import extract_slide
from histodetect.features.settings import spec_from_config
from histodetect.runner import rule_context
from histodetect.slides.threads import use_rule_threads

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    use_rule_threads(snakemake)
    features = {**snakemake.params.features, "model": snakemake.params.model}
    spec = spec_from_config(features, snakemake.params.seed, snakemake.params.ssl_encoder)
    tiles = pd.read_parquet(snakemake.input.tiles)
    summary = json.loads(Path(snakemake.input.summary).read_text())
    tile_px = int(tiles["tile_px"].iloc[0]) if len(tiles) else 0
    extract_slide(
        tiles,
        summary,
        build_encoder(spec, tile_px, snakemake.params.weights_sha256),
        snakemake.output[0],
        encoder_id=snakemake.params.encoder_id,
        tiling=snakemake.params.tiling,
        bad_slides=snakemake.params.bad_slides,
        batch_size=features["batch_size"],
        num_workers=features["num_workers"],
        device=features["device"],
    )
