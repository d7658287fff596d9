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
