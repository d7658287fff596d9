rule evaluate:
    input:
        boxes=test_outputs("results/boxes/{slide}.csv"),
        scores=test_outputs("results/scores/{slide}.parquet"),
        labels=test_outputs("results/labels/{slide}.parquet"),
        sheet=SAMPLE_SHEET,
        annotations=ANNOTATIONS,
    output:
        metrics="results/metrics/detection.json",
        per_slide=report(
            "results/metrics/per_slide.tsv",
            caption="../report/per_slide.rst",
            category="Metrics",
        ),
        table=report(
            "results/metrics/metrics.tsv", caption="../report/metrics.rst", category="Metrics"
        ),
        submission="results/metrics/submission.csv",
        froc=report("results/metrics/froc.png", caption="../report/froc.rst", category="Metrics"),
        roc=report("results/metrics/roc.png", caption="../report/roc.rst", category="Metrics"),
    params:
        evaluate=config["evaluate"],
    log:
        "logs/evaluate.log",
    conda:
        "../../envs/tiling.yaml"
    script:
        "../scripts/evaluate.py"
