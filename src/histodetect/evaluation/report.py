"""The first page of ``snakemake --report``: what the run did and its headline numbers."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from histodetect.evaluation.detection_metrics import FROC_FPS


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _plain(text: object) -> str:
    """Text shown as is by reStructuredText: one line, markup characters escaped."""
    line = " ".join(str(text).split()).replace("\\", "\\\\")
    for char in "*`|_":
        line = line.replace(char, "\\" + char)
    return line


def headline_table(rows: list[tuple[str, str, str]], widths: tuple[int, int, int]) -> list[str]:
    """The rows ``(measure, value, what it is)`` as a reStructuredText list table."""
    lines = [
        ".. list-table:: Headline numbers",
        "   :header-rows: 1",
        f"   :widths: {' '.join(map(str, widths))}",
        "",
        "   * - Measure",
        "     - Value",
        "     - What it is",
    ]
    for name, value, what in rows:
        lines += [f"   * - {name}", f"     - {value}", f"     - {what}"]
    return [*lines, ""]


def left_out_lines(tiling: pd.DataFrame) -> list[str]:
    """The slides left out of the cohort (``tiling_summary.tsv``), each with its cause."""
    bad = tiling[tiling["status"] != "ok"]
    if not len(bad):
        return []
    lines = ["Slides left out of the cohort:", ""]
    for r in bad.itertuples():
        cause = r.error if r.status == "failed" else "no tissue tiles"
        lines.append(f"- {_plain(r.slide_id)}: {_plain(cause)}")
    return [*lines, ""]


def headline_rows(
    metrics: dict[str, Any], tiling: pd.DataFrame, evaluate: dict[str, Any]
) -> list[tuple[str, str, str]]:
    """``(name, value, what it is)`` of the run's headline numbers, in the order they are shown."""
    n_test = int(metrics.get("n_slides", 0))
    fps = ", ".join(f"{f:g}" for f in FROC_FPS)
    left_out = int((tiling["status"] != "ok").sum())
    ok = len(tiling) - left_out
    return [
        (
            "F2",
            _number(metrics.get("mean_f2")),
            f"mean per-slide F2 (beta {evaluate.get('beta', 2):g}) of the boxes at GIoU > "
            f"{evaluate.get('giou', 0.5):g}, DigiLut's score, over {n_test} test slides",
        ),
        (
            "F2 out of fold",
            _number(metrics.get("oof_mean_f2")),
            "the same on the training slides, each scored by the fold model that did not train on it",
        ),
        ("AP50", _number(metrics.get("ap50")), "average precision of the boxes at IoU 0.5"),
        (
            "FROC",
            _number(metrics.get("froc_mean")),
            f"mean lesion sensitivity at {fps} false positives per slide (Camelyon16)",
        ),
        (
            "Slide AUC",
            _number(metrics.get("slide_auc")),
            "ROC AUC of the slide score: slides with a lesion against slides without",
        ),
        (
            "Patch AUC",
            _number((metrics.get("patch") or {}).get("auc")),
            "ROC AUC of the tile probabilities against the tile labels",
        ),
        (
            "Tiles",
            f"{int(tiling['tiles'].sum()):,}",
            f"tissue tiles of the {ok} slides tiled",
        ),
        (
            "Slides left out",
            f"{left_out} of {len(tiling)}",
            "slides with no tissue tiles or that could not be read"
            + (" (listed below)" if left_out else ""),
        ),
    ]


def workflow_description(
    metrics: dict[str, Any], tiling: pd.DataFrame, config: dict[str, Any]
) -> str:
    """reStructuredText of the report's workflow page.

    ``metrics`` is ``results/metrics/detection.json``, ``tiling`` the table of
    ``results/qc/tiling_summary.tsv`` (with its ``status`` and ``error`` columns) and ``config``
    the run's config. Links to the report's categories (``Metrics_``, ``Detection_``,
    ``Tiling_``, ``Training_``) resolve in Snakemake's report. Snakemake renders the page with Jinja first:
    the text is inside a ``raw`` block, so slide names and errors are shown as they are.
    """
    rows = headline_rows(metrics, tiling, config.get("evaluate", {}))
    t, train = config.get("tiling", {}), config.get("train", {})
    mpp = t.get("target_mpp") if t.get("target_mag") is None else 10 / t["target_mag"]
    lines = [
        "{% raw %}",
        "histodetect: lesion detection",
        "=============================",
        "",
        f"An ensemble of {config.get('folds', '?')} tile classifiers "
        f"({_plain(train.get('backbone', '?'))}, one per fold of the training patients) scores "
        f"{t.get('tile_um', '?'):g} um tiles at {mpp:g} um/px; lesion boxes come from the heatmaps. "
        "The numbers are measured on the held-out test patients' slides.",
        "",
        *headline_table(rows, (18, 10, 72)),
        *left_out_lines(tiling),
        "Details: Metrics_ (per-slide scores, FROC and ROC curves, box tuning), Detection_ "
        "(heatmap and boxes on each test slide), Tiling_ (tissue and tiles of every slide) and "
        "Training_ (curves of each fold).",
        "{% endraw %}",
        "",
    ]
    return "\n".join(lines)


def class_rows(metrics: dict[str, Any], ci: Callable[[str], str]) -> list[tuple[str, str, str]]:
    """The headline rows of a class task (AUC, balanced accuracy; QWK for grades)."""
    rows = [
        ("Test AUC", _number(metrics.get("auc")) + ci("auc"),
         f"the fold models' mean over the {metrics.get('n_test_bags', 0)} held-out test bags"),
        ("Test balanced accuracy", _number(metrics.get("balanced_accuracy")) + ci("balanced_accuracy"),
         "at the decision chosen on the training bags' out-of-fold scores"),
        ("Out-of-fold AUC", _number(metrics.get("oof_auc")),
         f"each of the {metrics.get('n_oof_bags', 0)} training bags scored by the fold model blind to it"),
        ("Out-of-fold balanced accuracy", _number(metrics.get("oof_balanced_accuracy")), ""),
    ]  # fmt: skip
    if metrics.get("task") == "ordinal":
        rows += [("Test QWK", _number(metrics.get("qwk")), "quadratic weighted kappa"),
                 ("Out-of-fold QWK", _number(metrics.get("oof_qwk")), "")]  # fmt: skip
    return rows


def outcome_rows(
    metrics: dict[str, Any], ci: Callable[[str], str], names: tuple[tuple[str, str], ...],
    answer: str,
) -> list[tuple[str, str, str]]:  # fmt: skip
    """Rows ``names`` (key, name) on test then out of fold; ``answer``: what the test bags
    are given (the fold models' mean ...)."""
    n_test, n_oof = metrics.get("n_test_bags", 0), metrics.get("n_oof_bags", 0)
    where = {"": f"the fold models' mean{answer} over the {n_test} held-out test bags",
             "oof_": f"each of the {n_oof} training bags predicted by the fold model blind to it"}  # fmt: skip
    return [
        (f"{'Out-of-fold' if prefix else 'Test'} {name}",
         _number(metrics.get(prefix + key)) + ci(prefix + key), where[prefix] if i == 0 else "")
        for prefix in ("", "oof_")
        for i, (key, name) in enumerate(names)
    ]  # fmt: skip


def regression_rows(
    metrics: dict[str, Any], ci: Callable[[str], str]
) -> list[tuple[str, str, str]]:
    """The headline rows of a numeric label: MAE, RMSE, R2, Pearson on test and out of fold."""
    names = (("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R2"), ("pearson", "Pearson"))
    return outcome_rows(metrics, ci, names, "")


def survival_rows(metrics: dict[str, Any], ci: Callable[[str], str]) -> list[tuple[str, str, str]]:
    """The headline rows of survival: Harrell's and Uno's c-index, the risk groups'
    log-rank p and the integrated Brier score, on test and out of fold."""
    names = (("cindex", "c-index"), ("cindex_uno", "Uno's c-index"), ("logrank_p", "log-rank p"),
             ("ibs", "integrated Brier score"))  # fmt: skip
    return outcome_rows(metrics, ci, names, " log risk")


def slide_label_description(
    metrics: dict[str, Any], tiling: pd.DataFrame, config: dict[str, Any], *, encoder: str = ""
) -> str:
    """reStructuredText of the report's workflow page for a slide-label run (``mil`` without
    detection): ``metrics`` is ``results/mil/metrics.json``, ``encoder`` where the features'
    encoder came from; links to ``Slide labels (MIL)`` and ``Tiling`` resolve in Snakemake's
    report."""

    def ci(key: str) -> str:
        low_high = metrics.get(f"{key}_ci95")
        return f" (95% CI {_number(low_high[0])}-{_number(low_high[1])})" if low_high else ""

    features = config.get("features", {})
    if metrics.get("task") == "regression":
        rows = regression_rows(metrics, ci)
    elif metrics.get("task") == "survival":
        rows = survival_rows(metrics, ci)
    else:
        rows = class_rows(metrics, ci)
    lines = [
        "{% raw %}",
        "histodetect: slide labels",
        "=========================",
        "",
        f"One {_plain(metrics.get('model', '?'))} model per fold of the training patients "
        f"({config.get('folds', '?')} folds) learns the {metrics.get('task', '?')} label of each "
        f"bag ({_plain(config.get('mil', {}).get('bag', 'slide'))}) from its tiles' features "
        f"({_plain(features.get('model', '?'))}: {_plain(encoder or features.get('source', '?'))}); "
        "no tile is labelled.",
        "",
        *headline_table([(n, v, _plain(w)) for n, v, w in rows], (22, 24, 54)),
        *left_out_lines(tiling),
        "Details: `Slide labels (MIL)`_ ("
        + {
            "regression": "predicted against true",
            "survival": "Kaplan-Meier of the risk groups",
        }.get(metrics.get("task", ""), "ROC, confusion")
        + ", most attended tiles, attention on "
        "every slide) and Tiling_ (tissue and tiles of every slide).",
        "{% endraw %}",
        "",
    ]
    return "\n".join(lines)
