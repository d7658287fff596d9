"""Pictures laid on a slide thumbnail (matplotlib Agg, no pyplot state): the figure, a layer
of one value per tile-grid cell with its colour bar, and PNG writing; and titles fitted to a
width (measured as Agg draws them), so that no title is cut at the picture's sides.

The axes are in thumbnail pixels (y down); a level-0 position ``p`` is ``p / downsample``
there. Shared by the box overlays (detection) and the attention maps (mil).
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import MaxNLocator

from histodetect.io import atomic_path

MAX_WIDTH_PX = 1600
"""Widest figure drawn (a larger thumbnail is scaled down, a smaller one up to 400 px)."""
DPI = 100
TITLE_PX = 30
"""Height of a thumbnail's title strip of one line (more lines: taller)."""
TITLE_PAD_PX = 6
"""Margin of a title at each side (and above and below it in a thumbnail's strip)."""
LINE_SPACING = 1.2
"""Matplotlib's default line spacing, in font sizes."""


@functools.cache
def _renderer() -> RendererAgg:
    return RendererAgg(1, 1, DPI)


def text_width_px(text: str, fontsize: float) -> float:
    """Width in pixels of one line of ``text`` at ``fontsize`` points, as Agg draws it at
    :data:`DPI` in the default font."""
    props = FontProperties(size=fontsize)
    return _renderer().get_text_width_height_descent(text, props, ismath=False)[0]


def line_px(fontsize: float) -> float:
    """Height in pixels of one line of text at ``fontsize`` points (at :data:`DPI`)."""
    return fontsize * LINE_SPACING * DPI / 72


def _fitting_prefix(word: str, width_px: float, fontsize: float) -> int:
    """Length of the longest head of ``word`` (at least 1 character) within ``width_px``,
    cut after its last ``-``, ``_`` or ``.`` where it has one (an id's parts stay whole)."""
    lo, hi = 1, len(word)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if text_width_px(word[:mid], fontsize) <= width_px else (lo, mid - 1)
    mark = max(word.rfind(c, 1, lo) for c in "-_.")
    return mark + 1 if mark > 0 else lo


def wrap_px(text: str, width_px: float, fontsize: float) -> str:
    """``text`` broken into lines that each measure at most ``width_px`` at ``fontsize``:
    at spaces, and inside a word only where the word alone is wider (a long slide id)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            trial = f"{line} {word}" if line else word
            if text_width_px(trial, fontsize) <= width_px:
                line = trial
                continue
            if line:
                lines.append(line)
            line = word
            while len(line) > 1 and text_width_px(line, fontsize) > width_px:
                cut = _fitting_prefix(line, width_px, fontsize)
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return "\n".join(lines)


def fit_text(text: str, width_px: float, fontsize: float, min_fontsize: float) -> tuple[str, float]:
    """``text`` and a font size at which it fits ``width_px``: the largest size down to
    ``min_fontsize`` (in half points) at which each of its lines fits whole, else
    ``min_fontsize`` with the lines wrapped (:func:`wrap_px`)."""
    size = fontsize
    while True:
        if all(text_width_px(line, size) <= width_px for line in text.split("\n")):
            return text, size
        if size - 0.5 < min_fontsize:
            return wrap_px(text, width_px, size), size
        size -= 0.5


def save_png(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Render ``fig`` with Agg and write it atomically as PNG."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def thumbnail_figure(thumbnail: np.ndarray, title: str = "") -> tuple[Figure, Axes]:
    """A figure of the thumbnail filling its width, ``title`` in a strip above it: shrunk to
    fit the width (down to 8 points), else wrapped, with the strip as tall as its lines.

    The axes' limits are fixed to the thumbnail (autoscaling off), so layers drawn later with
    their own extents do not move them.
    """
    img = np.asarray(thumbnail)
    h, w = img.shape[:2]
    width_px = min(MAX_WIDTH_PX, max(w, 400))
    title_px, size = 0, 10.0
    if title:
        title, size = fit_text(title, width_px - 2 * TITLE_PAD_PX, 10.0, 8.0)
        lines = title.count("\n") + 1
        title_px = max(TITLE_PX, math.ceil(lines * line_px(size)) + 2 * TITLE_PAD_PX)
    height_px = max(1, round(width_px * h / w)) + title_px
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1 - title_px / height_px))
    ax.imshow(img, extent=(0, w, h, 0), interpolation="antialiased")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_autoscale_on(False)
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=size, y=1 - 0.5 * title_px / height_px, va="center")
    return fig, ax


def draw_value_grid(
    fig: Figure,
    ax: Axes,
    values: np.ndarray,
    left: float,
    top: float,
    cell: float,
    *,
    label: str,
    vmin: float = 0.0,
    vmax: float = 1.0,
    alpha: float = 0.45,
    cmap: str = "viridis",
) -> None:
    """``values`` ``(rows, cols)`` as cells of ``cell`` thumbnail px from ``(left, top)``,
    coloured by ``cmap`` (NaN: transparent), with a colour bar named ``label`` at the bottom
    left (its ticks and name above it, inside the picture)."""
    grid = np.ma.masked_invalid(np.asarray(values, dtype=np.float64))
    rows, cols = grid.shape
    image = ax.imshow(
        grid,
        cmap=colormaps[cmap].with_extremes(bad=(0, 0, 0, 0)),
        vmin=vmin,
        vmax=vmax,
        alpha=alpha,
        interpolation="nearest",
        extent=(left, left + cols * cell, top + rows * cell, top),
    )
    cax = ax.inset_axes((0.04, 0.015, 0.3, 0.018))
    bar = fig.colorbar(image, cax=cax, orientation="horizontal")
    bar.ax.xaxis.set_major_locator(MaxNLocator(3))  # few ticks: they fit a 120 px bar
    bar.ax.xaxis.set_ticks_position("top")  # ticks and name above the bar: inside the figure
    bar.ax.tick_params(labelsize=7)
    bar.ax.set_title(label, fontsize=8, loc="left")
