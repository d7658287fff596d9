rule infer_slide:
    input:
        tiles="results/tiles/{slide}.parquet",
        summary="results/tiles/{slide}.json",
        models=fold_models,
        calibrations=fold_calibrations,
        threshold="results/models/threshold.json",
    output:
        heatmap="results/heatmaps/{slide}.npz",
        scores="results/scores/{slide}.parquet",
    log:
        "logs/infer_slide/{slide}.log",
    benchmark:
        "benchmarks/infer_slide/{slide}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 4
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=60,
    params:
        infer=config["infer"],
    script:
        "../scripts/infer_slide.py"


rule boxes_from_heatmap:
    input:
        heatmap="results/heatmaps/{slide}.npz",
        summary="results/tiles/{slide}.json",
        sheet=SAMPLE_SHEET,
        boxes=BOX_INDEX,
        slide_annotation=slide_annotation,
        tuned=tuned_boxes,
    output:
        boxes="results/boxes/{slide}.csv",
        geojson="results/boxes/{slide}.geojson",
        overlay=report(
            "results/overlays/{slide}.png",
            caption="../report/overlay.rst",
            category="Detection",
            subcategory="Slides",
            labels={"slide": "{slide}"},
        ),
    log:
        "logs/boxes_from_heatmap/{slide}.log",
    benchmark:
        "benchmarks/boxes_from_heatmap/{slide}.tsv"
    conda:
        "../../envs/tiling.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
    params:
        path=slide_file,
        boxes=config["boxes"],
        annotation_import=config.get("annotation_import", {}),
    script:
        "../scripts/boxes_from_heatmap.py"


# Out of fold: each training slide scored by the one fold model that did not train on its
# patient (checked against the model's own record), for tuning the box step.
use rule infer_slide as infer_oof with:
    input:
        tiles="results/tiles/{slide}.parquet",
        summary="results/tiles/{slide}.json",
        folds="results/splits/folds.tsv",
        models=fold_models,
        calibrations=fold_calibrations,
    output:
        heatmap="results/oof/heatmaps/{slide}.npz",
        scores="results/oof/scores/{slide}.parquet",
    log:
        "logs/infer_oof/{slide}.log",
    benchmark:
        "benchmarks/infer_oof/{slide}.tsv"


# New slides: the ensemble (this run's or predict.models), checked against the tiling.
use rule infer_slide as predict_infer_slide with:
    input:
        tiles="results/predict/tiles/{slide}.parquet",
        summary="results/predict/tiles/{slide}.json",
        models=predict_models,
        calibrations=predict_calibrations,
        threshold=predict_threshold,
    output:
        heatmap="results/predict/heatmaps/{slide}.npz",
        scores="results/predict/scores/{slide}.parquet",
    log:
        "logs/predict/infer_slide/{slide}.log",
    benchmark:
        "benchmarks/predict/infer_slide/{slide}.tsv"
    params:
        infer=config["infer"],
        check_tiling=config["tiling"],


use rule boxes_from_heatmap as predict_boxes with:
    input:
        heatmap="results/predict/heatmaps/{slide}.npz",
        summary="results/predict/tiles/{slide}.json",
        sheet=PREDICT_SHEET or [],
        tuned=predict_tuning,
    output:
        boxes="results/predict/boxes/{slide}.csv",
        geojson="results/predict/boxes/{slide}.geojson",
        overlay="results/predict/overlays/{slide}.png",
    log:
        "logs/predict/boxes/{slide}.log",
    benchmark:
        "benchmarks/predict/boxes/{slide}.tsv"
    params:
        path=predict_slide_file,
        boxes=config["boxes"],
        annotation_import=config.get("annotation_import", {}),


rule predict_summary:
    input:
        sheet=PREDICT_SHEET or [],
        summaries=expand("results/predict/tiles/{slide}.json", slide=PREDICT_SLIDES),
        boxes=predict_outputs("results/predict/boxes/{slide}.csv"),
        scores=predict_outputs("results/predict/scores/{slide}.parquet"),
        tuned=predict_tuning,
    output:
        slides="results/predict/slides.tsv",
        submission="results/predict/submission.csv",
    log:
        "logs/predict/predict_summary.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        slide_score=config["slide_score"],
        submission=config["predict"]["submission"],
    script:
        "../scripts/predict_summary.py"


# Target predict: the box models' outputs, or with mil.enabled the slide-label models' ones;
# in points mode also the new slides' points and counts.
rule predict:
    input:
        predict_sheet_given,
        predict_targets,
        predict_point_outputs,


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


use rule slide_points as predict_points with:
    input:
        heatmap="results/predict/heatmaps/{slide}.npz",
        summary="results/predict/tiles/{slide}.json",
        tuned=predict_point_tuning,
    output:
        points="results/predict/points/{slide}.csv",
        geojson="results/predict/points/{slide}.geojson",
        counts="results/predict/points/counts/{slide}.tsv",
    log:
        "logs/predict/points/{slide}.log",
    benchmark:
        "benchmarks/predict/points/{slide}.tsv"


localrules:
    point_counts,
    predict_point_counts,


# Per slide: points, points per mm2 of tissue, the hotspot (points.hotspot_mm2).
rule point_counts:
    input:
        counts=test_outputs("results/points/counts/{slide}.tsv"),
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


use rule point_counts as predict_point_counts with:
    input:
        counts=predict_outputs("results/predict/points/counts/{slide}.tsv"),
    output:
        table="results/predict/points/counts.tsv",
    log:
        "logs/predict/point_counts.log",
