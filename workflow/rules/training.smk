rule train_fold:
    input:
        train="results/folds/fold_{fold}/train.parquet",
        val="results/folds/fold_{fold}/val.parquet",
    output:
        model="results/models/fold_{fold}/model.pt",
        metrics="results/models/fold_{fold}/metrics.json",
    log:
        "logs/train_fold/fold_{fold}.log",
    benchmark:
        "benchmarks/train_fold/fold_{fold}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=240,
    params:
        train={**config["train"], "seed": config["seed"]},
        fold=lambda wc: int(wc.fold),
        mlflow_uri=config["mlflow"]["uri"],
        experiment=config["mlflow"]["experiment"],
        tb_dir=lambda wc: f"results/tensorboard/fold_{wc.fold}",
        tiling=model_tiling(),
    script:
        "../scripts/train_fold.py"


localrules:
    fold_summary,


rule fold_summary:
    input:
        expand("results/models/fold_{fold}/metrics.json", fold=FOLDS),
    output:
        report(
            "results/models/summary.tsv",
            caption="../report/fold_summary.rst",
            category="Training",
        ),
    log:
        "logs/fold_summary.log",
    conda:
        "../../envs/tiling.yaml"
    script:
        "../scripts/fold_summary.py"
