"""Snakemake script of rule tile_slide."""

import json

from histodetect.io import atomic_path
from histodetect.plotting import overlay_png
from histodetect.runner import rule_context
from histodetect.tiling import settings_from_config, tile_slide

with rule_context(snakemake):
    out = tile_slide(
        snakemake.input.slide,
        snakemake.wildcards.slide,
        settings_from_config(snakemake.params.tiling),
        snakemake.params.mpp,
    )
    overlay_png(
        out.thumbnail,
        out.thumb_downsample,
        snakemake.output.qc,
        tiles=out.tiles,
        tissue_mask=out.mask,
        title=f"{snakemake.wildcards.slide}: {len(out.tiles)} tiles",
    )
    with atomic_path(snakemake.output.summary) as tmp:
        tmp.write_text(json.dumps(out.summary, indent=2))
    with atomic_path(snakemake.output.tiles) as tmp:
        out.tiles.to_parquet(tmp, index=False)
