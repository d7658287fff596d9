"""Feature extraction: stored features are the encoder's, in order, and killed runs leave nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _fixtures import colour_slide, tile_table

from histodetect.errors import InputError
from histodetect.features.encoder import build_encoder
from histodetect.features.extract import encode_batch, extract_slide
from histodetect.features.settings import EncoderSpec
from histodetect.features.store import read_features
from histodetect.fit.data import TileDataset

SPEC = EncoderSpec(model="test_efficientnet", seed=7)
TILING = {"tile_um": 32.0, "target_mpp": 1.0}


def _slide(tmp_path: Path):
    path, labels = colour_slide(tmp_path / "s1.tiff")
    tiles = tile_table(path, labels).sample(frac=1.0, random_state=0).reset_index(drop=True)
    tiles = tiles.drop(columns="path").assign(stride=64, mpp=0.5)
    summary = {"slide_id": "s1", "path": str(path), "status": "ok", "tiles": len(tiles)}
    return tiles, summary


def test_features_equal_the_encoder_on_each_tile_read_alone(tmp_path: Path) -> None:
    tiles, summary = _slide(tmp_path)
    out = tmp_path / "features" / "s1.h5"
    encoder = build_encoder(SPEC, tile_px=32)
    extract_slide(
        tiles, summary, encoder, out, encoder_id="e-abc", tiling=TILING,
        batch_size=48, num_workers=1, device="cpu",
    )  # fmt: skip
    stored = read_features(out, {"encoder_id": "e-abc", "tile_um": 32.0})
    assert stored.features.dtype == np.float16 and stored.features.shape == (256, encoder.dim)
    np.testing.assert_array_equal(stored.coords, tiles[["x", "y"]].to_numpy())
    np.testing.assert_array_equal(stored.grid["row"], tiles["row"].to_numpy())
    reader = TileDataset(tiles.assign(path=summary["path"]))
    alone = build_encoder(SPEC, tile_px=32)  # same seed: the same weights
    assert alone.weights_sha256 == stored.attrs["weights_sha256"]
    for i in (0, 17, 255):
        image = torch.from_numpy(reader.read_tile(i).copy()).permute(2, 0, 1)[None]
        with torch.inference_mode():
            want = encode_batch(alone, image, torch.device("cpu"))[0].numpy()
        np.testing.assert_allclose(
            stored.features[i].astype(np.float32), want, rtol=2e-3, atol=2e-3
        )
    assert stored.attrs["tile_px"] == 32 and stored.attrs["mpp"] == 0.5
    assert stored.attrs["status"] == "ok" and stored.attrs["n_tiles"] == 256


def test_an_unreadable_slide_gets_a_failed_record_that_readers_refuse(tmp_path: Path) -> None:
    tiles, summary = _slide(tmp_path)
    Path(summary["path"]).write_bytes(b"not a slide")
    out = tmp_path / "s1.h5"
    encoder = build_encoder(SPEC, tile_px=32)
    extract_slide(tiles, summary, encoder, out, encoder_id="e-abc", tiling=TILING, num_workers=0)
    with pytest.raises(InputError, match=r"s1\.h5: feature extraction failed"):
        read_features(out)
    with pytest.raises(InputError):
        extract_slide(
            tiles, summary, encoder, out, encoder_id="e-abc", tiling=TILING,
            bad_slides="fail", num_workers=0,
        )  # fmt: skip


KILLED_WHILE_WRITING = """
import json, os, signal, sys
import pandas as pd
from histodetect.features import store
from histodetect.features.encoder import build_encoder
from histodetect.features.extract import extract_slide
from histodetect.features.settings import EncoderSpec

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

store._chunks = die  # called once the temporary h5 is open, before its datasets are written
tiles, summary, out = pd.read_parquet(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
encoder = build_encoder(EncoderSpec(model="test_efficientnet"), tile_px=32)
extract_slide(tiles, summary, encoder, out, encoder_id="e", tiling={"tile_um": 32.0}, num_workers=0)
"""


def test_a_killed_extraction_leaves_no_file_that_looks_done(tmp_path: Path) -> None:
    tiles, summary = _slide(tmp_path)
    tiles.to_parquet(tmp_path / "tiles.parquet")
    out = tmp_path / "features" / "s1.h5"
    args = [str(tmp_path / "tiles.parquet"), json.dumps(summary), str(out)]
    proc = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, *args], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    leftovers = list(out.parent.iterdir())
    assert leftovers and all(p.name.startswith(".s1.") for p in leftovers)  # the temporary file
