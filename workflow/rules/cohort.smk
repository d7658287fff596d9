include: "inputs/cohort.smk"


localrules:
    split_patients,
    make_folds,


checkpoint split_patients:
    input:
        sheet=SAMPLE_SHEET,
        tiling="results/qc/tiling_summary.tsv",
        annotations=ANNOTATIONS,
        slide_annotations=all_slide_annotations,
    output:
        split="results/splits/split.tsv",
    log:
        "logs/split_patients.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        split=config["split"],
        annotation_import=SETTINGS.annotation_import,
        seed=config["seed"],
    script:
        "../scripts/split_patients.py"


rule make_folds:
    input:
        split=rules.split_patients.output.split,
        annotations=ANNOTATIONS,
        slide_annotations=all_slide_annotations,
    output:
        "results/splits/folds.tsv",
    log:
        "logs/make_folds.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        folds=config["folds"],
        annotation_import=SETTINGS.annotation_import,
        seed=config["seed"],
    script:
        "../scripts/make_folds.py"


rule undersample:
    input:
        folds=rules.make_folds.output[0],
        labels=expand("results/labels/{slide}.parquet", slide=SLIDES),
    output:
        train="results/folds/fold_{fold}/train.parquet",
        val="results/folds/fold_{fold}/val.parquet",
    log:
        "logs/undersample/fold_{fold}.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        fold=lambda wc: int(wc.fold),
        sampling=config["sampling"],
        seed=config["seed"],
    script:
        "../scripts/undersample.py"


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
