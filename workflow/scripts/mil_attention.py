"""Snakemake script of rule mil_attention: one slide's attention GeoJSON and overlay
(models that read tiles: the summary image's occlusion effect, the top-k model's tile scores);
survival and regression: the tiles' risk or value contributions too, and their overlay."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import torch

from histodetect.cohort.bags import read_bag_folds
from histodetect.mil.attention import (
    ContributionMap,
    label_text,
    slide_attention,
    slide_contributions,
    slide_thumbnail,
    write_attention,
)
from histodetect.mil.data import FeatureSource, bags_of
from histodetect.mil.models import load_mil_model
from histodetect.mil.summary_image import TileSource
from histodetect.mil.tile_models import tile_weights
from histodetect.runner import log, rule_context
from histodetect.slides.threads import use_rule_threads

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    use_rule_threads(snakemake)
    slide = snakemake.wildcards.slide
    folds = read_bag_folds(snakemake.input.folds)
    bag_id = folds.bag_id[folds.slide_id == slide].iloc[0]
    bag = bags_of(folds[folds.bag_id == bag_id])[0]
    source = FeatureSource(
        snakemake.params.feature_dir, {"encoder_id": snakemake.params.encoder_id}
    )
    paths = list(snakemake.input.models)
    tiles = TileSource(snakemake.params.tiles_dir, snakemake.params.scores_dir)
    weigh = tile_weights(paths, tiles)
    label = folds.label[folds.bag_id == bag_id].iloc[0] if bag.y >= 0 else "none"
    contribution = None
    if weigh is not None:
        log.info("%s: %s", slide, weigh[1])
        feats, attention, n = slide_attention(None, source, bag, slide, weights=weigh[0](bag, None))
    else:
        models = [load_mil_model(p)[:2] for p in paths]
        task = models[0][1]
        if task.classifies:
            feats, attention, n = slide_attention(models, source, bag, slide)
        else:
            feats, parts, n = slide_contributions(models, source, bag, slide)
            attention = parts.weights
            what = (
                f"risk contribution in bag {bag_id} (log risk {parts.output:+.2f}"
                if task.kind == "survival"
                else f"contribution to the value of bag {bag_id} (predicted {parts.output:.3g}, "
                f"training mean {parts.reference:.3g}"
            )
            said = label_text(label, task.kind, snakemake.params.time_unit)
            ctitle = f"{slide}: {what}, {said}, {bag.split}), {n} tiles"
            overlay = getattr(snakemake.output, "contribution", None)  # not in predict's rule
            contribution = ContributionMap(parts, task.kind, overlay, ctitle)
            log.info(
                "%s: the slide's tiles add %.4g of the bag's %.4g (from %.4g)",
                slide, parts.contributions.sum(), parts.output, parts.reference,
            )  # fmt: skip
    thumb, ds = slide_thumbnail(snakemake.params.slide, feats, snakemake.params.cell_px)
    title = f"{slide}: attention in bag {bag_id} (label {label}, {bag.split}), {n} tiles"
    write_attention(
        feats, attention, n, slide, snakemake.output.geojson, snakemake.output.png,
        thumb, ds, title, contribution,
    )  # fmt: skip
