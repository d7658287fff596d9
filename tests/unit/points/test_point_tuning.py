"""The point step tuned out of fold: method x distance x threshold, test fields refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histodetect.detection.heatmap import Heatmap
from histodetect.errors import SplitError
from histodetect.points.tuning import candidate_passes, tune_point_files, tune_points

CFG = {
    "method": "maxima", "min_distance_um": 8.0, "min_score": 0.05, "match_um": 8.0,
    "tune_grid": {"method": ["maxima", "components"], "min_distance_um": [8.0, 40.0],
                  "component_threshold": [0.3, 0.6]},
}  # fmt: skip


def field(slide_id: str, peaks: list[tuple[int, int, float]]) -> Heatmap:
    # cells every 10 px, 1 um/px: cell (r, c) is centred at (10 c + 20, 10 r + 20)
    prob = np.zeros((30, 30))
    for r, c, p in peaks:
        prob[r, c] = p
    return Heatmap(slide_id, prob, 0.0, 0.0, 10.0, 40.0, 1.0, 0, 340, 340)


def centre(r: int, c: int) -> list[float]:
    return [10.0 * c + 20, 10.0 * r + 20]


def cohort() -> tuple[list[Heatmap], dict[str, np.ndarray]]:
    # true peaks score 0.7-0.9, look-alikes 0.4-0.5; on field b two true centres 20 um apart
    a = field("a", [(3, 3, 0.9), (10, 20, 0.8), (20, 5, 0.45)])
    b = field("b", [(5, 5, 0.85), (5, 7, 0.7), (25, 25, 0.5), (15, 15, 0.4)])
    truth = {
        "a": np.array([centre(3, 3), centre(10, 20)]),
        "b": np.array([centre(5, 5), centre(5, 7)]),
    }
    return [a, b], truth


def test_the_search_finds_the_threshold_between_truth_and_look_alikes() -> None:
    heatmaps, truth = cohort()
    chosen, search = tune_points(heatmaps, truth, CFG, CFG["tune_grid"], floor=0.05, match_um=8.0)
    assert chosen == {"method": "maxima", "min_distance_um": 8.0, "threshold": 0.7}
    best = search.iloc[0]
    assert (best.tp, best.fp, best.fn, best.f1) == (4, 0, 0, 1.0)
    # 40 um apart at least: one of b's two close centres is suppressed
    far = search[(search.method == "maxima") & (search.min_distance_um == 40.0)].iloc[0]
    assert far.tp == 3 and far.f1 < 1.0
    # components: one pass per fixed threshold; at 0.3 the look-alikes are kept
    comp = search[search.method == "components"].set_index("threshold")
    assert comp.loc[0.3, "fp"] == 3 and comp.loc[0.6, "fp"] == 0
    assert len(search) == 4  # the base pass (maxima, 8 um) is searched once


def test_the_config_setting_is_searched_first() -> None:
    base = {**CFG, "method": "components"}
    passes = candidate_passes(base, CFG["tune_grid"])
    assert passes[:2] == [("components", None, 0.3), ("components", None, 0.6)]
    assert ("maxima", 40.0, None) in passes and len(passes) == 4


def test_tuning_writes_the_choice_and_refuses_a_test_field(tmp_path: Path) -> None:
    heatmaps, truth = cohort()
    paths = []
    for h in heatmaps:
        h.save(tmp_path / f"{h.slide_id}.npz")
        paths.append(tmp_path / f"{h.slide_id}.npz")
    table = pd.DataFrame(
        [(i, *xy) for i, c in truth.items() for xy in c], columns=["image", "x", "y"]
    )
    split = pd.DataFrame(
        {"slide_id": ["a", "b"], "patient_id": ["p1", "p2"], "split": ["train", "train"]}
    )
    out = {"out_settings": tmp_path / "points.json", "out_search": tmp_path / "search.tsv"}
    record = tune_point_files(paths, table, split, CFG, source="split.tsv", **out)
    assert record["settings"]["threshold"] == pytest.approx(0.7) and record["oof_f1"] == 1.0
    assert record["slides"] == ["a", "b"] and record["n_truth"] == 4
    assert json.loads(out["out_settings"].read_text()) == record
    assert pd.read_csv(out["out_search"], sep="\t").f1.iloc[0] == 1.0
    held_out = split.assign(split=["train", "test"])
    with pytest.raises(SplitError) as err:
        tune_point_files(paths, table, held_out, CFG, source="split.tsv", **out)
    message = str(err.value)
    assert message.startswith("split.tsv: point tuning may use training patients only")
    assert "b (p2)" in message and "a (p1)" not in message and "\n" not in message
