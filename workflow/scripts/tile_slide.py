"""Snakemake script of rule tile_slide."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import json

from histodetect.errors import SlideError
from histodetect.io import atomic_path
from histodetect.runner import log, rule_context
from histodetect.slides.qc import tiling_qc_png
from histodetect.slides.tiling import failed_tiling, qc_view, settings_from_config, tile_slide

with rule_context(snakemake):
    slide = snakemake.wildcards.slide
    try:
        out = tile_slide(
            snakemake.params.path,
            slide,
            settings_from_config(snakemake.params.tiling),
            snakemake.params.mpp,
        )
        title = f"{slide}: {len(out.tiles)} tiles"
    except SlideError as err:
        if snakemake.params.bad_slides == "fail":
            raise
        log.error("tile_slide: %s (slide %s left out of the cohort)", err, slide)
        out = failed_tiling(slide, snakemake.params.path, err)
        title = f"{slide}: FAILED: {err.cause}"
    thumb, thumb_downsample, mask = qc_view(out)
    tiling_qc_png(thumb, thumb_downsample, mask, out.tiles, snakemake.output.qc, title)
    with atomic_path(snakemake.output.tiles) as tmp:
        out.tiles.to_parquet(tmp, index=False)
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(out.summary, indent=2))
