"""Where things lie on a synthetic slide: tissue pieces, lesions and look-alikes on a coarse grid.

Shapes are drawn on a coarse grid (one cell per ``COARSE`` level-0 pixels), smoothed, and read
back at full resolution by bilinear upsampling (:func:`bilinear_grid`, :func:`bilinear_points`).
:class:`SyntheticSlideSpec` holds everything a slide's rendering depends on.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

COARSE = 16
"""Level-0 pixels per coarse-grid cell (tissue and lesion shapes are drawn on this grid)."""

_LESION_GAP_UM = 200.0
_LESION_MARGIN_UM = 60.0
_MIN_LESION_UM = 80.0


@dataclass(frozen=True)
class SyntheticSlideSpec:
    """Everything needed to render one synthetic slide (rendering is a pure function of it).

    Attributes:
        slide_id: Slide identifier; the file is ``<slide_id>.tiff``.
        patient_id: Patient the slide belongs to.
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        mpp: Microns per level-0 pixel.
        n_lesions: Number of lesions requested (0 for a negative slide).
        lesion_size_um: Range of the lesion diameter in microns (shrunk if it does not fit).
        seed: Seed of the slide's random generator.
        lesion_contrast: How far lesion stroma and nuclei are from normal colour (1: the
            full lesion colour, 0: normal colour; lesions stay dense in nuclei).
        n_mimics: Look-alike regions that are not lesions: patches as dense in nuclei as a
            lesion, in normal colour (dense benign nuclei), placed away from the lesions.
        mimic_contrast: How far the look-alikes' stroma and nuclei are shifted towards lesion
            colour (0: normal colour; a value near a faint lesion's contrast makes them atypical
            benign regions that only nucleus size tells apart).
    """

    slide_id: str
    patient_id: str
    width: int
    height: int
    mpp: float
    n_lesions: int
    lesion_size_um: tuple[float, float]
    seed: int
    lesion_contrast: float = 1.0
    n_mimics: int = 0
    mimic_contrast: float = 0.0


def _axis(n_coarse: int, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear indices and weights mapping full-res coordinates onto coarse cell centres."""
    u = (coords.astype(np.float64) + 0.5) / COARSE - 0.5
    i0 = np.clip(np.floor(u).astype(np.intp), 0, n_coarse - 2)
    f = np.clip(u - i0, 0.0, 1.0).astype(np.float32)
    return i0, f


def bilinear_grid(c: np.ndarray, ys: np.ndarray, x0: int, x1: int) -> np.ndarray:
    """Upsample coarse field ``c`` bilinearly at full-res rows ``ys`` and columns ``[x0, x1)``.

    Coarse cell ``j`` is centred on level-0 column ``j * COARSE + COARSE / 2 - 0.5``; values
    beyond the outer centres are clamped. Columns use repeats instead of gathers (fast).
    """
    i0, fy = _axis(c.shape[0], ys)
    rows = c[i0] * (1 - fy)[:, None] + c[i0 + 1] * fy[:, None]
    rows = np.concatenate([rows[:, :1], rows, rows[:, -1:]], axis=1)
    half = COARSE // 2
    j0, j1 = (x0 + half) // COARSE, (x1 + half) // COARSE + 2
    sl = slice(x0 + half - j0 * COARSE, x1 + half - j0 * COARSE)
    left = np.repeat(rows[:, j0:j1], COARSE, axis=1)[:, sl]
    right = np.repeat(rows[:, j0 + 1 : j1 + 1], COARSE, axis=1)[:, sl]
    fx = ((np.arange(x0, x1) + half) % COARSE + 0.5).astype(np.float32) / COARSE
    right -= left
    right *= fx
    left += right
    return left


def bilinear_points(c: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample coarse field ``c`` bilinearly at full-res points ``(ys[i], xs[i])``."""
    i0, fy = _axis(c.shape[0], ys)
    j0, fx = _axis(c.shape[1], xs)
    top = c[i0, j0] * (1 - fx) + c[i0, j0 + 1] * fx
    bot = c[i0 + 1, j0] * (1 - fx) + c[i0 + 1, j0 + 1] * fx
    return top * (1 - fy) + bot * fy


def tile_cols(rows: np.ndarray, offset: int, width: int) -> np.ndarray:
    """Repeat a periodic ``(h, t)`` texture along columns; columns ``[offset, offset + width)``."""
    reps = -(-(offset + width) // rows.shape[1])
    return np.tile(rows, (1, reps))[:, offset : offset + width]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation (float32)."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return n / max(float(n.std()), 1e-6)


def _largest_filled(mask: np.ndarray, keep_frac: float = 0.0) -> np.ndarray:
    """Keep the largest component (and those at least ``keep_frac`` of it), holes filled."""
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    keep = (
        np.flatnonzero(sizes >= sizes.max() * keep_frac)
        if keep_frac > 0
        else np.array([sizes.argmax()])
    )
    return ndimage.binary_fill_holes(np.isin(lab, keep + 1))


def tissue_field(rng: np.random.Generator, hc: int, wc: int) -> np.ndarray:
    """Coarse tissue mask: one to three irregular blobs covering ~38-52% with a border margin."""
    yy, xx = np.mgrid[0:hc, 0:wc].astype(np.float32)
    size = float(min(hc, wc))
    margin = max(2.0, 0.04 * size)
    for _ in range(50):
        n_pieces = int(rng.integers(1, 4))
        target = float(rng.uniform(0.38, 0.52))
        field = np.full((hc, wc), -np.inf, np.float32)
        area = target * hc * wc / n_pieces
        centres: list[tuple[float, float]] = []
        for _p in range(n_pieces):
            aspect = float(rng.uniform(0.55, 1.0))
            a = math.sqrt(area / (math.pi * aspect)) * 1.05
            b = a * aspect
            theta = float(rng.uniform(0, math.pi))
            for _try in range(100):
                cy = float(rng.uniform(margin + b * 0.8, hc - margin - b * 0.8))
                cx = float(rng.uniform(margin + b * 0.8, wc - margin - b * 0.8))
                if all(math.hypot(cy - y, cx - x) > 0.9 * a for y, x in centres):
                    break
            centres.append((cy, cx))
            ct, st = math.cos(theta), math.sin(theta)
            u = ((xx - cx) * ct + (yy - cy) * st) / a
            v = (-(xx - cx) * st + (yy - cy) * ct) / b
            np.maximum(field, 1.0 - np.sqrt(u * u + v * v), out=field)
        field += 0.28 * smooth_noise(rng, (hc, wc), 0.08 * size)
        field += 0.10 * smooth_noise(rng, (hc, wc), 0.025 * size)
        border = np.minimum(np.minimum(yy, hc - 1 - yy), np.minimum(xx, wc - 1 - xx))
        taper = np.clip(1.0 - (border - margin) / (1.5 * margin), 0.0, 1.0)
        field -= 1.5 * taper * taper  # pieces round off before the margin
        field[border < margin] = -np.inf
        thr = np.quantile(
            field[np.isfinite(field)], 1.0 - target * hc * wc / np.isfinite(field).sum()
        )
        mask = _largest_filled(field > thr, keep_frac=0.08)
        if 0.35 <= mask.mean() <= 0.6:
            return mask
    return mask


def _lesion_shape(rng: np.random.Generator, diameter: float) -> np.ndarray:
    """Coarse lesion blob (bool, cropped to its bounding box) filling 70-90% of that box."""
    best, best_err = None, np.inf
    for _ in range(30):
        a = diameter / 2
        b = a * float(rng.uniform(0.6, 1.0))
        theta = float(rng.uniform(0, math.pi))
        n = math.ceil(diameter * 1.6) + 4
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) - (n - 1) / 2
        ct, st = math.cos(theta), math.sin(theta)
        u = (xx * ct + yy * st) / a
        v = (-xx * st + yy * ct) / b
        f = 1.0 - np.sqrt(u * u + v * v)
        f += 0.15 * smooth_noise(rng, (n, n), max(1.0, diameter / 8))
        m = _largest_filled(f > 0)
        ys, xs = np.nonzero(m)
        if ys.size == 0:
            continue
        m = m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        fill = float(m.mean())
        err = 0.0 if 0.7 <= fill <= 0.9 else min(abs(fill - 0.7), abs(fill - 0.9))
        if err < best_err:
            best, best_err = m, err
        if err == 0.0:
            break
    assert best is not None
    return best


class NoRoomError(Exception):
    """Not even the smallest lesion fits in this tissue layout."""


def place_lesions(
    rng: np.random.Generator, tissue: np.ndarray, spec: SyntheticSlideSpec
) -> np.ndarray:
    """Coarse lesion mask: ``spec.n_lesions`` blobs inside tissue, ``>= 200 um`` apart."""
    hc, wc = tissue.shape
    lesion = np.zeros((hc, wc), bool)
    if spec.n_lesions == 0:
        return lesion
    um_per_cell = spec.mpp * COARSE
    margin = math.ceil(_LESION_MARGIN_UM / um_per_cell) + 1
    gap = math.ceil(_LESION_GAP_UM / um_per_cell) + 2
    allowed = ndimage.binary_erosion(tissue, iterations=margin, border_value=0)
    lo, hi = spec.lesion_size_um
    for k in range(spec.n_lesions):
        diameter_um = float(rng.uniform(lo, hi))
        placed = False
        while diameter_um >= min(_MIN_LESION_UM, lo):
            shape = _lesion_shape(rng, diameter_um / um_per_cell)
            h, w = shape.shape
            bad = np.zeros((hc + 1, wc + 1), np.int64)
            bad[1:, 1:] = np.cumsum(np.cumsum(~allowed, 0), 1)
            if h < hc and w < wc:
                # Number of disallowed cells under each h x w window (top-left at r, c).
                s = bad[h:, w:] - bad[:-h, w:] - bad[h:, :-w] + bad[:-h, :-w]
                ok = np.flatnonzero(s == 0)
                if ok.size:
                    r, c = divmod(int(ok[rng.integers(ok.size)]), s.shape[1])
                    lesion[r : r + h, c : c + w] |= shape
                    allowed[max(0, r - gap) : r + h + gap, max(0, c - gap) : c + w + gap] = False
                    placed = True
                    break
            diameter_um *= 0.85
        if not placed:
            if k == 0:
                raise NoRoomError(spec.slide_id)
            break
    return lesion


def place_mimics(tissue: np.ndarray, lesion: np.ndarray, spec: SyntheticSlideSpec) -> np.ndarray:
    """Coarse mask of ``spec.n_mimics`` look-alike regions, in tissue and away from lesions.

    Drawn from a generator of their own, so a cohort without mimics renders as before.
    """
    if spec.n_mimics == 0:
        return np.zeros_like(lesion)
    gap = math.ceil(_LESION_GAP_UM / (spec.mpp * COARSE)) + 2
    free = tissue & ~ndimage.binary_dilation(lesion, iterations=gap)
    rng = np.random.default_rng([spec.seed, 1])
    lo, hi = spec.lesion_size_um
    plan = dataclasses.replace(spec, n_lesions=spec.n_mimics, lesion_size_um=(0.5 * lo, 0.8 * hi))
    try:
        return place_lesions(rng, free, plan)
    except NoRoomError:
        return np.zeros_like(lesion)


def tissue_truth(soft: np.ndarray) -> np.ndarray:
    """Binary coarse mask matching the full-resolution rendering (``soft > 0.5``)."""
    return soft > 0.5
