"""The 8 um point metric on hand-made cases, its out-of-fold threshold and interval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histodetect.points.metrics import (
    best_f1_threshold,
    bootstrap_f1,
    count_errors,
    evaluate_point_files,
    hotspot_counts,
    image_counts,
    match_points,
    out_of_fold_thresholds,
    pooled,
    scored_matches,
)

MPP = 0.25  # 8 um = 32 px


def test_two_detections_near_one_centre_one_tp_one_fp() -> None:
    det = np.array([[102.0, 100.0], [96.0, 100.0]])
    tp = match_points(det, np.array([0.6, 0.9]), np.array([[100.0, 100.0]]), 8 / MPP)
    assert tp.tolist() == [False, True]  # the better score takes the centre


def test_nine_microns_away_is_a_false_positive() -> None:
    truth = np.array([[100.0, 100.0]])
    assert not match_points([[100 + 9 / MPP, 100.0]], [0.9], truth, 8 / MPP).any()
    assert match_points([[100 + 7.9 / MPP, 100.0]], [0.9], truth, 8 / MPP).all()


def test_greedy_takes_nearest_free_centre() -> None:
    truth = np.array([[0.0, 0.0], [20.0, 0.0]])
    tp = match_points([[12.0, 0.0], [2.0, 0.0]], [0.9, 0.5], truth, 30.0)
    assert tp.tolist() == [True, True]  # 12 takes (20, 0), its nearest; 2 takes (0, 0)


def test_per_image_and_pooled_counts() -> None:
    truth = {"a": np.array([[100.0, 100.0], [400.0, 400.0]]), "b": np.array([[50.0, 50.0]])}
    det = {
        "a": pd.DataFrame(
            {"x": [101.0, 99.0, 800.0], "y": [100.0, 100.0, 800.0], "score": [0.9, 0.8, 0.3]}
        ),
        "b": pd.DataFrame({"x": [52.0], "y": [50.0], "score": [0.7]}),
    }
    matches = scored_matches(det, truth, {"a": MPP, "b": MPP})
    counts = image_counts(matches, {k: len(v) for k, v in truth.items()}, 0.5)
    a = counts.set_index("image").loc["a"]
    assert (a.tp, a.fp, a.fn) == (1, 1, 1) and a.f1 == pytest.approx(0.5)
    total = pooled(counts)
    assert (total["tp"], total["fp"], total["fn"]) == (2, 1, 1)
    assert total["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert pooled(image_counts(matches, {"a": 2, "b": 1}, 0.0))["fp"] == 2


def test_best_f1_threshold_and_out_of_fold() -> None:
    matches = pd.DataFrame(
        {
            "image": ["a", "a", "a", "b", "b"],
            "score": [0.9, 0.6, 0.4, 0.8, 0.2],
            "tp": [True, False, True, True, False],
        }
    )
    threshold, f1 = best_f1_threshold(matches, n_truth=3)
    assert threshold == 0.4 and f1 == pytest.approx(2 * 3 / (4 + 3))
    assert best_f1_threshold(matches[matches.image == "b"], n_truth=1) == (0.8, 1.0)
    by_fold = out_of_fold_thresholds(matches, {"a": 2, "b": 1}, {"a": 0, "b": 1})
    assert by_fold == {0: 0.8, 1: best_f1_threshold(matches[matches.image == "a"], 2)[0]}


def test_bootstrap_interval_brackets_the_pooled_f1() -> None:
    counts = pd.DataFrame({"tp": [5, 1, 3, 0], "fp": [1, 4, 0, 2], "fn": [2, 0, 1, 3]})
    lo, hi = bootstrap_f1(counts, n=500, seed=1)
    assert lo < pooled(counts)["f1"] < hi
    assert bootstrap_f1(counts, n=500, seed=1) == (lo, hi)


def test_evaluate_point_files_scores_each_fold_at_the_others_threshold(tmp_path: Path) -> None:
    """The files of rule evaluate_points: sheet, point annotations, folds, tiling records."""
    rows, point_paths, summaries = [], [], []
    for i, slide in enumerate(["a", "b", "c"]):
        ann = tmp_path / f"{slide}_truth.csv"
        ann.write_text("x,y,class\n100,100,mitosis\n300,300,mitosis\n500,500,nonmitosis\n")
        rows.append(f"{slide}\tp{i}\t{slide}.jpg\t0.25\t{ann}")
        det = tmp_path / "oof" / f"{slide}.csv"
        det.parent.mkdir(exist_ok=True)
        # one hit at 0.9, one 4 um off at 0.6 (a hit), the look-alike found at 0.7 (a miss)
        det.write_text(
            f"slide_id,x,y,score\n{slide},101,100,0.9\n{slide},500,500,0.7\n{slide},316,300,0.6\n"
        )
        point_paths.append(det)
        summary = tmp_path / f"{slide}.json"
        summary.write_text(json.dumps({"slide_id": slide, "mpp": 0.25}))
        summaries.append(summary)
    (tmp_path / "samples.tsv").write_text(
        "slide_id\tpatient_id\tpath\tmpp\tannotation\n" + "\n".join(rows) + "\n"
    )
    (tmp_path / "folds.tsv").write_text(
        "slide_id\tpatient_id\tfold\na\tp0\t0\nb\tp1\t1\nc\tp2\t2\n"
    )
    record = evaluate_point_files(
        point_paths, tmp_path / "folds.tsv", tmp_path / "samples.tsv", summaries,
        points_cfg={"match_um": 8.0, "min_score": 0.05, "bootstrap": 100},
        annotation_import={"point_radius_um": 4.0},
        negative_classes=["nonmitosis"], seed=0,
        out_metrics=tmp_path / "points.json", out_per_image=tmp_path / "per_image.tsv",
    )  # fmt: skip
    assert record["n_truth"] == 6  # the look-alikes are not truth
    assert {f["threshold"] for f in record["folds"].values()} == {0.6}  # F1 2*2/(3+2) best
    assert (record["tp"], record["fp"], record["fn"]) == (6, 3, 0)
    assert json.loads((tmp_path / "points.json").read_text()) == record
    assert len(pd.read_csv(tmp_path / "per_image.tsv", sep="\t")) == 3


def test_count_errors() -> None:
    errors = count_errors([3, 0, 5], [2, 0, 9])
    assert errors["count_mae"] == pytest.approx(5 / 3)
    assert errors["count_spearman"] == pytest.approx(1.0)
    assert count_errors([1, 1], [0, 4])["count_spearman"] is None  # constant: undefined
    assert count_errors([], []) == {"count_mae": None, "count_spearman": None}


def test_test_slides_are_scored_at_the_tuned_threshold(tmp_path: Path) -> None:
    rows, summaries = [], []
    for i, slide in enumerate(["a", "t"]):
        ann = tmp_path / f"{slide}_truth.csv"
        ann.write_text("x,y,class\n100,100,mitosis\n300,300,mitosis\n")
        rows.append(f"{slide}\tp{i}\t{slide}.jpg\t0.25\t{ann}")
        summary = tmp_path / f"{slide}.json"
        summary.write_text(
            json.dumps({"slide_id": slide, "mpp": 0.25, "width": 1000, "height": 1000})
        )
        summaries.append(summary)
    (tmp_path / "samples.tsv").write_text(
        "slide_id\tpatient_id\tpath\tmpp\tannotation\n" + "\n".join(rows) + "\n"
    )
    (tmp_path / "folds.tsv").write_text("slide_id\tpatient_id\tfold\na\tp0\t0\n")
    oof = tmp_path / "oof" / "a.csv"
    oof.parent.mkdir()
    oof.write_text("slide_id,x,y,score\na,100,100,0.9\n")
    test = tmp_path / "points" / "t.csv"
    test.parent.mkdir()
    # a hit, a miss, and one more hit (the test points are those of the tuned threshold)
    test.write_text("slide_id,x,y,score\nt,101,100,0.9\nt,700,700,0.8\nt,300,302,0.7\n")
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({"settings": {"method": "maxima", "threshold": 0.7}}))
    record = evaluate_point_files(
        [oof], tmp_path / "folds.tsv", tmp_path / "samples.tsv", summaries,
        points_cfg={"match_um": 8.0, "min_score": 0.05, "bootstrap": 100, "hotspot_mm2": 0.0036},
        annotation_import={"point_radius_um": 4.0}, negative_classes=[], seed=0,
        out_metrics=tmp_path / "points.json", out_per_image=tmp_path / "per_image.tsv",
        test_paths=[test], tuned_path=tuned,
    )  # fmt: skip
    assert {"f1", "f1_interval", "folds", "n_truth"} <= set(record)  # the OOF keys stay
    assert record["n_images"] == 1 and record["count_mae"] == 2.0  # one fold: none kept of 2
    t = record["test"]
    assert t["threshold"] == 0.7 and t["n_images"] == 1
    assert (t["tp"], t["fp"], t["fn"]) == (2, 1, 0) and t["count_mae"] == 1.0
    assert t["settings"] == {"method": "maxima", "threshold": 0.7}
    # a 60 um (240 px) square holds both true centres and the two hits, not (700, 700)
    assert t["hotspot_count_mae"] == 0.0
    per_image = pd.read_csv(tmp_path / "per_image.tsv", sep="\t")
    assert per_image.split.tolist() == ["train", "test"]


def test_hotspot_counts_of_detections_and_truth_in_their_own_windows(tmp_path: Path) -> None:
    summary = tmp_path / "s.json"
    summary.write_text(json.dumps({"slide_id": "s", "mpp": 0.25, "width": 2000, "height": 2000}))
    found = pd.DataFrame({"x": [100.0, 150, 180, 900], "y": [100.0, 120, 90, 900]})
    truth = pd.DataFrame({"image": "s", "x": [100.0, 900, 1500], "y": [100.0, 900, 1500]})
    # 0.0036 mm2: a 240 px square; three detections fit in one, the true centres lie apart
    table = hotspot_counts({"s": found}, truth, [summary], 0.0036)
    assert table.to_dict("records") == [{"image": "s", "hotspot_pred": 3, "hotspot_truth": 1}]
