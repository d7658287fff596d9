"""Self-supervised pretraining: training patients only, resumable, loadable as an encoder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from _fixtures import colour_slide, tile_table

from histodetect.errors import SplitError
from histodetect.features import pretrain
from histodetect.features.encoder import build_encoder
from histodetect.features.pretrain import SSLConfig, draw_tiles, pretrain_encoder
from histodetect.features.settings import EncoderSpec

CFG = SSLConfig(model="test_efficientnet", epochs=2, batch_size=8, max_tiles=24, num_workers=0)
SPLIT = pd.DataFrame(
    {"slide_id": ["s1", "s2"], "patient_id": ["p1", "p2"], "split": ["train", "test"]}
)


def _tiles(tmp_path: Path, slide: str = "s1") -> pd.DataFrame:
    path, labels = colour_slide(tmp_path / f"{slide}.tiff")
    return tile_table(path, labels).assign(slide_id=slide).drop(columns="label")


def _run(tmp_path: Path, tiles: pd.DataFrame, out: str, cfg: SSLConfig = CFG) -> dict:
    return pretrain_encoder(
        tiles, SPLIT, tmp_path / out, cfg, source="tiles", mlflow_uri=f"sqlite:///{tmp_path}/{cfg.method}.db",  # MLflow keeps engines by URI
        experiment="ssl", tb_dir=tmp_path / out / "tb",
    )  # fmt: skip


def test_a_tile_table_holding_a_test_patient_is_refused(tmp_path: Path) -> None:
    tiles = pd.concat([_tiles(tmp_path, "s1"), _tiles(tmp_path, "s2")])
    with pytest.raises(SplitError) as err:
        _run(tmp_path, tiles, "out")
    assert "training patients only" in str(err.value) and "s2 (p2)" in str(err.value)
    assert not (tmp_path / "out").exists()
    unknown = _tiles(tmp_path, "s1").assign(slide_id="s9")
    with pytest.raises(SplitError, match=r"s9 \(\?\)"):
        _run(tmp_path, unknown, "out")


def test_tiles_are_drawn_evenly_over_slides() -> None:
    tiles = pd.DataFrame({"slide_id": ["a"] * 90 + ["b"] * 10, "x": range(100)})
    drawn = draw_tiles(tiles, 20, seed=0)
    assert drawn.slide_id.value_counts().to_dict() == {"a": 10, "b": 10}
    assert draw_tiles(tiles, 20, seed=0).equals(drawn)


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_a_resumed_run_ends_where_an_unbroken_one_does(
    tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = SSLConfig(**{**CFG.__dict__, "method": method})
    tiles = _tiles(tmp_path)
    whole = _run(tmp_path, tiles, "whole", cfg)
    assert whole["selected_epoch"] == 1 and whole["ssl_loss"] == whole["ssl_loss"]  # not NaN

    def killed(self, epoch, row):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(pretrain.RunLogger, "log_epoch", killed)
        with pytest.raises(KeyboardInterrupt):
            _run(tmp_path, tiles, "broken", cfg)
    assert (tmp_path / "broken" / "last.pt").exists()
    assert not (tmp_path / "broken" / "encoder.pt").exists()
    _run(tmp_path, tiles, "broken", cfg)
    a = torch.load(tmp_path / "whole" / "encoder.pt", weights_only=True)
    b = torch.load(tmp_path / "broken" / "encoder.pt", weights_only=True)
    assert a["meta"]["train_patients"] == ["p1"]
    for name, tensor in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], tensor)
    spec = EncoderSpec(
        model="test_efficientnet", source="ssl", checkpoint=str(tmp_path / "whole" / "encoder.pt")
    )
    encoder = build_encoder(spec, tile_px=32)
    for name, tensor in a["state_dict"].items():
        torch.testing.assert_close(encoder.net.state_dict()[name], tensor)


def test_pretraining_says_how_long_it_will_take_after_its_first_steps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from histodetect.features.pretrain import _Pace

    pace = _Pace(120, skip=1, measure=2)
    with caplog.at_level("INFO", logger="histodetect.features.pretrain"):
        for _ in range(2):
            pace.step()
        assert not caplog.records  # not yet measured
        for _ in range(5):
            pace.step()
    (line,) = [r.getMessage() for r in caplog.records]
    assert "min in all" in line and "over steps 2-3 of 120" in line
