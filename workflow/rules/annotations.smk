rule label_tiles:
    input:
        tiles="results/tiles/{slide}.parquet",
        summary="results/tiles/{slide}.json",
        sheet=SAMPLE_SHEET,
        annotations=ANNOTATIONS,
        slide_annotation=slide_annotation,
    output:
        "results/labels/{slide}.parquet",
    log:
        "logs/label_tiles/{slide}.log",
    benchmark:
        "benchmarks/label_tiles/{slide}.tsv"
    conda:
        "../../envs/tiling.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
    params:
        labels=config["labels"],
        annotation_import=config.get("annotation_import", {}),
    script:
        "../scripts/label_tiles.py"
