"""Spatial split on Camelyon16 tumor_001 (level 5): is the held-out lesion found?

The slide's two metastases lie one above the other. Train one tile classifier on the tiles
of the half that holds one lesion (``y < SPLIT_Y``), infer on the other half, turn the heatmap
into boxes and check whether a box matches the other lesion's bounding box at GIoU > 0.5
(the DigiLut rule). Not a test: it trains a model (a few minutes on two CPU cores).

    .venv/bin/python bench/camelyon_spatial.py --out /tmp/camelyon_spatial
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from histodetect.annotations.geometry import box_giou
from histodetect.detection.inference import heatmap_from_tiles, predict_tiles
from histodetect.detection.slide_outputs import detect_slide
from histodetect.evaluation.detection_metrics import detection_report
from histodetect.slides.tiling import TilingSettings, tile_slide
from histodetect.slides.tissue import TissueSettings
from histodetect.testdata import path_or_exit
from histodetect.training.train import TrainConfig, train_fold

SLIDE = "camelyon16_tumor_001/tumor_001_level5.tif"  # real files, from histodetect.testdata
OUTLINES = "camelyon16_tumor_001/Tumor_001.json"
DOWNSAMPLE = 32
MPP = 0.243 * DOWNSAMPLE
SPLIT_Y = 4056  # between lesion _1 (y 3832-3995) and lesion _0 (y 4117-4206), level-5 px


def read_ncrf_outlines(path: Path, scale: float) -> list[shapely.Polygon]:
    """Positive outlines of an NCRF JSON file, coordinates multiplied by ``scale``."""
    data = json.loads(path.read_text())
    return [shapely.Polygon(np.asarray(p["vertices"], float) * scale) for p in data["positive"]]


def label(tiles: pd.DataFrame, lesions: shapely.MultiPolygon) -> pd.DataFrame:
    """Coverage of each tile by the outlines: >= 0.5 lesion (1), 0 background, else -1."""
    boxes = shapely.box(tiles.x, tiles.y, tiles.x + tiles["size"], tiles.y + tiles["size"])
    cover = shapely.area(shapely.intersection(boxes, lesions)) / shapely.area(boxes)
    return tiles.assign(label=np.where(cover >= 0.5, 1, np.where(cover == 0, 0, -1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/camelyon_spatial"))
    parser.add_argument("--tile-px", type=int, default=32, help="tile side, level-5 px")
    parser.add_argument("--stride-px", type=int, default=16, help="grid step, level-5 px")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--neg-ratio", type=float, default=4.0)
    parser.add_argument("--train-top", action=argparse.BooleanOptionalAction, default=True,
                        help="train on the top half (lesion _1), infer on the bottom (_0)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    slide = path_or_exit(SLIDE)
    outlines = read_ncrf_outlines(path_or_exit(OUTLINES), 1 / DOWNSAMPLE)
    settings = TilingSettings(
        tile_um=args.tile_px * MPP, stride_um=args.stride_px * MPP, target_mpp=MPP,
        tissue=TissueSettings("otsu", mpp=MPP),
    )  # fmt: skip
    tiled = tile_slide(str(slide), "tumor_001", settings, mpp_override=MPP)
    tiles = label(tiled.tiles.assign(path=str(slide)), shapely.MultiPolygon(outlines))
    top = tiles.y + tiles["size"] <= SPLIT_Y
    bottom = tiles.y >= SPLIT_Y
    train_part, test_part = (
        (tiles[top], tiles[bottom]) if args.train_top else (tiles[bottom], tiles[top])
    )
    held_out = [o for o in outlines if (o.bounds[1] >= SPLIT_Y) == args.train_top]
    truth_box = np.array([held_out[0].bounds])

    rng = np.random.default_rng(args.seed)
    labelled = train_part[train_part.label >= 0]
    pos, neg = labelled[labelled.label == 1], labelled[labelled.label == 0]
    neg = neg.sample(min(len(neg), int(args.neg_ratio * len(pos))), random_state=args.seed)
    chosen = pd.concat([pos, neg])
    val_mask = rng.random(len(chosen)) < 0.2
    cfg = TrainConfig(backbone="resnet18", epochs=args.epochs, batch_size=32, lr=1e-3,
                      num_workers=0, seed=args.seed, early_stopping_patience=4)  # fmt: skip
    model_dir = args.out / "model"
    metrics = train_fold(
        chosen[~val_mask], chosen[val_mask], model_dir, cfg, fold=0, run_name="spatial",
        mlflow_uri=f"sqlite:///{args.out / 'mlflow.db'}", experiment="camelyon_spatial",
        tb_dir=args.out / "tb",
    )  # fmt: skip
    probs = predict_tiles(test_part, [model_dir / "model.pt"], batch_size=128, tta=True)
    heatmap = heatmap_from_tiles(
        test_part, probs, slide_id="tumor_001", mpp=MPP, level=0,
        slide_width=tiled.summary["width"], slide_height=tiled.summary["height"],
    )  # fmt: skip
    heatmap.save(args.out / "heatmap.npz")
    truth = pd.DataFrame(truth_box, columns=["x1", "y1", "x2", "y2"]).assign(slide_id="tumor_001")
    test_labels = test_part.label.to_numpy()
    known = test_labels >= 0
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(test_labels[known], probs[known])
    print(json.dumps({
        "train_tiles": len(chosen), "train_pos": len(pos), "val_auc": metrics["val_auc"],
        "test_tiles": len(test_part), "test_pos": int((test_labels == 1).sum()),
        "test_tile_auc": round(float(auc), 4),
        "prob_in_lesion_mean": round(float(probs[test_labels == 1].mean()), 3),
        "prob_background_mean": round(float(probs[test_labels == 0].mean()), 3),
    }))  # fmt: skip
    for name, extra in (
        ("all boxes", {"top_n": None}),
        ("top-1 (one lesion expected)", {"top_n": 1}),
    ):
        cfg_boxes = {"method": "components", "threshold": 0.5, "min_neighbours": 1,
                     "score": "max", "min_size_um": 200.0, **extra}  # fmt: skip
        tag = "top1" if extra["top_n"] else "all"
        boxes = detect_slide(
            args.out / "heatmap.npz", slide, truth, cfg_boxes,
            out_boxes=args.out / f"boxes_{tag}.csv", out_geojson=args.out / f"boxes_{tag}.geojson",
            out_overlay=args.out / f"overlay_{tag}.png",
        )  # fmt: skip
        giou = box_giou(boxes[["x1", "y1", "x2", "y2"]].to_numpy(), truth_box).reshape(-1)
        _, summary = detection_report(boxes, truth, ["tumor_001"], mpps={"tumor_001": MPP})
        found = bool(len(giou)) and float(giou.max()) > 0.5
        best = round(float(giou.max()), 3) if len(giou) else None
        print(f"{name}: {len(boxes)} boxes, best GIoU with the held-out lesion {best}, "
              f"found={found}, F2={summary['mean_f2']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
