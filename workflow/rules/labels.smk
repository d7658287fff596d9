rule label_tiles:
    input:
        tiles="results/tiles/{slide}.parquet",
        summary="results/tiles/{slide}.json",
        sheet=SAMPLE_SHEET,
        annotations=ANNOTATIONS,
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
        mem_mb=2000,
    params:
        labels=config["labels"],
    script:
        "../scripts/label_tiles.py"
