"""Outlines drawn over the slide's edge label tiles through the workflow, clipped and counted;
an outline that cannot be on the slide (a wrong scale) stops the slide in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from _workflow import snakemake, write_config

from histodetect.annotations.formats import ImportSettings, read_annotation_file
from histodetect.slides.synthetic import make_cohort

SIDE = 2048  # level-0 px of the slide, 0.5 um/px


def square(x1: float, y1: float, x2: float, y2: float) -> list[list[list[float]]]:
    return [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]


def geojson(path: Path, rings: list[list[list[list[float]]]]) -> Path:
    """A QuPath-style FeatureCollection of classified polygons."""
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": ring},
            "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
        }
        for i, ring in enumerate(rings)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_outlines_over_every_edge_are_clipped_and_label_tiles(tmp_path: Path) -> None:
    samples, _ = make_cohort(
        tmp_path / "cohort", n_slides=1, n_patients=1, width=SIDE, height=SIDE, mpp=0.5,
        lesions_per_slide=(1, 1), lesion_size_um=(200, 200), negative_slides=0, seed=1,
    )  # fmt: skip
    slide = str(samples.slide_id.iloc[0])
    over = 20  # px past the edge, as annotators draw (1% of the side)
    # each crosses one edge (the last a corner) and reaches into the tissue (256-1536 px)
    outlines = [
        (-over, 512, 768, 768),
        (1280, 768, SIDE + over, 1024),
        (768, -over, 1024, 512),
        (512, 1280, 768, SIDE + over),
        (-over, -over, 512, 512),
    ]
    edges = geojson(tmp_path / "edges.geojson", [square(*o) for o in outlines])
    sheet = samples.assign(annotation=str(edges))
    sheet.to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    (tmp_path / "boxes.csv").write_text("filename,x1,x2,y1,y2\n")  # no DigiLut boxes
    write_config(
        tmp_path,
        {"demo": {"enabled": False}, "samples": "samples.tsv", "annotations": "boxes.csv",
         "tiling": {"tile_um": 128.0, "target_mpp": 1.0}},
    )  # fmt: skip
    proc = snakemake(tmp_path, f"results/labels/{slide}.parquet")
    said = proc.stdout + proc.stderr
    assert (
        f"{edges}: 5 outlines crossed the slide edge ({SIDE} x {SIDE} px) and were clipped: "
        "feature 1, feature 2, feature 3, feature 4, feature 5"
    ) in said.replace("\n", " ")
    labels = pd.read_parquet(tmp_path / "results" / "labels" / f"{slide}.parquet")
    within = [  # tiles wholly inside an outline's part on the slide
        (labels.x >= max(x1, 0)) & (labels.y >= max(y1, 0))
        & (labels.x + labels["size"] <= min(x2, SIDE)) & (labels.y + labels["size"] <= min(y2, SIDE))
        for x1, y1, x2, y2 in outlines
    ]  # fmt: skip
    covered = np.any(within, axis=0)
    assert covered.sum() >= 3 and (labels.label[covered] == 1).all()
    assert (labels.label[labels.coverage == 0] == 0).all()

    # a file at the wrong scale (level-1 coordinates on this level-0 slide) is refused
    wrong = geojson(tmp_path / "wrong.geojson", [square(1600, 1600, 2 * SIDE, 2 * SIDE)])
    sheet.assign(annotation=str(wrong)).to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    (tmp_path / "results" / "labels" / f"{slide}.parquet").unlink()
    proc = snakemake(tmp_path, f"results/labels/{slide}.parquet", check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0
    (line,) = [x for x in said.splitlines() if "past the slide's edge" in x and "ERROR" in x]
    assert f"{wrong}: feature 1: slide {slide}: outline (1600, 1600, 4096, 4096)" in line
    assert "annotation_import.edge_tolerance" in line
    assert not (tmp_path / "results" / "labels" / f"{slide}.parquet").exists()


def test_real_imagescope_file_labels_tiles_through_the_workflow(
    tmp_path: Path, aperio_xml: Path
) -> None:
    """The real TCGA ImageScope XML (level-0 outlines at 0.252 um/px over 97,000 x 61,000 px) on
    a slide of its size at 1/32 (its scan is not here): the sheet's annotation_scale reads it."""
    mpp = 0.252 * 32
    samples, _ = make_cohort(
        tmp_path / "cohort", n_slides=1, n_patients=1, width=3072, height=2048, mpp=mpp,
        lesions_per_slide=(1, 1), lesion_size_um=(2000, 2000), negative_slides=0, seed=2,
    )  # fmt: skip
    slide = str(samples.slide_id.iloc[0])
    samples.assign(annotation=str(aperio_xml), annotation_scale=1 / 32).to_csv(
        tmp_path / "samples.tsv", sep="\t", index=False
    )
    (tmp_path / "boxes.csv").write_text("filename,x1,x2,y1,y2\n")
    write_config(
        tmp_path,
        {"demo": {"enabled": False}, "samples": "samples.tsv", "annotations": "boxes.csv",
         "tiling": {"tile_um": 256.0, "target_mpp": mpp}},
    )  # fmt: skip
    proc = snakemake(tmp_path, f"results/labels/{slide}.parquet")
    assert "MicronsPerPixel" not in proc.stdout + proc.stderr  # the file's scale is the slide's
    labels = pd.read_parquet(tmp_path / "results" / "labels" / f"{slide}.parquet")
    outlines = read_annotation_file(aperio_xml, ImportSettings(scale=1 / 32), mpp=mpp)
    union = shapely.union_all(list(outlines.geometry))
    boxes = shapely.box(labels.x, labels.y, labels.x + labels["size"], labels.y + labels["size"])
    share = shapely.area(shapely.intersection(boxes, union)) / shapely.area(boxes)
    assert (labels.label == 1).sum() > 20
    assert ((labels.label == 1) == (share >= 0.5)).all()  # labels.positive 0.5, coverage
