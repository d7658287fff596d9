include: "inputs/slides.smk"


rule make_demo_cohort:
    output:
        samples="results/demo/samples.tsv",
        annotations="results/demo/annotations.csv",
        slides=expand("results/demo/slides/{slide}.tiff", slide=SLIDES),
    log:
        "logs/make_demo_cohort.log",
    benchmark:
        "benchmarks/make_demo_cohort.tsv"
    conda:
        "../../envs/tiling.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
    params:
        demo={k: v for k, v in config["demo"].items() if k != "enabled"},
    script:
        "../scripts/make_demo_cohort.py"


rule tile_slide:
    input:
        slide=slide_path,
    output:
        tiles="results/tiles/{slide}.parquet",
        summary="results/tiles/{slide}.json",
        qc=report(
            "results/qc/{slide}.png",
            caption="../report/tile_qc.rst",
            category="Tiling",
            subcategory="Tissue and tiles",
            labels={"slide": "{slide}"},
        ),
    log:
        "logs/tile_slide/{slide}.log",
    benchmark:
        "benchmarks/tile_slide/{slide}.tsv"
    conda:
        "../../envs/tiling.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
    params:
        path=slide_file,
        tiling=config["tiling"],
        mpp=slide_mpp_override,
        bad_slides=config["bad_slides"],
    script:
        "../scripts/tile_slide.py"


localrules:
    tiling_summary,


rule tiling_summary:
    input:
        expand("results/tiles/{slide}.json", slide=SLIDES),
    output:
        report(
            "results/qc/tiling_summary.tsv",
            caption="../report/tiling_summary.rst",
            category="Tiling",
        ),
    log:
        "logs/tiling_summary.log",
    conda:
        "../../envs/tiling.yaml"
    script:
        "../scripts/tiling_summary.py"
