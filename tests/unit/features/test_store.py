"""Feature ids, attribute checks, imported TRIDENT/CLAM folders and encoder loading."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import timm
import torch

from histodetect.errors import InputError
from histodetect.features.encoder import build_encoder, hub_error
from histodetect.features.settings import (
    EncoderSpec,
    encoder_id,
    encoder_record,
    resolve_source,
    spec_from_config,
)
from histodetect.features.store import (
    SlideFeatures,
    features_summary,
    import_paths,
    read_features,
    read_foreign,
    write_features,
)

TILING = {"tile_um": 128.0, "target_mpp": 2.0, "stride_um": None, "min_tissue": 0.5}


def _id(spec: EncoderSpec, tiling: dict = TILING, **kw: object) -> str:
    return encoder_id(spec, encoder_record(spec, tiling, **kw))


def test_the_encoder_id_changes_with_tiles_encoder_and_weights() -> None:
    base = EncoderSpec(model="resnet18")
    ids = {
        _id(base),
        _id(base, {**TILING, "tile_um": 256.0}),
        _id(base, {**TILING, "target_mpp": 1.0}),
        _id(EncoderSpec(model="resnet50")),
        _id(EncoderSpec(model="resnet18", seed=1)),
        _id(EncoderSpec(model="resnet18", input_px=224)),
        _id(EncoderSpec(model="resnet18", source="checkpoint", checkpoint="a.pt"), weights="aa"),
        _id(EncoderSpec(model="resnet18", source="checkpoint", checkpoint="a.pt"), weights="bb"),
        _id(EncoderSpec(source="ssl", checkpoint="e.pt"), ssl_settings={"epochs": 5}),
        _id(EncoderSpec(source="ssl", checkpoint="e.pt"), ssl_settings={"epochs": 6}),
    }
    assert len(ids) == 10
    assert _id(base) == _id(EncoderSpec(model="resnet18"))  # and is stable
    assert _id(base).startswith("resnet18-random-")


def test_spec_from_config_names_the_source() -> None:
    assert spec_from_config({"checkpoint": "w.pt"}, 1, "ssl.pt").source == "checkpoint"
    ssl = spec_from_config({"source": "ssl"}, 1, "results/encoder/ssl/encoder.pt")
    assert ssl.checkpoint == "results/encoder/ssl/encoder.pt"


def test_auto_never_starts_from_random_weights() -> None:
    auto = {"source": "auto", "pretrained": False, "checkpoint": None}
    assert resolve_source(auto).source == "ssl"
    assert "cohort's own" in resolve_source(auto).reason
    assert resolve_source({**auto, "checkpoint": "w.pt"}).source == "checkpoint"
    assert resolve_source({**auto, "checkpoint": "w.pt", "pretrained": True}).source == "checkpoint"
    hub = {**auto, "pretrained": True}
    assert resolve_source(hub).source == "timm"  # the hub answered
    offline = resolve_source(hub, hub_error="LocalEntryNotFoundError: offline")
    assert offline.source == "ssl" and "hub could not be reached" in offline.reason
    assert "offline" in offline.reason
    # an explicit source is kept, random init included
    assert resolve_source({"source": "timm", "pretrained": False}).source == "timm"
    assert "random" in resolve_source({"source": "timm"}).reason
    assert resolve_source({"source": "timm", "checkpoint": "w.pt"}).source == "checkpoint"
    with pytest.raises(ValueError, match="resolve it first"):
        spec_from_config(auto, 1, "ssl.pt")


def test_hub_error_says_why_timm_cannot_load_the_weights() -> None:
    why = hub_error("no_such_model_anywhere")
    assert why is not None and "no_such_model_anywhere" in why and "\n" not in why


def _write(path: Path, **attrs: object) -> None:
    data = SlideFeatures(
        np.ones((3, 4)), np.arange(6).reshape(3, 2), {"status": "ok", "tile_um": 128.0, **attrs}
    )
    write_features(path, data)


def test_a_file_made_with_other_settings_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "s1.h5"
    _write(path, encoder_id="resnet18-random-aaa")
    assert len(read_features(path, {"encoder_id": "resnet18-random-aaa", "tile_um": 128})) == 3
    with pytest.raises(InputError) as err:
        read_features(path, {"encoder_id": "resnet18-random-aaa", "tile_um": 256.0})
    assert str(err.value).startswith(
        f"{path}: attribute tile_um is 128.0 but this run expects 256.0"
    )
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="attribute encoder_id"):
        read_features(path, {"encoder_id": "vit-ssl-bbb"})


def _trident(path: Path, n: int, dim: int = 8, batch_axis: bool = False) -> None:
    with h5py.File(path, "w") as h5:
        features = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
        h5["features"] = features[None] if batch_axis else features
        h5["coords"] = np.stack([np.arange(n) * 256, np.zeros(n, int)], 1)
        h5["coords"].attrs["patch_size"] = 256


def test_an_imported_folder_is_read_and_a_missing_slide_is_one_line(tmp_path: Path) -> None:
    _trident(tmp_path / "a.h5", 5)
    _trident(tmp_path / "b.h5", 2, batch_axis=True)  # CLAM writes (1, n, dim) at times
    paths = import_paths(tmp_path, ["a", "b"])
    features, coords = read_foreign(paths["b"])
    assert features.shape == (2, 8) and coords.tolist() == [[0, 0], [256, 0]]
    ids = ["a", "b"] + [f"m{i:05d}" for i in range(10_000)]
    with pytest.raises(InputError) as err:
        import_paths(tmp_path, ids)
    line = str(err.value)
    assert "10000 slide(s)" in line and "m00000" in line and "and 9990 more" in line
    assert "m00010" not in line and len(line) < 400
    (tmp_path / "c.h5").write_bytes(b"")
    with h5py.File(tmp_path / "d.h5", "w") as h5:
        h5["feats"] = np.zeros((2, 2))
    with pytest.raises(InputError, match=r"d\.h5: no dataset features or coords"):
        read_foreign(tmp_path / "d.h5")
    with pytest.raises(InputError, match=r"c\.h5: not a readable h5"):
        read_foreign(tmp_path / "c.h5")


def test_a_local_checkpoint_is_loaded_with_its_normalisation(tmp_path: Path) -> None:
    net = timm.create_model("test_vit", num_classes=0)
    torch.save(net.state_dict(), tmp_path / "vit.pth")
    spec = EncoderSpec(model="test_vit", source="checkpoint", checkpoint=str(tmp_path / "vit.pth"))
    encoder = build_encoder(spec, tile_px=64)
    for name, tensor in net.state_dict().items():
        torch.testing.assert_close(encoder.net.state_dict()[name], tensor)
    assert encoder.input_px == net.pretrained_cfg["input_size"][-1]  # a ViT's fixed input
    assert encoder.mean == tuple(net.pretrained_cfg["mean"])
    assert encoder.weights_sha256 == hashlib.sha256((tmp_path / "vit.pth").read_bytes()).hexdigest()
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    bad = EncoderSpec(model="test_vit", source="checkpoint", checkpoint=str(tmp_path / "bad.pth"))
    given = build_encoder(spec, tile_px=64, weights_sha256="hashed-by-the-workflow")
    assert given.weights_sha256 == "hashed-by-the-workflow"  # a large file is not hashed again
    with pytest.raises(InputError, match=r"bad\.pth: cannot load as test_vit"):
        build_encoder(bad, tile_px=64)


def test_hub_weights_offline_fail_in_one_line_naming_the_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network waits
    with pytest.raises(InputError) as err:
        build_encoder(EncoderSpec(model="resnet18", pretrained=True), tile_px=64)
    assert "features.checkpoint: PATH" in str(err.value) and "\n" not in str(err.value)


def test_the_summary_lists_failures_and_refuses_a_stale_file(tmp_path: Path) -> None:
    _write(tmp_path / "a.h5", encoder_id="e-1", slide_id="a")
    _write(tmp_path / "b.h5", encoder_id="e-1", slide_id="b", status="failed", error="truncated")
    out = tmp_path / "summary.tsv"
    features_summary([tmp_path / "a.h5", tmp_path / "b.h5"], out, {"encoder_id": "e-1"})
    table = pd.read_csv(out, sep="\t")
    assert table.status.tolist() == ["ok", "failed"] and table.error.tolist()[1] == "truncated"
    _write(tmp_path / "c.h5", encoder_id="e-0", slide_id="c")
    with pytest.raises(InputError, match=r"c\.h5: attribute encoder_id is 'e-0'"):
        features_summary([tmp_path / "a.h5", tmp_path / "c.h5"], out, {"encoder_id": "e-1"})


def test_context_sets_each_tile_beside_the_mean_of_its_tissue_neighbours() -> None:
    from histodetect.features.extract import with_context

    # a 2 x 3 grid with the middle of the top row missing; features = the tile's index
    row, col = np.array([0, 0, 1, 1, 1]), np.array([0, 2, 0, 1, 2])
    feats = np.arange(5, dtype=np.float32)[:, None] * np.array([[1.0, 10.0]])
    out = with_context(feats, row, col)
    assert out.shape == (5, 4)
    np.testing.assert_allclose(out[:, :2], feats)
    # (0,0): its neighbours (1,0)=2, (1,1)=3; (1,1): the four others; (1,2): (0,2)=1, (1,1)=3
    np.testing.assert_allclose(out[:, 2], [2.5, 3.5, 1.5, 1.75, 2.0])
    np.testing.assert_allclose(out[:, 3], 10 * out[:, 2])
    lonely = with_context(feats[:1], row[:1] + 5, col[:1] + 7)
    np.testing.assert_allclose(lonely, [[0.0, 0.0, 0.0, 0.0]])  # no neighbour: its own
    assert with_context(feats[:0], row[:0], col[:0]).shape == (0, 4)


def test_context_is_part_of_the_feature_id_only_when_asked_for() -> None:
    plain = spec_from_config({"source": "timm"}, 1, "ssl.pt")
    ctx = spec_from_config({"source": "timm", "context": "neighbours"}, 1, "ssl.pt")
    assert _id(plain) == _id(EncoderSpec(seed=1)) and _id(ctx) != _id(plain)
    with pytest.raises(ValueError, match=r"features\.context"):
        EncoderSpec(context="ring")
