"""Pictures laid on a slide thumbnail (matplotlib Agg, no pyplot state): the figure, a layer
of one value per tile-grid cell with its colour bar, and PNG writing.

The axes are in thumbnail pixels (y down); a level-0 position ``p`` is ``p / downsample``
there. Shared by the box overlays (detection) and the attention maps (mil).
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from histodetect.io import atomic_path

MAX_WIDTH_PX = 1600
"""Widest figure drawn (a larger thumbnail is scaled down, a smaller one up to 400 px)."""
DPI = 100
TITLE_PX = 30


def save_png(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Render ``fig`` with Agg and write it atomically as PNG."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def thumbnail_figure(thumbnail: np.ndarray, title: str = "") -> tuple[Figure, Axes]:
    """A figure of the thumbnail filling its width, ``title`` in a strip above it.

    The axes' limits are fixed to the thumbnail (autoscaling off), so layers drawn later with
    their own extents do not move them.
    """
    img = np.asarray(thumbnail)
    h, w = img.shape[:2]
    width_px = min(MAX_WIDTH_PX, max(w, 400))
    title_px = TITLE_PX if title else 0
    height_px = max(1, round(width_px * h / w)) + title_px
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1 - title_px / height_px))
    ax.imshow(img, extent=(0, w, h, 0), interpolation="antialiased")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_autoscale_on(False)
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.5 * title_px / height_px, va="center")
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
