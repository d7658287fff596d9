rule infer_slide:
    input:
        tiles="results/tiles/{slide}.parquet",
        models=fold_models,
    output:
        heatmap="results/heatmaps/{slide}.npz",
        scores="results/scores/{slide}.parquet",
    params:
        path=slide_path,
        mpp=slide_mpp_override,
        infer=config["infer"],
    log:
        "logs/infer_slide/{slide}.log",
    benchmark:
        "benchmarks/infer_slide/{slide}.tsv"
    threads: max(1, workflow.cores)
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/infer_slide.py"
