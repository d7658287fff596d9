# Input functions and values of the cohort rules (workflow/rules/cohort.smk), kept apart
# from the rules as snakemake --lint asks; included by that file.
def split_slides(split):
    """Slides of the training or the held-out patients (known once split_patients has run)."""
    table = table_of(checkpoints.split_patients.get().output.split)
    return list(table.slide_id[table.split == split])


def train_slides():
    return split_slides("train")


def test_slides():
    return split_slides("test")
