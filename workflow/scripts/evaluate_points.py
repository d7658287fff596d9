"""Snakemake script of rule evaluate_points: the point metric out of fold, per fold and pooled."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.points.metrics import evaluate_point_files
from histodetect.runner import log, rule_context

with rule_context(snakemake):
    record = evaluate_point_files(
        snakemake.input.points,
        snakemake.input.folds,
        snakemake.input.sheet,
        [*snakemake.input.summaries, *snakemake.input.test_summaries],
        points_cfg=snakemake.params.points,
        annotation_import=snakemake.params.annotation_import,
        negative_classes=snakemake.params.labels["negative_classes"],
        seed=snakemake.params.seed,
        out_metrics=snakemake.output.metrics,
        out_per_image=snakemake.output.per_image,
        test_paths=snakemake.input.test_points,
        tuned_path=snakemake.input.tuned,
    )
    log.info(
        "points out of fold over %d images: F1 %.3f (%.3f-%.3f), precision %.3f, recall %.3f",
        record["n_images"], record["f1"], *record["f1_interval"], record["precision"], record["recall"],
    )  # fmt: skip
    if record["test"] is not None:
        test = record["test"]
        log.info(
            "points on %d test slides at the tuned setting: F1 %.3f; count MAE %.2f",
            test["n_images"], test["f1"], test["count_mae"],
        )  # fmt: skip
