"""Snakemake script of rule patch_folds."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.cohort.patches import write_patch_folds
from histodetect.runner import log, rule_context

with rule_context(snakemake):
    patches = snakemake.params.patches
    folded = write_patch_folds(
        snakemake.input[0],
        snakemake.output.folds,
        list(zip(snakemake.output.train, snakemake.output.val, strict=True)),
        tile_px=patches["tile_px"],
        seed=snakemake.params.seed,
        classes=patches.get("classes"),
        per_group=patches.get("max_per_group"),
    )
    log.info(
        "%d patches of %d groups in %d folds",
        len(folded), folded.group_id.nunique(), len(snakemake.output.train),
    )  # fmt: skip
