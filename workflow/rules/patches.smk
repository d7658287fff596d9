# Patch mode: with patches.labels set, a labels.csv (path,label,group_id) replaces the slides.
# Its groups are split into folds here, giving the same per-fold tables as make_folds and
# undersample; train_fold and fold_summary then run unchanged. Target: rule train_patches.


if PATCH_LABELS:

    ruleorder: patch_folds > undersample

    rule patch_folds:
        input:
            PATCH_LABELS,
        output:
            folds="results/patches/folds.tsv",
            train=expand("results/folds/fold_{fold}/train.parquet", fold=FOLDS),
            val=expand("results/folds/fold_{fold}/val.parquet", fold=FOLDS),
        log:
            "logs/patch_folds.log",
        conda:
            "../../envs/tiling.yaml"
        params:
            patches=config["patches"],
            seed=config["seed"],
        script:
            "../scripts/patch_folds.py"

    rule train_patches:
        input:
            "results/models/summary.tsv",
