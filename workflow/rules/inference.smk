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
