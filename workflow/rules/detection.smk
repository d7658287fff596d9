rule infer_slide:
    input:
        tiles="results/tiles/{slide}.parquet",
        summary="results/tiles/{slide}.json",
        models=fold_models,
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
        annotations=ANNOTATIONS,
        slide_annotation=slide_annotation,
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
