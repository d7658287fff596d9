"""Helpers for the picture tests: the figures a module saves, and where their texts lie."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox


def capture_figures(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[Figure]:
    """The figures ``module`` saves with its ``save_png`` from now on (still written)."""
    saved: list[Figure] = []
    real = module.save_png

    def keep(fig: Figure, path: Any) -> None:
        real(fig, path)
        saved.append(fig)

    monkeypatch.setattr(module, "save_png", keep)
    return saved


def drawn_texts(fig: Figure) -> list[tuple[str, Bbox]]:
    """Each text Agg draws of ``fig`` (titles, labels, ticks shown, legends) with its extent
    in display pixels, recorded while the figure is drawn."""
    drawn: list[tuple[str, Bbox]] = []
    draw = Text.draw

    def record(text: Text, renderer: Any) -> None:
        draw(text, renderer)
        if text.get_visible() and text.get_text():
            drawn.append((text.get_text(), text.get_window_extent(renderer)))

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)  # as save_png draws it
    with mock.patch.object(Text, "draw", record):
        fig.canvas.draw()
    return drawn


def texts_outside(fig: Figure, tolerance_px: float = 0.5) -> list[str]:
    """The drawn texts of ``fig`` whose extent leaves the figure (would be cut)."""
    box = fig.bbox
    return [
        text
        for text, extent in drawn_texts(fig)
        if extent.x0 < box.x0 - tolerance_px
        or extent.y0 < box.y0 - tolerance_px
        or extent.x1 > box.x1 + tolerance_px
        or extent.y1 > box.y1 + tolerance_px
    ]


def data_axes(fig: Figure) -> int:
    """How many of the figure's axes hold data (a panel drawn; colour bars hold none)."""
    return sum(ax.has_data() for ax in fig.axes)
