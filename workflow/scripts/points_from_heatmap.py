"""Snakemake script of rule oof_points: scored centres of a heatmap, as CSV and GeoJSON."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.points.detect import write_points
from histodetect.runner import log, rule_context

with rule_context(snakemake):
    points = write_points(
        snakemake.input.heatmap,
        snakemake.params.points,
        out_csv=snakemake.output.points,
        out_geojson=snakemake.output.geojson,
    )
    log.info(
        "%s: %d points scoring >= %g",
        snakemake.wildcards.slide,
        len(points),
        snakemake.params.points["min_score"],
    )
