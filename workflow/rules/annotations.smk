include: "inputs/annotations.smk"


localrules:
    index_annotations,


# The DigiLut CSV, checked once and sorted by slide: each slide's job reads its own rows.
rule index_annotations:
    input:
        sheet=SAMPLE_SHEET,
        annotations=ANNOTATIONS,
    output:
        BOX_INDEX,
    log:
        "logs/index_annotations.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        annotation_import=SETTINGS.annotation_import,
    script:
        "../scripts/index_annotations.py"


rule label_tiles:
    input:
        tiles="results/tiles/{slide}.parquet",
        summary="results/tiles/{slide}.json",
        sheet=SAMPLE_SHEET,
        boxes=BOX_INDEX,
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
        annotation_import=SETTINGS.annotation_import,
    script:
        "../scripts/label_tiles.py"
