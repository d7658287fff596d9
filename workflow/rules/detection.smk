# The fold ensemble over each test slide into a heatmap (infer_slide), out of fold over the
# training slides (infer_oof, for tuning), and boxes from the heatmaps (boxes_from_heatmap).
include: "inputs/detection.smk"


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
        annotation_import=SETTINGS.annotation_import,
    script:
        "../scripts/boxes_from_heatmap.py"


# Out of fold: each training slide scored by the one fold model that did not train on its
# patient (checked against the model's own record), for tuning the box step.
use rule infer_slide as infer_oof with:
    input:
        tiles="results/tiles/{slide}.parquet",
        summary="results/tiles/{slide}.json",
        folds=rules.make_folds.output[0],
        models=fold_models,
        calibrations=fold_calibrations,
    output:
        heatmap="results/oof/heatmaps/{slide}.npz",
        scores="results/oof/scores/{slide}.parquet",
    log:
        "logs/infer_oof/{slide}.log",
    benchmark:
        "benchmarks/infer_oof/{slide}.tsv"
