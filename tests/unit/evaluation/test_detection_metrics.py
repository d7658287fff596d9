"""Detection and tile metrics on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import shapely

from histodetect.evaluation.detection_metrics import (
    average_precision,
    camelyon_regions,
    detection_report,
    froc_curve,
    lesion_hits,
    major_axis_length,
    match_boxes,
    patch_metrics,
    region_hits,
    slide_fbeta,
)

GT = np.array([[0, 0, 100, 100], [200, 200, 300, 300]], dtype=float)
NONE = np.zeros((0, 4))
COARSE = dict.fromkeys("abc", 10.0)  # 10 um/px: 100 px lesions are 1 mm, growing adds 7.5 px


def f2(p: float, r: float) -> float:
    return 5 * p * r / (4 * p + r)


def test_perfect_predictions() -> None:
    res = slide_fbeta(GT, [0.9, 0.8], GT)
    assert res == {"tp": 2, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f2": 1.0}


def test_one_tp_one_fp() -> None:
    pred = np.array([[0, 0, 100, 100], [500, 500, 600, 600]], dtype=float)
    res = slide_fbeta(pred, [0.9, 0.8], GT[:1])
    assert (res["tp"], res["fp"], res["fn"]) == (1, 1, 0)
    assert res["f2"] == pytest.approx(f2(0.5, 1.0)) == pytest.approx(2.5 / 3)
    res = slide_fbeta(pred[:1], [0.9], GT)
    assert res["f2"] == pytest.approx(f2(1.0, 0.5))


def test_giou_threshold_is_strict() -> None:
    gt = np.array([[0, 0, 10, 10]], dtype=float)
    # Nested boxes: hull == union, so GIoU == IoU == 100 / 200 exactly.
    assert slide_fbeta([[0, 0, 20, 10]], [1.0], gt)["tp"] == 0
    assert slide_fbeta([[0, 0, 19, 10]], [1.0], gt)["tp"] == 1
    tp, _ = match_boxes([[0, 0, 20, 10]], [1.0], gt, thr=0.5, by="iou")
    assert not tp[0]


def test_giou_and_iou_matching_differ() -> None:
    gt = np.array([[0, 0, 10, 10]], dtype=float)
    pred = [[3, 3, 13, 13]]  # IoU = 49/151 ~ 0.32, GIoU = IoU - 18/169 ~ 0.22
    assert not match_boxes(pred, [1.0], gt, thr=0.3, by="giou")[0][0]
    assert match_boxes(pred, [1.0], gt, thr=0.3, by="iou")[0][0]
    with pytest.raises(ValueError, match="giou"):
        match_boxes(pred, [1.0], gt, by="dice")


def test_each_gt_matched_once_highest_score_first() -> None:
    pred = np.array([[0, 0, 100, 100], [0, 0, 100, 100], [1, 1, 100, 100]], dtype=float)
    tp, matched = match_boxes(pred, [0.5, 0.9, 0.7], GT)
    assert tp.tolist() == [False, True, False]
    assert matched.tolist() == [True, False]


def test_pred_takes_best_unmatched_gt() -> None:
    gt = np.array([[0, 0, 100, 100], [0, 0, 100, 110]], dtype=float)
    pred = np.array([[0, 0, 100, 110], [0, 0, 100, 100]], dtype=float)
    tp, matched = match_boxes(pred, [0.9, 0.8], gt)
    assert tp.all() and matched.all()
    # The top prediction took gt 1 (exact); the second then gets gt 0 (exact).
    tp, matched = match_boxes(pred[:1], [0.9], gt)
    assert matched.tolist() == [False, True]


def test_empty_conventions() -> None:
    assert slide_fbeta(NONE, [], NONE)["f2"] == 1.0
    assert slide_fbeta(GT, [0.5, 0.5], NONE)["f2"] == 0.0
    res = slide_fbeta(NONE, [], GT)
    assert res["f2"] == 0.0 and res["fn"] == 2


def test_average_precision() -> None:
    assert average_precision(np.array([True, True, False]), np.array([0.9, 0.8, 0.1]), 2) == 1.0
    # FP ranked first: precision 2/3 holds over the whole recall range.
    ap = average_precision(np.array([False, True, True]), np.array([0.9, 0.8, 0.7]), 2)
    assert ap == pytest.approx(2 / 3)
    assert average_precision(np.array([True]), np.array([0.9]), 2) == pytest.approx(0.5)
    assert math.isnan(average_precision(np.zeros(0, bool), np.zeros(0), 0))


def boxes(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["slide_id", "x1", "y1", "x2", "y2", "score"][: len(rows[0])])


def test_detection_report_froc_and_ap() -> None:
    gt = boxes([("a", 0, 0, 100, 100), ("b", 0, 0, 100, 100)])
    pred = boxes(
        [
            ("a", 0, 0, 100, 100, 0.9),  # TP
            ("a", 500, 500, 600, 600, 0.6),  # FP
            ("b", 500, 500, 600, 600, 0.8),  # FP
            ("b", 2, 2, 100, 100, 0.5),  # TP
        ]
    )
    per_slide, summary = detection_report(pred, gt, ["a", "b", "c"], mpps=COARSE)
    assert per_slide.slide_id.tolist() == ["a", "b", "c"]
    assert per_slide.f2.tolist() == pytest.approx([f2(0.5, 1), f2(0.5, 1), 1.0])
    assert summary["mean_f2"] == pytest.approx((2 * f2(0.5, 1) + 1) / 3)
    assert summary["precision"] == 0.5 and summary["recall"] == 1.0
    # Pooled ranking TP, FP, FP, TP with 2 GT: AP = 0.5 * 1 + 0.5 * 0.5.
    assert summary["ap50"] == pytest.approx(0.75)
    # Curve over 3 slides: (0,0) (0,.5) (1/3,.5) (2/3,.5) (2/3,1).
    np.testing.assert_allclose(summary["froc_fps"], [0, 0, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(summary["froc_sens"], [0, 0.5, 0.5, 0.5, 1.0])
    froc = summary["froc"]
    assert list(froc) == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert froc[0.25] == pytest.approx(0.5)
    assert froc[0.5] == pytest.approx(0.5 + 0.5 * (0.5 - 1 / 3) / (1 / 3))  # interpolated
    assert froc[1.0] == froc[8.0] == 1.0
    assert summary["froc_mean"] == pytest.approx(np.mean(list(froc.values())))


def test_detection_report_slide_without_predictions() -> None:
    gt = boxes([("a", 0, 0, 100, 100)])
    pred = pd.DataFrame(columns=["slide_id", "x1", "y1", "x2", "y2", "score"])
    per_slide, summary = detection_report(pred, gt, ["a", "b"], mpps=COARSE)
    assert per_slide.f2.tolist() == [0.0, 1.0]
    assert summary["mean_f2"] == 0.5 and summary["ap50"] == 0.0
    assert math.isnan(summary["precision"]) and summary["recall"] == 0.0
    assert summary["froc_mean"] == 0.0


def test_froc_ties_form_one_point() -> None:
    fps, sens = froc_curve(np.array([0.5]), np.array([0.5]), 1)
    assert fps.tolist() == [0.0, 1.0] and sens.tolist() == [0.0, 1.0]


def test_lesion_hits_box_centre_rule() -> None:
    pred = np.array(
        [
            [10, 10, 90, 90],  # centre in lesion 0: hit at 0.7
            [0, 0, 60, 60],  # centre in lesion 0 again: ignored, not a false positive
            [180, 180, 500, 500],  # centre (340, 340) outside both: false positive
            [250, 250, 260, 260],  # small box, centre in lesion 1: hit (no IoU needed)
        ],
        dtype=float,
    )
    lesions, fp = lesion_hits(pred, [0.7, 0.9, 0.4, 0.2], GT)
    assert lesions.tolist() == [0.9, 0.2]
    assert fp.tolist() == [0.4]
    missed, fp = lesion_hits(NONE, [], GT)
    assert np.isneginf(missed).all() and fp.size == 0


def test_froc_duplicates_do_not_count_as_false_positives() -> None:
    gt = boxes([("a", 0, 0, 100, 100)])
    pred = boxes([("a", 0, 0, 100, 100, 0.9), ("a", 10, 10, 90, 90, 0.8)])
    _, summary = detection_report(pred, gt, ["a"], mpps=COARSE)
    assert summary["froc_mean"] == 1.0
    assert summary["precision"] == 0.5  # while the DigiLut rule counts the duplicate


def at(x: float, y: float) -> list[float]:
    """A small detection box centred on ``(x, y)``."""
    return [x - 2, y - 2, x + 2, y + 2]


def camelyon(outlines: list, points: list, scores: list, mpp: float = 0.5):
    regions = camelyon_regions(outlines, mpp)
    return regions, *region_hits(np.array([at(*p) for p in points]).reshape(-1, 4), scores, regions)


def test_camelyon_hit_inside_the_outline_grown_by_75_um() -> None:
    # a 500 um square lesion at 0.5 um/px: grown by 75 um = 150 px, corners rounded
    square = shapely.box(1000, 1000, 2000, 2000)
    points = [(2140, 1500), (2160, 1500), (2100, 2100), (2110, 2110), (1500, 1500)]
    regions, best, fp = camelyon([square], points, [0.9, 0.8, 0.7, 0.6, 0.5])
    # 70 um right of the edge: hit; 80 um: false positive; 70.7 um off the corner diagonally:
    # hit; 77.8 um: false positive (the region is grown, not a bigger box); inside: hit
    assert best.tolist() == [0.9] and fp.tolist() == [0.8, 0.6]
    assert regions.itc.tolist() == [False] and regions.region_of.tolist() == [0]
    # the box-centre rule counts all but the inside one as false positives
    boxes_ = np.array([at(*p) for p in points])
    hits, fp_box = lesion_hits(boxes_, [0.9, 0.8, 0.7, 0.6, 0.5], [[1000, 1000, 2000, 2000]])
    assert hits.tolist() == [0.5] and fp_box.tolist() == [0.9, 0.8, 0.7, 0.6]


def test_camelyon_uses_the_outline_not_its_box() -> None:
    # an L-shaped lesion of 1 mm arms, 200 um thick, at 1 um/px; its box's far corner is empty
    ell = shapely.Polygon([(0, 0), (1000, 0), (1000, 200), (200, 200), (200, 1000), (0, 1000)])
    regions, best, fp = camelyon([ell], [(800, 800), (100, 900), (250, 250)], [0.9, 0.8, 0.7], 1.0)
    assert regions.itc.tolist() == [False]
    assert best.tolist() == [0.8] and fp.tolist() == [0.9]  # (250, 250) is 50 um off: a hit
    assert 0.7 not in fp.tolist()
    gt = pd.DataFrame(
        {"slide_id": ["a"], "x1": [0.0], "y1": [0.0], "x2": [1000.0], "y2": [1000.0],
         "geometry": [ell]}
    )  # fmt: skip
    pred = boxes([("a", *at(800, 800), 0.9)])
    _, outline = detection_report(pred, gt, ["a"], mpps={"a": 1.0})
    _, box = detection_report(pred, gt.drop(columns="geometry"), ["a"], mpps={"a": 1.0})
    assert outline["froc_mean"] == 0.0 and box["froc_mean"] == 1.0


def test_camelyon_isolated_tumour_cells_count_neither_way() -> None:
    # discs at 0.5 um/px: 120 um across grows to 270 um (under 275: isolated tumour cells),
    # 130 um grows to 280 um (a lesion); growing is part of the measure
    small = shapely.Point(1000, 1000).buffer(120, quad_segs=64)
    big = shapely.Point(5000, 5000).buffer(130, quad_segs=64)
    regions, best, fp = camelyon([small, big], [(1000, 1000)], [0.9])
    assert regions.itc.tolist() == [True, False] and best.tolist() == [0.9, -np.inf]
    assert fp.size == 0  # a hit on isolated tumour cells is not a false positive
    assert major_axis_length(regions.regions[0]) * 0.5 == pytest.approx(270, abs=0.5)
    assert major_axis_length(regions.regions[1]) * 0.5 == pytest.approx(280, abs=0.5)
    gt = pd.DataFrame(
        {"slide_id": ["a", "a"], "x1": [0.0, 0.0], "y1": [0.0, 0.0], "x2": [1.0, 1.0],
         "y2": [1.0, 1.0], "geometry": [small, big]}
    )  # fmt: skip
    missed = boxes([("a", *at(1000, 1000), 0.9)])
    _, summary = detection_report(missed, gt, ["a"], mpps={"a": 0.5})
    # the one counted lesion is missed, the hit on the small one costs nothing
    assert (summary["froc_lesions"], summary["froc_itc"]) == (1, 1)
    assert summary["froc_mean"] == 0.0 and summary["froc_fps"].tolist() == [0.0]
    found = boxes([("a", *at(5000, 5000), 0.8)])
    _, summary = detection_report(found, gt, ["a"], mpps={"a": 0.5})
    assert summary["froc_mean"] == 1.0  # the missed small one is not missed


def test_camelyon_lesions_closer_than_the_growth_are_one() -> None:
    # two 500 um squares 100 um apart at 1 um/px: their grown regions touch, one lesion
    a, b = shapely.box(0, 0, 500, 500), shapely.box(600, 0, 1100, 500)
    regions, best, fp = camelyon(
        [a, b, shapely.box(5000, 0, 5500, 500)], [(250, 250), (850, 250)], [0.9, 0.8], 1.0
    )
    assert len(regions.regions) == 2 and regions.region_of.tolist() == [0, 0, 1]
    assert sorted(best.tolist()) == [-np.inf, 0.9] and fp.size == 0


def test_camelyon_rule_needs_mpp_and_reports_classes() -> None:
    gt = boxes([("a", 0, 0, 100, 100), ("a", 500, 500, 600, 600)]).assign(class_name=["x", "y"])
    pred = boxes([("a", 0, 0, 100, 100, 0.9)])
    with pytest.raises(ValueError, match="slide a: the camelyon16 FROC rule needs"):
        detection_report(pred, gt, ["a"])
    _, summary = detection_report(pred, gt, ["a"], mpps=COARSE)
    assert summary["by_class"] == {
        "x": {"n": 1, "recall": 1.0, "froc_hit": 1.0},
        "y": {"n": 1, "recall": 0.0, "froc_hit": 0.0},
    }
    _, old = detection_report(pred, gt, ["a"], froc_rule="box_centre")  # no mpp needed
    assert old["froc_rule"] == "box_centre" and old["froc_mean"] == 0.5
    with pytest.raises(ValueError, match="unknown FROC rule"):
        detection_report(pred, gt, ["a"], froc_rule="centre")


def test_major_axis_length_as_regionprops() -> None:
    assert major_axis_length(shapely.Point(0, 0).buffer(50, quad_segs=256)) == pytest.approx(
        100, rel=1e-4
    )
    assert major_axis_length(shapely.box(0, 0, 30, 10)) == pytest.approx(2 * 30 / 3**0.5)
    ring = shapely.box(0, 0, 100, 100).difference(shapely.box(10, 10, 90, 90))
    assert major_axis_length(ring) == pytest.approx(4 * ((100**4 - 80**4) / 12 / 3600) ** 0.5)


def test_patch_metrics() -> None:
    y = [0, 0, 1, 1, 1]
    s = [0.1, 0.6, 0.4, 0.8, 0.9]
    m = patch_metrics(y, s)
    assert m["auc"] == pytest.approx(5 / 6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(0.6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert (m["n"], m["n_pos"]) == (5, 3)
    single = patch_metrics([1, 1], [0.2, 0.9])
    assert math.isnan(single["auc"]) and single["recall"] == 0.5
