"""Painting a synthetic H&E-like slide: stroma colour and texture, glass, nuclei, lesion tint.

The full-resolution image is painted in row strips from the coarse layout
(:mod:`histodetect.slides.synthetic_layout`), so no more than the image itself and a few
strip-sized buffers are held. Rendering is a pure function of the slide's spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from histodetect.slides.synthetic_layout import (
    COARSE,
    NoRoomError,
    SyntheticSlideSpec,
    bilinear_grid,
    bilinear_points,
    place_lesions,
    place_mimics,
    smooth_noise,
    tile_cols,
    tissue_field,
    tissue_truth,
)

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

_STRIP_ROWS = 256
_TEXTURE_TILE = 512
_TISSUE_ATTEMPTS = 20


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
    keep = bilinear_points(inside, ys, xs) > 0.5
    if outside is not None:
        keep &= bilinear_points(outside, ys, xs) <= 0.5
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
        tissue = tissue_field(rng, hc, wc)
        try:
            lesion = place_lesions(rng, tissue, spec)
            break
        except NoRoomError:
            if attempt == _TISSUE_ATTEMPTS - 1:
                raise ValueError(
                    f"{spec.slide_id}: no room for a {spec.lesion_size_um[0]} um lesion in "
                    f"{_TISSUE_ATTEMPTS} tissue layouts of a {w}x{h} px slide at {mpp} um/px"
                ) from None
    mimic = place_mimics(tissue, lesion, spec)
    t_soft = ndimage.gaussian_filter(tissue.astype(np.float32), 0.8)
    l_soft = ndimage.gaussian_filter(lesion.astype(np.float32), 0.8)
    colour = smooth_noise(rng, (hc, wc), 0.06 * min(hc, wc))
    colour += 0.5 * smooth_noise(rng, (hc, wc), 2.0)

    # Ground-truth boxes from the full-resolution lesion mask, one labelled blob at a time.
    lab, n_les = ndimage.label(lesion)
    boxes = []
    for sl in ndimage.find_objects(lab):
        r0, r1 = max(0, sl[0].start - 2), min(hc, sl[0].stop + 2)
        c0, c1 = max(0, sl[1].start - 2), min(wc, sl[1].stop + 2)
        ys = np.arange(r0 * COARSE, min(h, r1 * COARSE))
        xs = np.arange(c0 * COARSE, min(w, c1 * COARSE))
        m = bilinear_grid(l_soft, ys, int(xs[0]), int(xs[-1]) + 1) > 0.5
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
        tw = bilinear_grid(t_soft, ys, 0, w)
        tw -= 0.5
        tw *= 4.0
        tw += 0.5
        np.clip(tw, 0.0, 1.0, out=tw)
        tx = tile_cols(tex[(ys + oy) % t], ox, w)
        tx += 1.0
        glass = tile_cols(grain[(ys + ox) % t], oy, w)
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
        part = bilinear_grid(soft, ys, c0, c1)
        part -= 0.5
        part *= 3.0
        part += 0.5
        np.clip(part, 0.0, 1.0, out=part)
        if contrast != 1.0:
            part *= contrast
        lw = part if lw is None else np.maximum(lw, part, out=lw)
    return lw, c0, c1
