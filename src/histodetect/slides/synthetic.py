"""Seeded synthetic H&E-like cohort: pyramidal TIFF slides, a sample sheet and lesion boxes.

The demo cohort lets the workflow run end to end on a fresh machine. Each slide shows near-white
glass, one to three irregular pink tissue pieces with sparse small purple nuclei, and (except on
negative slides) one or more lesions: irregular blobs fully inside tissue, with a more purple
stroma crowded with large dark nuclei. The ground truth is the tight level-0 bounding box of each
lesion blob, written in the DigiLut layout (``filename,x1,x2,y1,y2,max_x,max_y``).

Shapes are drawn on a coarse grid (one cell per ``COARSE`` level-0 pixels), smoothed and
bilinearly upsampled; the full-resolution image is then painted in row strips, so no more than the
image itself and a few strip-sized buffers are held. The same seed gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage

from histodetect.io import atomic_path

COARSE = 16
"""Level-0 pixels per coarse-grid cell (tissue and lesion shapes are drawn on this grid)."""

SAMPLE_COLUMNS = ["slide_id", "patient_id", "path", "mpp"]
ANNOTATION_COLUMNS = ["filename", "x1", "x2", "y1", "y2", "max_x", "max_y"]

# Colours (RGB, 0-255).
_GLASS = 240.0
_EOSIN = np.array([230.0, 150.0, 190.0], np.float32)
_EOSIN_VAR = np.array([-7.0, -12.0, -6.0], np.float32)  # per unit of the slow colour field
_LESION_STROMA = np.array([196.0, 118.0, 182.0], np.float32)
_NUCLEUS = np.array([90.0, 50.0, 140.0], np.float32)
_LESION_NUCLEUS = np.array([62.0, 32.0, 112.0], np.float32)

# Nuclei: radius (um) range, area fraction covered, opacity range.
_NORMAL_RADIUS_UM = (3.0, 4.0)
_NORMAL_COVER = 0.06
_LESION_RADIUS_UM = (5.0, 7.0)
_LESION_COVER = 0.45

_LESION_GAP_UM = 200.0
_LESION_MARGIN_UM = 60.0
_MIN_LESION_UM = 80.0
_STRIP_ROWS = 256
_TEXTURE_TILE = 512
_TISSUE_ATTEMPTS = 20


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


@dataclass
class SyntheticSlide:
    """A rendered slide with its ground truth.

    Attributes:
        rgb: Level-0 image, ``(height, width, 3)`` uint8.
        tissue: Tissue mask on the coarse grid (``COARSE`` level-0 px per cell), bool.
        lesion: Lesion mask on the coarse grid, bool.
        boxes: Lesion boxes ``(n, 4)`` int64 as ``x1, y1, x2, y2`` in level-0 px, half-open
            (``x2``/``y2`` are one past the last lesion pixel).
    """

    rgb: np.ndarray
    tissue: np.ndarray
    lesion: np.ndarray
    boxes: np.ndarray


# --------------------------------------------------------------------------- cohort


def plan_cohort(
    *,
    n_slides: int = 12,
    n_patients: int = 6,
    width: int = 6144,
    height: int = 6144,
    mpp: float = 0.5,
    lesions_per_slide: tuple[int, int] = (1, 3),
    lesion_size_um: tuple[float, float] = (500, 1200),
    negative_slides: int = 1,
    seed: int = 0,
    lesion_contrast: tuple[float, float] = (1.0, 1.0),
    mimics_per_slide: int = 0,
    mimic_contrast: float = 0.0,
) -> list[SyntheticSlideSpec]:
    """Decide slide-to-patient assignment, negative slides and per-slide seeds.

    ``lesion_contrast`` is the range a slide's lesion contrast is drawn from and
    ``mimics_per_slide`` the look-alike regions of every slide, ``mimic_contrast`` their
    shift towards lesion colour (see :class:`SyntheticSlideSpec`); their defaults make the
    classic, easy cohort.

    :func:`make_cohort` takes the same keywords, so a workflow can list the slides before
    they exist. Slides go to patients round-robin. Negative slides are chosen at random such that at most
    one patient is left without a lesion slide.

    Raises:
        ValueError: On inconsistent arguments.
    """
    lo, hi = (int(v) for v in lesions_per_slide)
    if n_slides < 1 or n_patients < 1 or n_patients > n_slides:
        raise ValueError(f"need 1 <= n_patients <= n_slides, got {n_patients=} {n_slides=}")
    if not 0 <= negative_slides < n_slides:
        raise ValueError(f"need 0 <= negative_slides < n_slides, got {negative_slides=}")
    if not 1 <= lo <= hi:
        raise ValueError(f"need 1 <= min <= max in lesions_per_slide, got {lesions_per_slide}")
    if not 0 < lesion_size_um[0] <= lesion_size_um[1]:
        raise ValueError(f"bad lesion_size_um {lesion_size_um}")
    if min(width, height) < 16 * COARSE or mpp <= 0:
        raise ValueError(f"slide too small or bad mpp: {width}x{height} at {mpp} um/px")
    if not 0 <= lesion_contrast[0] <= lesion_contrast[1] <= 1:
        raise ValueError(f"need 0 <= min <= max <= 1 in lesion_contrast, got {lesion_contrast}")
    if mimics_per_slide < 0:
        raise ValueError(f"need mimics_per_slide >= 0, got {mimics_per_slide}")
    if not 0 <= mimic_contrast <= 1:
        raise ValueError(f"need 0 <= mimic_contrast <= 1, got {mimic_contrast}")

    rng = np.random.default_rng(seed)
    patient_of = [i % n_patients for i in range(n_slides)]
    left = np.bincount(patient_of, minlength=n_patients)  # lesion slides left per patient
    negatives: set[int] = set()
    for i in rng.permutation(n_slides):
        if len(negatives) == negative_slides:
            break
        p = patient_of[int(i)]
        emptied = int(np.sum(left == 0))
        if left[p] == 1 and emptied >= 1:
            continue  # would leave a second patient without lesions
        left[p] -= 1
        negatives.add(int(i))
    if len(negatives) < negative_slides:
        raise ValueError(
            f"cannot make {negative_slides} negative slides among {n_slides} slides of "
            f"{n_patients} patients with at most one patient lacking a lesion slide"
        )
    n_lesions = rng.integers(lo, hi + 1, size=n_slides)
    seeds = np.random.SeedSequence(seed).generate_state(n_slides, dtype=np.uint64)
    contrast = rng.uniform(float(lesion_contrast[0]), float(lesion_contrast[1]), size=n_slides)
    digits = max(3, len(str(n_slides)))
    pdigits = max(2, len(str(n_patients)))
    return [
        SyntheticSlideSpec(
            slide_id=f"S{i + 1:0{digits}d}",
            patient_id=f"P{patient_of[i] + 1:0{pdigits}d}",
            width=int(width),
            height=int(height),
            mpp=float(mpp),
            n_lesions=0 if i in negatives else int(n_lesions[i]),
            lesion_size_um=(float(lesion_size_um[0]), float(lesion_size_um[1])),
            seed=int(seeds[i]),
            lesion_contrast=float(contrast[i]),
            n_mimics=int(mimics_per_slide),
            mimic_contrast=float(mimic_contrast),
        )
        for i in range(n_slides)
    ]


def make_cohort(
    out_dir: Path, *, tile: int = 256, jpeg_quality: int = 85, **plan: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write a synthetic cohort: ``slides/<slide_id>.tiff``, ``samples.tsv``, ``annotations.csv``.

    Args:
        out_dir: Output folder (created if missing).
        tile: TIFF tile side in pixels.
        jpeg_quality: JPEG quality of the tiles.
        **plan: keywords of :func:`plan_cohort` (slide count and size, patients, mpp, lesions,
            seed); the same seed gives byte-identical files.

    Returns:
        ``(samples, annotations)``: the sample sheet (``slide_id, patient_id, path, mpp``) and
        the boxes (``filename, x1, x2, y1, y2, max_x, max_y``), as written.
    """
    out_dir = Path(out_dir)
    specs = plan_cohort(**plan)
    seed = plan.get("seed", 0)
    samples, boxes = [], []
    for spec in specs:
        slide = render_slide(spec)
        path = out_dir / "slides" / f"{spec.slide_id}.tiff"
        description = (
            f"histodetect synthetic H&E slide {spec.slide_id} (patient {spec.patient_id}); "
            f"{spec.width}x{spec.height} px at {spec.mpp} um/px; "
            f"{len(slide.boxes)} lesion(s); seed {seed}"
        )
        write_pyramidal_tiff(
            path, slide.rgb, spec.mpp, tile=tile, quality=jpeg_quality, description=description
        )
        samples.append((spec.slide_id, spec.patient_id, str(path), spec.mpp))
        for x1, y1, x2, y2 in slide.boxes.tolist():
            boxes.append((path.name, x1, x2, y1, y2, spec.width, spec.height))
        del slide
    samples_df = pd.DataFrame(samples, columns=SAMPLE_COLUMNS)
    ann_df = pd.DataFrame(boxes, columns=ANNOTATION_COLUMNS)
    for col in ANNOTATION_COLUMNS[1:]:
        ann_df[col] = ann_df[col].astype(np.int64)
    with atomic_path(out_dir / "annotations.csv") as tmp:
        ann_df.to_csv(tmp, index=False)
    with atomic_path(out_dir / "samples.tsv") as tmp:
        samples_df.to_csv(tmp, sep="\t", index=False)
    return samples_df, ann_df


# --------------------------------------------------------------------------- TIFF


def _halve(a: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Downsample an ``(H, W, C)`` uint8 image by 2 (2x2 mean; odd edges replicated)."""
    h, w = a.shape[:2]
    if h % 2 or w % 2:
        a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    out = np.empty((a.shape[0] // 2, a.shape[1] // 2, a.shape[2]), np.uint8)
    for r0 in range(0, out.shape[0], chunk):
        rows = slice(2 * r0, 2 * (r0 + chunk))
        s = a[rows][0::2, 0::2].astype(np.uint16)
        s += a[rows][1::2, 0::2]
        s += a[rows][0::2, 1::2]
        s += a[rows][1::2, 1::2]
        s += 2
        s >>= 2
        out[r0 : r0 + chunk] = s
    return out


def write_pyramidal_tiff(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    mpp: float,
    tile: int = 256,
    quality: int = 85,
    min_size: int = 512,
    description: str | None = None,
) -> int:
    """Write a tiled, JPEG-compressed pyramidal TIFF that OpenSlide opens as a multi-level slide.

    Each level is a top-level IFD (level 0 first, then halved until the smaller side is at most
    ``min_size``), tiled, JPEG in RGB photometric, with X/YResolution in pixels per centimetre
    so that OpenSlide reports ``openslide.mpp-x == mpp``.

    Args:
        path: Output file; written atomically.
        rgb: Level-0 image ``(H, W, 3)`` uint8.
        mpp: Microns per level-0 pixel.
        tile: Tile side in pixels (multiple of 16).
        quality: JPEG quality (1-100).
        min_size: Stop adding levels once the smaller side is at most this.
        description: ImageDescription of level 0 (a default is written if ``None``).

    Returns:
        Number of levels written.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if tile % 16:
        raise ValueError(f"tile must be a multiple of 16, got {tile}")
    h, w = rgb.shape[:2]
    if description is None:
        description = f"histodetect synthetic slide; {w}x{h} px at {mpp} um/px"
    bigtiff = rgb.nbytes > 2**31
    workers = min(4, os.cpu_count() or 1)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
        level, k = rgb, 0
        while True:
            res = 1e4 / mpp / 2**k
            tw.write(
                level,
                photometric="rgb",
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": int(quality)},
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if k == 0 else 1,
                description=description if k == 0 else None,
                metadata=None,
                maxworkers=workers,
            )
            if min(level.shape[:2]) <= min_size:
                break
            level, k = _halve(level), k + 1
    return k + 1


# --------------------------------------------------------------------------- rendering


def _axis(n_coarse: int, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear indices and weights mapping full-res coordinates onto coarse cell centres."""
    u = (coords.astype(np.float64) + 0.5) / COARSE - 0.5
    i0 = np.clip(np.floor(u).astype(np.intp), 0, n_coarse - 2)
    f = np.clip(u - i0, 0.0, 1.0).astype(np.float32)
    return i0, f


def _bilinear_grid(c: np.ndarray, ys: np.ndarray, x0: int, x1: int) -> np.ndarray:
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


def _bilinear_points(c: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample coarse field ``c`` bilinearly at full-res points ``(ys[i], xs[i])``."""
    i0, fy = _axis(c.shape[0], ys)
    j0, fx = _axis(c.shape[1], xs)
    top = c[i0, j0] * (1 - fx) + c[i0, j0 + 1] * fx
    bot = c[i0 + 1, j0] * (1 - fx) + c[i0 + 1, j0 + 1] * fx
    return top * (1 - fy) + bot * fy


def _tile_cols(rows: np.ndarray, offset: int, width: int) -> np.ndarray:
    """Repeat a periodic ``(h, t)`` texture along columns; columns ``[offset, offset + width)``."""
    reps = -(-(offset + width) // rows.shape[1])
    return np.tile(rows, (1, reps))[:, offset : offset + width]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
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


def _tissue_field(rng: np.random.Generator, hc: int, wc: int) -> np.ndarray:
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
        field += 0.28 * _smooth_noise(rng, (hc, wc), 0.08 * size)
        field += 0.10 * _smooth_noise(rng, (hc, wc), 0.025 * size)
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
        f += 0.15 * _smooth_noise(rng, (n, n), max(1.0, diameter / 8))
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


class _NoRoomError(Exception):
    """Not even the smallest lesion fits in this tissue layout."""


def _place_lesions(
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
                raise _NoRoomError(spec.slide_id)
            break
    return lesion


def _place_mimics(tissue: np.ndarray, lesion: np.ndarray, spec: SyntheticSlideSpec) -> np.ndarray:
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
        return _place_lesions(rng, free, plan)
    except _NoRoomError:
        return np.zeros_like(lesion)


def _stamps(
    rng: np.random.Generator, n: int, radius_px: tuple[float, float], irregular: float
) -> np.ndarray:
    """``n`` soft nucleus stamps ``(n, S, S)`` float32 in [0, 1] (irregular ellipses)."""
    rmax = radius_px[1] * (1 + irregular) + 1.5
    half = math.ceil(rmax)
    s = 2 * half + 1
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) - half
    out = np.zeros((n, s, s), np.float32)
    angle = np.arctan2(yy, xx)
    for i in range(n):
        r = float(rng.uniform(*radius_px))
        ratio = float(rng.uniform(0.65, 1.0))
        th = float(rng.uniform(0, math.pi))
        ct, st = math.cos(th), math.sin(th)
        u = xx * ct + yy * st
        v = (-xx * st + yy * ct) / ratio
        dist = np.sqrt(u * u + v * v)
        wobble = 1 + irregular * (
            0.6 * np.cos(3 * angle + rng.uniform(0, 6.3))
            + 0.4 * np.cos(5 * angle + rng.uniform(0, 6.3))
        )
        edge = np.clip(r * wobble - dist + 0.5, 0, 1)
        chromatin = 0.82 + 0.18 * np.clip(
            ndimage.gaussian_filter(rng.standard_normal((s, s)).astype(np.float32), 0.8) * 2.5,
            -1,
            1,
        )
        out[i] = edge * chromatin
    return out


def _nuclei(
    rng: np.random.Generator,
    density_px: float,
    box: tuple[int, int, int, int],
    inside: np.ndarray,
    outside: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson nucleus centres in ``box`` (x1, y1, x2, y2), ``density_px`` per level-0 px.

    Centres are kept where the coarse field ``inside`` exceeds 0.5 and, if given, ``outside``
    does not (normal nuclei stay out of lesions).
    """
    x1, y1, x2, y2 = box
    n = int(rng.poisson(density_px * (x2 - x1) * (y2 - y1)))
    ys = rng.uniform(y1, y2, n)
    xs = rng.uniform(x1, x2, n)
    keep = _bilinear_points(inside, ys, xs) > 0.5
    if outside is not None:
        keep &= _bilinear_points(outside, ys, xs) <= 0.5
    return np.round(ys[keep]).astype(np.int64), np.round(xs[keep]).astype(np.int64)


class _NucleusLayer:
    """Nuclei of one kind, painted strip by strip with ``np.maximum.at``."""

    def __init__(
        self,
        rng: np.random.Generator,
        ys: np.ndarray,
        xs: np.ndarray,
        stamps: np.ndarray,
        opacity: tuple[float, float],
    ) -> None:
        order = np.argsort(ys, kind="stable")
        self.ys, self.xs = ys[order], xs[order]
        self.kind = rng.integers(0, stamps.shape[0], ys.size)
        self.alpha = rng.uniform(*opacity, ys.size).astype(np.float32)
        self.stamps = stamps
        self.half = stamps.shape[1] // 2
        off = np.arange(stamps.shape[1]) - self.half
        self.dy, self.dx = off[:, None], off[None, :]

    def paint(self, a: np.ndarray, y0: int) -> None:
        """Max-composite the nuclei that reach rows ``[y0, y0 + a.shape[0])`` into ``a``."""
        h, w = a.shape
        i0 = np.searchsorted(self.ys, y0 - self.half, "left")
        i1 = np.searchsorted(self.ys, y0 + h + self.half, "left")
        if i1 <= i0:
            return
        sl = slice(i0, i1)
        rr = (self.ys[sl] - y0)[:, None, None] + self.dy[None]
        cc = self.xs[sl][:, None, None] + self.dx[None]
        vals = self.stamps[self.kind[sl]] * self.alpha[sl, None, None]
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w) & (vals > 0.02)
        np.maximum.at(a.reshape(-1), (rr * w + cc)[ok], vals[ok])


def render_slide(spec: SyntheticSlideSpec) -> SyntheticSlide:
    """Render one slide and its ground truth (deterministic in ``spec``)."""
    rng = np.random.default_rng(spec.seed)
    h, w, mpp = spec.height, spec.width, spec.mpp
    hc, wc = -(-h // COARSE), -(-w // COARSE)

    for attempt in range(_TISSUE_ATTEMPTS):
        tissue = _tissue_field(rng, hc, wc)
        try:
            lesion = _place_lesions(rng, tissue, spec)
            break
        except _NoRoomError:
            if attempt == _TISSUE_ATTEMPTS - 1:
                raise ValueError(
                    f"{spec.slide_id}: no room for a {spec.lesion_size_um[0]} um lesion in "
                    f"{_TISSUE_ATTEMPTS} tissue layouts of a {w}x{h} px slide at {mpp} um/px"
                ) from None
    mimic = _place_mimics(tissue, lesion, spec)
    t_soft = ndimage.gaussian_filter(tissue.astype(np.float32), 0.8)
    l_soft = ndimage.gaussian_filter(lesion.astype(np.float32), 0.8)
    colour = _smooth_noise(rng, (hc, wc), 0.06 * min(hc, wc))
    colour += 0.5 * _smooth_noise(rng, (hc, wc), 2.0)

    # Ground-truth boxes from the full-resolution lesion mask, one labelled blob at a time.
    lab, n_les = ndimage.label(lesion)
    boxes = []
    for sl in ndimage.find_objects(lab):
        r0, r1 = max(0, sl[0].start - 2), min(hc, sl[0].stop + 2)
        c0, c1 = max(0, sl[1].start - 2), min(wc, sl[1].stop + 2)
        ys = np.arange(r0 * COARSE, min(h, r1 * COARSE))
        xs = np.arange(c0 * COARSE, min(w, c1 * COARSE))
        m = _bilinear_grid(l_soft, ys, int(xs[0]), int(xs[-1]) + 1) > 0.5
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        boxes.append((xs[cols[0]], ys[rows[0]], xs[cols[-1]] + 1, ys[rows[-1]] + 1))
    boxes_arr = np.asarray(boxes, np.int64).reshape(n_les, 4)
    # Regions painted in lesion colour: the lesions, then the atypical look-alikes.
    tinted = [(l_soft, boxes_arr, spec.lesion_contrast)]
    if spec.mimic_contrast > 0 and mimic.any():
        m_boxes = [
            (sl[1].start * COARSE, sl[0].start * COARSE, sl[1].stop * COARSE, sl[0].stop * COARSE)
            for sl in ndimage.find_objects(ndimage.label(mimic)[0])
        ]
        tinted.append(
            (
                ndimage.gaussian_filter(mimic.astype(np.float32), 0.8),
                np.asarray(m_boxes, np.int64).reshape(-1, 4),
                spec.mimic_contrast,
            )
        )

    # Nuclei.
    r_n = (_NORMAL_RADIUS_UM[0] / mpp, _NORMAL_RADIUS_UM[1] / mpp)
    r_l = (_LESION_RADIUS_UM[0] / mpp, _LESION_RADIUS_UM[1] / mpp)
    dens_n = _NORMAL_COVER / (math.pi * (sum(r_n) / 2) ** 2 * 0.85)
    dens_l = _LESION_COVER / (math.pi * (sum(r_l) / 2) ** 2 * 0.85)
    ny, nx = _nuclei(rng, dens_n, (0, 0, w, h), t_soft, l_soft)
    layers = [_NucleusLayer(rng, ny, nx, _stamps(rng, 24, r_n, 0.06), (0.7, 0.95))]
    if mimic.any():  # dense benign nuclei: lesion density, normal colour and size
        m_rng = np.random.default_rng([spec.seed, 2])
        m_soft = ndimage.gaussian_filter(mimic.astype(np.float32), 0.8)
        my, mx = _nuclei(m_rng, dens_l * (sum(r_l) / sum(r_n)) ** 2, (0, 0, w, h), m_soft)
        layers.append(_NucleusLayer(m_rng, my, mx, _stamps(m_rng, 24, r_n, 0.1), (0.8, 1.0)))
    if n_les:
        lys, lxs = [], []
        for x1, y1, x2, y2 in boxes_arr.tolist():
            yy, xx = _nuclei(rng, dens_l, (x1, y1, x2, y2), l_soft)
            lys.append(yy)
            lxs.append(xx)
        layers.append(
            _NucleusLayer(
                rng,
                np.concatenate(lys),
                np.concatenate(lxs),
                _stamps(rng, 32, r_l, 0.12),
                (0.85, 1.0),
            )
        )

    # Periodic stroma texture (fibres + grain) and glass grain, tiled over the slide.
    t = _TEXTURE_TILE
    tex = (
        ndimage.gaussian_filter(
            rng.standard_normal((t, t)).astype(np.float32), (0.8, 4.0), mode="wrap"
        )
        + ndimage.gaussian_filter(
            rng.standard_normal((t, t)).astype(np.float32), (4.0, 0.8), mode="wrap"
        )
        + 0.6
        * ndimage.gaussian_filter(rng.standard_normal((t, t)).astype(np.float32), 6.0, mode="wrap")
    )
    tex *= 0.07 / tex.std()
    tex += 0.015 * rng.standard_normal((t, t)).astype(np.float32)
    grain = 1.5 * rng.standard_normal((t, t)).astype(np.float32)
    oy, ox = (int(v) for v in rng.integers(0, t, 2))

    # Slow eosin colour per channel on the coarse grid (nearest-upsampled: it is smooth).
    eosin = [(_EOSIN[ch] + colour * _EOSIN_VAR[ch]).astype(np.float32) for ch in range(3)]
    rgb = np.empty((h, w, 3), np.uint8)
    pad = 2 * COARSE
    for y0 in range(0, h, _STRIP_ROWS):
        y1 = min(h, y0 + _STRIP_ROWS)
        ys = np.arange(y0, y1)
        rows_c = ys // COARSE
        tw = _bilinear_grid(t_soft, ys, 0, w)
        tw -= 0.5
        tw *= 4.0
        tw += 0.5
        np.clip(tw, 0.0, 1.0, out=tw)
        tx = _tile_cols(tex[(ys + oy) % t], ox, w)
        tx += 1.0
        glass = _tile_cols(grain[(ys + ox) % t], oy, w)
        glass += _GLASS + 0.5  # +0.5 rounds on the cast to uint8
        a = np.zeros((y1 - y0, w), np.float32)
        for layer in layers:
            layer.paint(a, y0)
        lw, c0, c1 = _tint_weight(tinted, ys, w, pad)
        for ch in range(3):
            out = np.repeat(eosin[ch][rows_c], COARSE, axis=1)[:, :w]
            if lw is not None:
                out[:, c0:c1] += lw * (_LESION_STROMA[ch] - _EOSIN[ch])
            out *= tx
            out -= _GLASS
            out *= tw
            out += glass
            nuc = np.subtract(_NUCLEUS[ch] + 0.5, out, dtype=np.float32)
            if lw is not None:
                nuc[:, c0:c1] += lw * (_LESION_NUCLEUS[ch] - _NUCLEUS[ch])
            nuc *= a
            out += nuc
            np.clip(out, 0, 255, out=out)
            rgb[y0:y1, :, ch] = out
    return SyntheticSlide(
        rgb=rgb, tissue=tissue_truth(t_soft), lesion=tissue_truth(l_soft), boxes=boxes_arr
    )


def _tint_weight(
    tinted: list[tuple[np.ndarray, np.ndarray, float]], ys: np.ndarray, w: int, pad: int
) -> tuple[np.ndarray | None, int, int]:
    """Lesion-colour weight of the rows ``ys``, only on the columns of regions that reach them.

    ``tinted`` holds ``(coarse soft mask, level-0 boxes, contrast)`` per kind of region; the
    weight is the largest over kinds. None when no region reaches the strip.
    """
    y0, y1 = int(ys[0]), int(ys[-1]) + 1
    hits = [(soft, b[(b[:, 1] < y1 + pad) & (b[:, 3] > y0 - pad)], c) for soft, b, c in tinted]
    hits = [(soft, b, c) for soft, b, c in hits if len(b)]
    if not hits:
        return None, 0, 0
    c0 = max(0, min(int(b[:, 0].min()) for _, b, _ in hits) - pad)
    c1 = min(w, max(int(b[:, 2].max()) for _, b, _ in hits) + pad)
    lw = None
    for soft, _, contrast in hits:
        part = _bilinear_grid(soft, ys, c0, c1)
        part -= 0.5
        part *= 3.0
        part += 0.5
        np.clip(part, 0.0, 1.0, out=part)
        if contrast != 1.0:
            part *= contrast
        lw = part if lw is None else np.maximum(lw, part, out=lw)
    return lw, c0, c1


def tissue_truth(soft: np.ndarray) -> np.ndarray:
    """Binary coarse mask matching the full-resolution rendering (``soft > 0.5``)."""
    return soft > 0.5
