"""Peak memory of tiling plus ensemble inference on one slide (run once per slide size).

    .venv/bin/python bench/infer_memory.py SLIDE [MODEL.pt ...]

Models default to the demo run's fold models (``results/models/fold_*/model.pt``); without
those, three random-init resnet18 fold models of 64 px tiles (memory and speed do not depend
on the weights). Slides of several sizes come from ``bench/tiling.py``
(``/tmp/histodetect_bench_tiling/*.tiff``).
Last line: ``<slide>: <n> tiles, <r> tiles/s, peak_rss_mb=<m>``.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from histodetect.detection.inference import heatmap_from_tiles, predict_tiles
from histodetect.fit.model import build_model, save_model
from histodetect.slides.tiling import TilingSettings, tile_slide


def main() -> None:
    torch.set_num_threads(1)
    path = sys.argv[1]
    models = [Path(p) for p in sys.argv[2:]] or sorted(
        Path("results/models").glob("fold_*/model.pt")
    )
    if not models:
        folder = Path(tempfile.mkdtemp(prefix="infer_memory_"))
        for fold in range(3):
            torch.manual_seed(fold)
            models.append(folder / f"fold_{fold}.pt")
            save_model(models[-1], build_model("resnet18"), {"tile_px": 64, "fold": fold})
        print("no fold models given or found: 3 random-init resnet18 of 64 px tiles")
    tiled = tile_slide(path, "bench", TilingSettings(tile_um=128, target_mpp=2.0))
    tiles = tiled.tiles.assign(path=path)
    start = time.perf_counter()
    probs = predict_tiles(tiles, models, batch_size=128, num_workers=0)
    s = tiled.summary
    heatmap_from_tiles(
        tiles,
        probs,
        slide_id="bench",
        mpp=s["mpp"],
        level=s["level"],
        slide_width=s["width"],
        slide_height=s["height"],
    )
    rate = len(tiles) / (time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{Path(path).name}: {len(tiles)} tiles, {rate:.0f} tiles/s, peak_rss_mb={peak:.0f}")


if __name__ == "__main__":
    main()
