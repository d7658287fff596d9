# Input functions and values of the features rules (workflow/rules/features.smk), kept apart
# from the rules as snakemake --lint asks; included by that file.
ENCODER_ID = SETTINGS.features.encoder_id  # histodetect.features.settings.encoder_id
FEATURE_DIR = f"results/features/{ENCODER_ID}"


def ssl_train_slides():
    """Slides the cohort's own encoder trains on: the training slides of every split it may
    see (SETTINGS.ssl.splits; known once those checkpoints have run)."""
    chosen = None
    if "box" in SETTINGS.ssl.splits:
        chosen = set(train_slides())
    if "mil" in SETTINGS.ssl.splits:
        folds = table_of(checkpoints.mil_folds.get().output[0])
        mil = set(folds.slide_id[folds.split == "train"])
        chosen = mil if chosen is None else chosen & mil
    return sorted(chosen or [])


def feature_encoder_input(wildcards=None):
    """The cohort's own encoder file, when the features start from it."""
    return SSL_ENCODER if SETTINGS.features.source == "ssl" else []
