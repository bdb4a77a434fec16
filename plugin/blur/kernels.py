"""Blur kernels: the seed tool's, sampled Gaussians, adaptive strength, banded matrices."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .settings import BlurSettings

# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------

MIN_ADAPTIVE_SIGMA = 2.0  # px; tiny boxes still get a visible blur

# Gaussians wider than this (px, derived kernels only) are computed at a reduced resolution:
# factor d = floor(sigma / MULTIRES_STEP), so the small image keeps a std-dev of about 3 cells
# (4 cells cost ~30 % more time at 40 % coverage for 0.01 level closer to the exact Gaussian).
MULTIRES_SIGMA = 8.0
MULTIRES_STEP = 3.0


def seed_kernel_1d(size: int, seed_sigma: float) -> np.ndarray:
    """The seed's kernel, 1-D factor: sqrt of normal-CDF differences, normalised (float64)."""
    interval = (2 * seed_sigma + 1.0) / size
    x = np.linspace(-seed_sigma - interval / 2, seed_sigma + interval / 2, size + 1)
    cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    k = np.sqrt(np.diff(cdf))
    return k / k.sum()


def gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """Sampled Gaussian ``exp(-x^2 / 2 sigma^2)`` of odd ``size``, normalised (float64)."""
    r = (size - 1) // 2
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return k / k.sum()


def seed_kernel_std_px(size: int, seed_sigma: float) -> float:
    """Std-dev in pixels of the seed's kernel: about sqrt(2) * size / (2 s + (2 s + 1) / size),
    less the truncation at the window edge (21,2 -> 5.2 px; 65,3 -> 13.7 px)."""
    k = seed_kernel_1d(size, seed_sigma)
    x = np.arange(size) - (size - 1) / 2
    return float(np.sqrt((k * x * x).sum()))


def _size_for_sigma(sigma: float) -> int:
    return 2 * math.ceil(3.0 * sigma) + 1


def _default_sigma(size: int) -> float:
    # OpenCV's rule for a kernel size without a sigma.
    return 0.3 * ((size - 1) * 0.5 - 1) + 0.8


def _quantize_sigma(sigma: float) -> float:
    """Round up to a ladder of 2^(1/4) steps so boxes share a few kernels (and cached plans)."""
    return float(2.0 ** (math.ceil(4.0 * math.log2(sigma) - 1e-9) / 4.0))


def box_sigma(settings: BlurSettings, box_w: float, box_h: float) -> float:
    """Std-dev in px used for a box of (scaled, unclipped) size ``box_w x box_h`` px."""
    if settings.kernel_size is not None:
        if settings.seed_sigma is not None:
            return seed_kernel_std_px(settings.kernel_size, settings.seed_sigma)
        return (
            settings.sigma if settings.sigma is not None else _default_sigma(settings.kernel_size)
        )
    if settings.sigma is not None:
        return float(settings.sigma)
    raw = settings.strength * math.sqrt(max(box_w, 1.0) * max(box_h, 1.0))
    return _quantize_sigma(max(MIN_ADAPTIVE_SIGMA, raw))


def multires_factor(sigma: float) -> int:
    """Resolution factor d for a derived Gaussian of std-dev ``sigma`` px (1 = full resolution)."""
    return int(sigma // MULTIRES_STEP) if sigma > MULTIRES_SIGMA else 1


def small_sigma(sigma: float, d: int) -> float:
    """Std-dev in cells of the Gaussian applied at factor ``d``: the cell means add
    ``(d^2 - 1) / 12`` px^2 of variance and the bilinear upsampling about ``d^2 / 6`` (averaged
    over the pixel phases), ``d^2 / 4`` in all, so ``sqrt(sigma^2 - d^2 / 4) / d``; with
    ``d <= sigma / 3`` that is at least ~2.96 cells."""
    return math.sqrt((sigma / d) ** 2 - 0.25)


def _kernel_key(settings: BlurSettings, box_w: float, box_h: float) -> tuple:
    """Hashable identity of the blur for a box: (size, sigma, seed_sigma, factor); with
    factor d > 1, size is that of the kernel applied to the cells of d x d px."""
    if settings.kernel_size is not None:
        return (settings.kernel_size, settings.sigma, settings.seed_sigma, 1)
    sigma = box_sigma(settings, box_w, box_h)
    d = multires_factor(sigma)
    if d > 1:
        return (_size_for_sigma(small_sigma(sigma, d)), sigma, None, d)
    return (_size_for_sigma(sigma), sigma, None, 1)


@lru_cache(maxsize=256)
def kernel_1d(key: tuple) -> np.ndarray:
    """The 1-D blur kernel for a key from :func:`_kernel_key` (cached, read-only); in cells of
    ``factor`` px for a multi-resolution key."""
    size, sigma, seed_sigma, factor = key
    if seed_sigma is not None:
        k = seed_kernel_1d(size, seed_sigma)
    elif factor > 1:
        k = gaussian_kernel_1d(size, small_sigma(sigma, factor))
    else:
        k = gaussian_kernel_1d(size, sigma if sigma is not None else _default_sigma(size))
    k.setflags(write=False)
    return k


def _banded(k: np.ndarray, n: int) -> np.ndarray:
    """[n, n + len(k) - 1] matrix whose row i holds ``k`` from column i (in ``k``'s dtype):
    a product with it is the VALID correlation with ``k`` giving n outputs."""
    out = np.zeros((n, n + k.size - 1), dtype=k.dtype)
    rows = np.arange(n)[:, None]
    out[rows, rows + np.arange(k.size)] = k
    return out
