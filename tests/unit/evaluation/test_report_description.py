"""The report's workflow page: headline numbers, slides left out, rendered as Snakemake does."""

from __future__ import annotations

import pandas as pd
from docutils.core import publish_parts
from jinja2 import Environment

from histodetect.evaluation.report import slide_label_description, workflow_description

METRICS = {
    "n_slides": 4,
    "mean_f2": 0.61234,
    "oof_mean_f2": 0.5,
    "ap50": 0.4321,
    "froc_mean": 0.777,
    "slide_auc": None,
    "patch": {"auc": 0.93},
}
TILING = pd.DataFrame(
    {
        "slide_id": ["s_1", "s_2", "blank", "{{ broken }}"],
        "path": ["a.tiff", "b.tiff", "blank.tiff", "c.svs"],
        "tiles": [1200, 34, 0, 0],
        "status": ["ok", "ok", "no tissue", "failed"],
        "error": ["", "", "", "truncated or corrupt file *x* | {% y %}"],
    }
)
CONFIG = {
    "folds": 3,
    "tiling": {"tile_um": 128.0, "target_mpp": 2.0, "target_mag": None},
    "train": {"backbone": "resnet18"},
    "evaluate": {"giou": 0.5, "beta": 2},
}
LINKS = """
.. _Metrics: javascript:app.showCategory('Metrics')
.. _Detection: javascript:app.showCategory('Detection')
.. _Tiling: javascript:app.showCategory('Tiling')
.. _Training: javascript:app.showCategory('Training')
"""


def as_snakemake_renders(text: str) -> str:
    """Jinja with Snakemake's settings, then docutils to HTML (snakemake/report/__init__.py)."""
    jinja = Environment(trim_blocks=True, lstrip_blocks=True).from_string(text + LINKS)
    html = publish_parts(
        jinja.render(snakemake=None, categories={}, files=[]),
        writer="html",
        settings_overrides={"report_level": 2, "halt_level": 2},  # a warning fails the test
    )
    return html["html_body"]


def test_page_gives_the_headline_numbers() -> None:
    html = as_snakemake_renders(workflow_description(METRICS, TILING, CONFIG))
    for name, value in [
        ("F2", "0.612"),
        ("F2 out of fold", "0.500"),
        ("AP50", "0.432"),
        ("FROC", "0.777"),
        ("Slide AUC", "n/a"),
        ("Patch AUC", "0.930"),
        ("Tiles", "1,234"),
        ("Slides left out", "2 of 4"),
    ]:
        assert f"<td>{name}</td>\n<td>{value}</td>" in html, name
    assert "mean per-slide F2 (beta 2) of the boxes at GIoU &gt; 0.5" in html
    assert "over 4 test slides" in html and "could not be read (listed below)" in html
    assert "3 tile classifiers (resnet18" in html and "128 um tiles at 2 um/px" in html


def test_slides_left_out_are_listed_as_they_are() -> None:
    html = as_snakemake_renders(workflow_description(METRICS, TILING, CONFIG))
    assert "<li>blank: no tissue tiles</li>" in html
    assert "<li>{{ broken }}: truncated or corrupt file *x* | {% y %}</li>" in html
    assert "s_1" not in html  # tiled slides are not listed
    assert "javascript:app.showCategory('Metrics')" in html


def test_target_magnification_and_no_slide_left_out() -> None:
    config = {**CONFIG, "tiling": {"tile_um": 256.0, "target_mpp": 2.0, "target_mag": 20.0}}
    ok = TILING[TILING.status == "ok"]
    html = as_snakemake_renders(workflow_description(METRICS, ok, config))
    assert "256 um tiles at 0.5 um/px" in html
    assert "<td>0 of 2</td>" in html
    assert "Slides left out of the cohort" not in html and "listed below" not in html


MIL_METRICS = {
    "task": "ordinal", "model": "abmil", "n_test_bags": 28, "n_oof_bags": 67,
    "auc": 0.7326, "auc_ci95": [0.5208, 0.9027], "balanced_accuracy": 0.6738,
    "oof_auc": 0.9561, "oof_balanced_accuracy": 0.9122, "qwk": 0.41, "oof_qwk": None,
}  # fmt: skip


def test_slide_label_page_gives_the_bag_numbers_and_the_encoder() -> None:
    config = {**CONFIG, "features": {"model": "resnet18", "source": "auto"}, "mil": {"bag": "patient"}}  # fmt: skip
    text = slide_label_description(
        MIL_METRICS, TILING, config, encoder="the cohort's own self-supervised encoder"
    )
    # Snakemake's target of the category (its name url-encoded)
    link = "\n.. _Slide labels (MIL): javascript:app.showCategory('Slide%20labels%20%28MIL%29')\n"
    html = as_snakemake_renders(text + link)
    for name, value in [
        ("Test AUC", "0.733 (95% CI 0.521-0.903)"),
        ("Test balanced accuracy", "0.674"),
        ("Out-of-fold AUC", "0.956"),
        ("Test QWK", "0.410"),
        ("Out-of-fold QWK", "n/a"),
    ]:
        assert f"<td>{name}</td>\n<td>{value}</td>" in html, name
    assert "28 held-out test bags" in html and "each of the 67 training bags" in html
    assert "ordinal label of each bag (patient)" in html
    assert "resnet18: the cohort's own self-supervised encoder" in html
    assert "<li>blank: no tissue tiles</li>" in html
    assert "showCategory('Slide%20labels%20%28MIL%29')\">Slide labels (MIL)</a>" in html


def test_slide_label_page_of_a_number_gives_its_errors_and_correlations() -> None:
    metrics = {"task": "regression", "model": "abmil", "n_test_bags": 5, "n_oof_bags": 20}
    metrics |= {"mae": 1.5, "mae_ci95": [1.0, 2.0], "rmse": 2.0, "r2": 0.5, "pearson": 0.8}
    metrics |= {"oof_mae": 1.25, "oof_r2": 0.6, "oof_pearson": 0.75}
    link = "\n.. _Slide labels (MIL): javascript:app.showCategory('Slide%20labels%20%28MIL%29')\n"
    html = as_snakemake_renders(slide_label_description(metrics, TILING, CONFIG) + link)
    for name, value in [("Test MAE", "1.500 (95% CI 1.000-2.000)"), ("Test R2", "0.500"),
                        ("Out-of-fold Pearson", "0.750"), ("Out-of-fold RMSE", "n/a")]:  # fmt: skip
        assert f"<td>{name}</td>\n<td>{value}</td>" in html, name
    assert "AUC" not in html and "predicted against true" in html


def test_slide_label_page_of_survival_gives_the_concordance_and_the_log_rank_p() -> None:
    metrics = {"task": "survival", "model": "abmil", "n_test_bags": 5, "n_oof_bags": 20}
    metrics |= {"cindex": 0.75, "cindex_ci95": [0.6, 0.9], "cindex_uno": 0.7, "logrank_p": 0.03}
    metrics |= {"oof_cindex": 0.68, "oof_cindex_uno": 0.66, "ibs": 0.125}
    link = "\n.. _Slide labels (MIL): javascript:app.showCategory('Slide%20labels%20%28MIL%29')\n"
    html = as_snakemake_renders(slide_label_description(metrics, TILING, CONFIG) + link)
    for name, value in [("Test c-index", "0.750 (95% CI 0.600-0.900)"),
                        ("Test Uno's c-index", "0.700"), ("Out-of-fold c-index", "0.680"),
                        ("Out-of-fold log-rank p", "n/a"),
                        ("Test integrated Brier score", "0.125")]:  # fmt: skip
        assert f"<td>{name}</td>\n<td>{value}</td>" in html, name
    assert "AUC" not in html and "Kaplan-Meier of the risk groups" in html
