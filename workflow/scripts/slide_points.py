"""Snakemake script of rules slide_points and predict_points: tuned points, their counts."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.points.detect import tuned_point_settings, write_slide_points
from histodetect.runner import log, rule_context

with rule_context(snakemake):
    settings = tuned_point_settings(snakemake.params.points, snakemake.input.tuned)
    points, row = write_slide_points(
        snakemake.input.heatmap,
        snakemake.input.summary,
        settings,
        out_csv=snakemake.output.points,
        out_geojson=snakemake.output.geojson,
        out_counts=snakemake.output.counts,
    )
    log.info(
        "%s: %d points (%s, >= %g, from %s); hotspot %d in %.2f mm2 (%s)",
        snakemake.wildcards.slide, len(points), settings["method"], settings["min_score"],
        snakemake.input.heatmap, row["hotspot_count"], row["hotspot_mm2"], row["hotspot_kind"],
    )  # fmt: skip
