# Points mode (labels.overlap: point): object centres (e.g. mitoses) from the heatmaps, the
# point step tuned out of fold, the point metric and counts as pathologists count them.
# Target: points (part of all in points mode).
POINT_TARGETS = [
    "results/metrics/points.json",
    "results/tuning/points.json",
    "results/points/counts.tsv",
]


# Points (object centres, e.g. mitoses): every out-of-fold heatmap's scored local maxima.
rule oof_points:
    input:
        heatmap="results/oof/heatmaps/{slide}.npz",
    output:
        points="results/oof/points/{slide}.csv",
        geojson="results/oof/points/{slide}.geojson",
    log:
        "logs/oof_points/{slide}.log",
    benchmark:
        "benchmarks/oof_points/{slide}.tsv"
    conda:
        "../../envs/tiling.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
    params:
        points=config["points"],
    script:
        "../scripts/points_from_heatmap.py"


# Points of test slides: the fold ensemble's heatmap at the setting tuned out of fold.
rule slide_points:
    input:
        heatmap="results/heatmaps/{slide}.npz",
        summary="results/tiles/{slide}.json",
        tuned="results/tuning/points.json",
    output:
        points="results/points/{slide}.csv",
        geojson="results/points/{slide}.geojson",
        counts="results/points/counts/{slide}.tsv",
    log:
        "logs/slide_points/{slide}.log",
    benchmark:
        "benchmarks/slide_points/{slide}.tsv"
    conda:
        "../../envs/tiling.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
    params:
        points=config["points"],
    script:
        "../scripts/slide_points.py"


localrules:
    point_counts,


# Per slide: points, points per mm2 of tissue, the hotspot (points.hotspot_mm2).
rule point_counts:
    input:
        counts=over_slides("results/points/counts/{slide}.tsv", test_slides),
    output:
        table=report(
            "results/points/counts.tsv",
            caption="../report/point_counts.rst",
            category="Metrics",
        ),
    log:
        "logs/point_counts.log",
    conda:
        "../../envs/tiling.yaml"
    script:
        "../scripts/point_counts.py"


localrules:
    evaluate_points,
    tune_points,


# The point step (method, distance, threshold) tuned on the training fields' OOF heatmaps.
rule tune_points:
    input:
        heatmaps=over_slides("results/oof/heatmaps/{slide}.npz", train_slides),
        summaries=over_slides("results/tiles/{slide}.json", train_slides),
        split=rules.split_patients.output.split,
        sheet=SAMPLE_SHEET,
        slide_annotations=all_slide_annotations,
    output:
        settings="results/tuning/points.json",
        search=report(
            "results/tuning/points_search.tsv",
            caption="../report/point_tuning.rst",
            category="Metrics",
        ),
    log:
        "logs/tune_points.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        points=config["points"],
        labels=config["labels"],
        annotation_import=SETTINGS.annotation_import,
    script:
        "../scripts/tune_points.py"


# The point metric out of fold: each fold's slides at the threshold best on the other folds;
# the test slides' points at the tuned setting; count errors of both.
rule evaluate_points:
    input:
        points=over_slides("results/oof/points/{slide}.csv", train_slides),
        summaries=over_slides("results/tiles/{slide}.json", train_slides),
        test_points=over_slides("results/points/{slide}.csv", test_slides),
        test_summaries=over_slides("results/tiles/{slide}.json", test_slides),
        tuned="results/tuning/points.json",
        folds=rules.make_folds.output[0],
        sheet=SAMPLE_SHEET,
        slide_annotations=all_slide_annotations,
    output:
        metrics="results/metrics/points.json",
        per_image="results/metrics/points_per_image.tsv",
    log:
        "logs/evaluate_points.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        points=config["points"],
        labels=config["labels"],
        annotation_import=SETTINGS.annotation_import,
        seed=config["seed"],
    script:
        "../scripts/evaluate_points.py"


# Points mode (labels.overlap: point): tuned points, counts and the point metric.
rule points:
    input:
        POINT_TARGETS,
