"""Column names of the tables passed between rules (one place, so rules agree).

Tile table (``results/tiles/{slide}.parquet``), one row per kept tissue tile:
    slide_id  str    slide identifier from the sample sheet
    x, y      int64  top-left corner in level-0 pixels
    size      int64  tile side in level-0 pixels (square tiles)
    row, col  int64  grid indices: x = col * stride, y = row * stride (origin 0, 0)
    level     int64  pyramid level the pixels are read from
    read_px   int64  tile side in pixels at that level (resized to ``tile_px`` if different)
    tile_px   int64  tile side in pixels given to the model
    tissue    float  fraction of the tile covered by the tissue mask
    stride    int64  grid step in level-0 pixels (equal to ``size`` unless tiles overlap or gap)
    mpp       float  microns per pixel of ``level`` (before any resize to ``tile_px``)
Labelled tile table (``results/labels/{slide}.parquet``) adds:
    iou       float  largest IoU of the tile with a ground-truth box
    coverage  float  fraction of the tile inside the union of ground-truth boxes
    label     int64  1 lesion (with ``labels.classes``: 1 + index of the class), 0 background,
                     -1 ignored (between the thresholds)
    class_name str   with ``labels.classes``: background, ignored or the class of label 1, 2, ...
Training tables add ``path`` (slide file), ``patient_id`` and ``fold``.
Tile score table (``results/scores/{slide}.parquet``): the tile table plus
    prob      float  ensemble lesion probability (multi-class: one minus the background's)
    prob_<c>  float  multi-class models only: the ensemble probability of each class ``c``
                     (``background`` and each of ``labels.classes``)
    call_at_oof_threshold  int  1 when ``prob`` is at or above the ensemble's out-of-fold
                     threshold (``results/models/threshold.json``), else 0; multi-class models:
    call_at_oof_priors     str  the class of largest ``prob_<c> / prior`` (out-of-fold priors);
                     not in the out-of-fold scores (``results/oof/scores``), made before it
"""

import re

TILE_COLUMNS = [
    "slide_id", "x", "y", "size", "row", "col", "level", "read_px", "tile_px", "tissue",
    "stride", "mpp",
]  # fmt: skip
LABEL_COLUMNS = [*TILE_COLUMNS, "iou", "coverage", "label"]
BOX_COLUMNS = ["x1", "y1", "x2", "y2"]


def class_prob_column(name: str) -> str:
    """Column of a class's probability in a tile score table: ``prob_<class>`` (characters
    other than letters, digits, ``_.-`` become ``_``)."""
    return "prob_" + re.sub(r"[^\w.-]", "_", name)
