"""Snakemake script of rules infer_slide, infer_oof and predict_infer_slide."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import json
from pathlib import Path

import pandas as pd
import torch

from histodetect.columns import class_prob_column
from histodetect.detection.inference import (
    check_tiling,
    heatmap_from_tiles,
    out_of_fold_model,
    predict_tile_classes,
)
from histodetect.io import atomic_path
from histodetect.runner import log, rule_context
from histodetect.slides.threads import use_rule_threads
from histodetect.training.calibration import read_calibration
from histodetect.training.thresholds import Decision

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    use_rule_threads(snakemake)
    slide = snakemake.wildcards.slide
    models = [Path(p) for p in snakemake.input.models]
    if getattr(snakemake.params, "check_tiling", None):
        check_tiling(models, snakemake.params.check_tiling)
    if getattr(snakemake.input, "folds", None):  # out of fold: the one model blind to this patient
        folds = pd.read_csv(snakemake.input.folds, sep="\t", dtype=str)
        models = [out_of_fold_model(models, folds, slide, snakemake.input.folds)]
        log.info("slide %s: out-of-fold model %s", slide, models[0])
    info = json.loads(Path(snakemake.input.summary).read_text())
    tiles = pd.read_parquet(snakemake.input.tiles).assign(path=info["path"])
    calibrations = [read_calibration(m) for m in models]  # beside each model; refused if absent
    log.info("calibrations: %s", ", ".join(c.method for c in calibrations))
    probs, by_class = predict_tile_classes(
        tiles, models, calibrations=calibrations, **snakemake.params.infer
    )
    heatmap = heatmap_from_tiles(
        tiles,
        probs,
        slide_id=slide,
        mpp=info["mpp"],
        level=info["level"],
        slide_width=info["width"],
        slide_height=info["height"],
    )
    heatmap.save(snakemake.output.heatmap)
    with atomic_path(snakemake.output.scores) as tmp:
        table = tiles.drop(columns="path").assign(prob=probs)
        table = table.assign(**{class_prob_column(c): p for c, p in by_class.items()})
        if threshold := getattr(snakemake.input, "threshold", None):  # not out of fold
            table = Decision.read(threshold).call_tiles(table)
        table.to_parquet(tmp, index=False)
