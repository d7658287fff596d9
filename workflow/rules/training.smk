include: "inputs/training.smk"


rule train_fold:
    input:
        train="results/folds/fold_{fold}/train.parquet",
        val="results/folds/fold_{fold}/val.parquet",
        encoder=train_init_input,
        folds=hard_negative_input(rules.make_folds.output[0]),
        labels=hard_negative_input(
            expand("results/labels/{slide}.parquet", slide=SLIDES)
        ),
    output:
        model="results/models/fold_{fold}/model.pt",
        metrics="results/models/fold_{fold}/training_metrics.json",
        predictions="results/models/fold_{fold}/val_predictions.parquet",
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
        train=SETTINGS.train.options,
        fold=lambda wc: int(wc.fold),
        mlflow_uri=config["mlflow"]["uri"],
        experiment=config["mlflow"]["experiment"],
        tb_dir=lambda wc: f"results/tensorboard/fold_{wc.fold}",
        tiling=SETTINGS.train.tiling,
        hard_negative_rounds=SETTINGS.train.hard_negative_rounds,
    script:
        "../scripts/train_fold.py"


localrules:
    calibrate_fold,
    oof_threshold,
    fold_summary,


# Each fold model calibrated on its own validation rows (train.calibration), before the
# ensemble pools or carries thresholds; every consumer reads calibration.json beside model.pt.
rule calibrate_fold:
    input:
        predictions="results/models/fold_{fold}/val_predictions.parquet",
        model="results/models/fold_{fold}/model.pt",
    output:
        calibration="results/models/fold_{fold}/calibration.json",
    log:
        "logs/calibrate_fold/fold_{fold}.log",
    conda:
        "../../envs/torch.yaml"
    params:
        method=config["train"]["calibration"],
    script:
        "../scripts/calibrate_fold.py"


# The ensemble's decision rule, on calibrated probabilities, (binary threshold or multi-class priors) with the best balanced
# accuracy on the folds' validation rows, each scored by the model that did not train on it;
# each fold's metrics.json: its training metrics plus those at this decision.
rule oof_threshold:
    input:
        predictions=expand(
            "results/models/fold_{fold}/val_predictions.parquet", fold=FOLDS
        ),
        models=fold_models(),
        metrics=expand("results/models/fold_{fold}/training_metrics.json", fold=FOLDS),
        calibrations=fold_calibrations,
    output:
        threshold="results/models/threshold.json",
        metrics=expand("results/models/fold_{fold}/metrics.json", fold=FOLDS),
    log:
        "logs/oof_threshold.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/oof_threshold.py"


rule fold_summary:
    input:
        metrics=expand("results/models/fold_{fold}/metrics.json", fold=FOLDS),
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
