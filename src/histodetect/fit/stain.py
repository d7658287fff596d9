"""Stain normalisation of H&E tiles (Macenko, Reinhard) and HED colour jitter.

Normalisers work on one RGB uint8 HWC array at a time (inside DataLoader workers) and are
picklable; the jitter works on float NCHW batches in [0, 1] on any device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Macenko et al. 2009 reference H&E stain vectors (columns, optical density) and the
# 99th-percentile stain concentrations of the reference image (as in torchstain/staintools).
MACENKO_HE_REF = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
MACENKO_MAX_C_REF = np.array([1.9705, 1.0308])
# Reinhard target: mean and std of l, alpha, beta over the tissue of the OpenSlide test image
# CMU-1-Small-Region (H&E, 20x), computed with :func:`rgb_to_lab` below.
REINHARD_REF = (np.array([-0.7041, -0.0784, 0.0265]), np.array([0.3874, 0.0892, 0.0224]))

_RGB2LMS = np.array([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]])
_LMS2LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array(
    [[1, 1, 1], [1, 1, -2], [1, -1, 0]]
)
# Ruifrok & Johnston H&E-DAB stain matrix (rows: optical density of H, E, DAB), as in skimage.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Ruderman's l-alpha-beta space (Reinhard et al. 2001) of RGB uint8 pixels ``(..., 3)``."""
    lms = np.log10(np.maximum(rgb.astype(np.float64) / 255.0 @ _RGB2LMS.T, 1e-4))
    return lms @ _LMS2LAB.T


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_lab`, clipped to uint8."""
    lms = 10 ** (lab @ np.linalg.inv(_LMS2LAB).T)
    rgb = lms @ np.linalg.inv(_RGB2LMS).T * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def tissue_pixels(rgb: np.ndarray, od_threshold: float = 0.15) -> np.ndarray:
    """Boolean mask of pixels whose optical density exceeds ``od_threshold`` in every channel."""
    od = -np.log((rgb.astype(np.float64) + 1) / 256.0)
    return (od > od_threshold).all(axis=-1)


class StainNormalizer:
    """Map a tile's colours onto a reference H&E appearance.

    Args:
        method: ``"macenko"`` (stain vectors by SVD of optical density, Macenko et al. 2009)
            or ``"reinhard"`` (mean and std matched in l-alpha-beta, Reinhard et al. 2001).
        reference: optional RGB image file whose stains become the target; published
            defaults otherwise.

    Tiles with fewer than ``min_pixels`` tissue pixels are returned unchanged.
    """

    def __init__(
        self, method: str, reference: str | Path | None = None, min_pixels: int = 64
    ) -> None:
        if method not in ("macenko", "reinhard"):
            raise ValueError(f"stain normalisation must be 'macenko' or 'reinhard', not {method!r}")
        self.method, self.min_pixels = method, min_pixels
        self.he_ref, self.max_c_ref = MACENKO_HE_REF, MACENKO_MAX_C_REF
        self.lab_ref = REINHARD_REF
        if reference is not None:
            self.fit(np.asarray(Image.open(reference).convert("RGB")))

    def fit(self, rgb: np.ndarray) -> StainNormalizer:
        """Take the target stains from a reference RGB uint8 image."""
        if self.method == "macenko":
            fitted = macenko_stains(rgb, min_pixels=self.min_pixels)
            if fitted is None:
                raise ValueError("the stain reference image has too little tissue")
            self.he_ref, self.max_c_ref = fitted
        else:
            lab = rgb_to_lab(rgb[tissue_pixels(rgb)])
            self.lab_ref = (lab.mean(axis=0), lab.std(axis=0))
        return self

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Normalised copy of an RGB uint8 HWC tile."""
        if self.method == "reinhard":
            mask = tissue_pixels(rgb)
            if mask.sum() < self.min_pixels:
                return rgb
            lab = rgb_to_lab(rgb)
            mean, std = lab[mask].mean(axis=0), lab[mask].std(axis=0) + 1e-6
            out = lab_to_rgb((lab - mean) / std * self.lab_ref[1] + self.lab_ref[0])
            return np.where(mask[..., None], out, rgb)
        fitted = macenko_stains(rgb, min_pixels=self.min_pixels)
        if fitted is None:
            return rgb
        he, max_c = fitted
        od = -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1) / 256.0)
        conc = np.linalg.lstsq(he, od.T, rcond=None)[0]
        conc *= (self.max_c_ref / np.maximum(max_c, 1e-6))[:, None]
        out = 256.0 * np.exp(-self.he_ref @ conc) - 1
        return np.clip(np.rint(out.T), 0, 255).astype(np.uint8).reshape(rgb.shape)


def macenko_stains(
    rgb: np.ndarray, *, beta: float = 0.15, alpha: float = 1.0, min_pixels: int = 64
) -> tuple[np.ndarray, np.ndarray] | None:
    """H and E optical-density vectors (3x2, H first) and 99th-percentile concentrations.

    None when the tile has fewer than ``min_pixels`` tissue pixels.
    """
    od = -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1) / 256.0)
    tissue = od[(od > beta).all(axis=1)]
    if len(tissue) < min_pixels:
        return None
    _, vecs = np.linalg.eigh(np.cov(tissue.T))
    plane = vecs[:, 1:3]
    proj = tissue @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    he = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1], axis=1)
    he = np.where(he.sum(axis=0) < 0, -he, he)  # eigenvectors come with either sign
    conc = np.linalg.lstsq(he, od.T, rcond=None)[0]
    return he, np.percentile(conc, 99, axis=1)


def hed_jitter(x: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    """HED colour augmentation (Tellez et al. 2018) of a float NCHW batch in [0, 1].

    Each sample's haematoxylin, eosin and DAB concentrations (optical density) are scaled by
    factors in ``[1 - sigma, 1 + sigma]`` and shifted by up to ``±sigma / 2``.
    """
    n = x.shape[0]
    u = (torch.rand((2, n, 3), generator=generator) * 2 - 1).to(x.device, x.dtype)
    fwd = _RGB_FROM_HED.to(x.device, x.dtype)
    inv = torch.linalg.inv(fwd)
    mats = inv @ torch.diag_embed(1 + sigma * u[0]) @ fwd  # OD (row vector) -> jittered OD
    shift = (sigma / 2 * u[1]) @ fwd
    od = -torch.log(x.clamp_min(1e-3))
    od = torch.einsum("nkhw,nkc->nchw", od, mats) + shift[:, :, None, None]
    return torch.exp(-od).clamp_(0, 1)
