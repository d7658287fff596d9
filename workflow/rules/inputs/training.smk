# Input functions and values of the training rules (workflow/rules/training.smk), kept apart
# from the rules as snakemake --lint asks; included by that file.
def fold_models(wildcards=None):
    return expand("results/models/fold_{fold}/model.pt", fold=FOLDS)


def fold_calibrations(wildcards=None):
    return expand("results/models/fold_{fold}/calibration.json", fold=FOLDS)


def hard_negative_input(paths):
    """paths when train_fold runs a hard-negative round (slide mode), else none."""
    return paths if SETTINGS.train.hard_negative_rounds else []


def train_init_input(wildcards=None):
    """The cohort's own encoder, when the fold models start from it (train.init)."""
    return SSL_ENCODER if SETTINGS.train.init == "ssl" else []
