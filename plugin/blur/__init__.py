"""Anonymize images: blur, pixelate or fill the regions around detected faces and plates.

The seed tool's maths is kept (mask from the boxes, Gaussian kernel, reflect padding at image
borders, per-channel convolution, smoothed mask, ``blurred * mask + image * (1 - mask)``) but
computed only around the boxes, with separable kernels, and rounded instead of truncated.

Definitions the tests check against a plain NumPy reference:

* Box geometry: each box is grown by ``box_scale`` around its centre (clipped to the image);
  corners are rounded to whole pixels (``floor(v + 0.5)``), at least 1 px. Ellipses are the
  inscribed ellipse, tested at pixel centres in exact integer arithmetic.
* Smoothed mask: union of the box masks, convolved with the seed's tent kernel of size
  ``feather``. Unlike the seed (zero padding), the mask is edge-replicated at image borders so a
  box touching the border stays fully obscured up to the border instead of fading to 50 %.
* Blur: the image is reflect-padded (``numpy.pad(mode="reflect")``, also for pads wider than
  the image) and convolved per channel with a separable kernel.
* Wide Gaussians (derived kernels, i.e. no ``kernel_size``, with sigma > ``MULTIRES_SIGMA`` =
  8 px) are computed at a reduced resolution, so their cost no longer grows with the kernel:
  with ``d = floor(sigma / 3)``, the reflect-padded image is averaged over d x d cells aligned
  to the image origin (cell ``(i, j)`` = pixels ``[i d, (i + 1) d) x [j d, (j + 1) d)``), the
  cell means are convolved with a sampled Gaussian of ``sqrt((sigma / d)^2 - 1/4)`` cells
  (window ``2 ceil(3 s) + 1``), and each pixel ``p`` takes the bilinear interpolation of the
  blurred cells at cell coordinate ``(p + 0.5) / d - 0.5`` per axis (half-pixel centres). The
  ``d^2 / 4`` subtracted is the variance the cell means and the interpolation add, so the
  impulse response has sigma^2 on average. At sigma > 8 px nothing finer than a few pixels
  survives the blur, so this is visually the same as the full-resolution Gaussian (not
  bit-identical to it: on a 1024 px photo with a face and a plate box, every pixel was within 1
  level of it, 0.045 levels on average; with ``sigma / 4`` cells, 0.035); the reference tests
  implement this definition independently.
* Several kernels in one image (adaptive strength): each kernel ``g`` has its own smoothed mask
  ``M_g``; the blurred value is ``sum_g M_g * B_g / sum_g M_g`` and the alpha is the smoothed
  union mask, so a single kernel reduces exactly to the seed's composite.
* Output: ``rint`` (round half to even), clipped to 0..255. Pixels where the smoothed mask is 0
  are copied byte for byte; alpha channels are never touched.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..core.boxes import FACE, Detection, scale_box
from ..core.tf_runtime import import_tensorflow, quiet_tensorflow_start

MODES = ("blur", "pixelate", "fill")
SHAPES = ("auto", "rectangle", "ellipse")


@dataclass(frozen=True)
class BlurSettings:
    """How detected regions are obscured; JSON-safe via :meth:`to_dict` for provenance."""

    mode: str = "blur"  # "blur" | "pixelate" | "fill"
    shape: str = "auto"  # "auto" (ellipse for faces) | "rectangle" | "ellipse"
    # 1.3: detector boxes are tight (hair, ears, plate frame outside) and the feathered edge
    # leaves the outermost box pixels only ~60 % obscured; growing 15 % per side covers both.
    box_scale: float = 1.3
    kernel_size: int | None = None  # fixed odd kernel size in px; None = adaptive per box
    sigma: float | None = None  # fixed std-dev in px (with kernel_size); None = derived
    # Adaptive: sigma = strength * sqrt(w * h) of the scaled box, i.e. ~13 % of a face's width:
    # about what the seed's 21 px kernel (5.2 px std-dev) does to the ~40 px faces it targeted.
    strength: float = 0.1
    feather: int = 9  # mask smoothing kernel size (the seed's third number); 0 or 1 = hard edge
    fill_color: tuple[int, int, int] = (0, 0, 0)
    seed_sigma: float | None = None  # set by from_seed_kernel: window spans this many std devs

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if not self.box_scale > 0:
            raise ValueError("box_scale must be > 0")
        if self.kernel_size is not None and (self.kernel_size < 1 or self.kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size}")
        if self.sigma is not None and not self.sigma > 0:
            raise ValueError("sigma must be > 0")
        if self.seed_sigma is not None and not self.seed_sigma > 0:
            raise ValueError("seed_sigma must be > 0")
        if self.seed_sigma is not None and self.kernel_size is None:
            raise ValueError("seed_sigma needs kernel_size (use BlurSettings.from_seed_kernel)")
        if not self.strength > 0:
            raise ValueError("strength must be > 0")
        if self.feather < 0 or (self.feather > 1 and self.feather % 2 == 0):
            raise ValueError(f"feather must be 0, 1 or an odd size, got {self.feather}")
        if len(self.fill_color) != 3 or any(not 0 <= int(c) <= 255 for c in self.fill_color):
            raise ValueError("fill_color must be three values in 0..255")

    @classmethod
    def from_seed_kernel(cls, spec: str | Sequence[float], **overrides) -> BlurSettings:
        """Settings from the seed's ``obfuscation_kernel`` ("21,2,9": size, sigma, smoothing).

        The seed's "sigma" is not a std-dev in pixels: the kernel window spans ``2 * sigma``
        std devs (and the weights are square-rooted), so a larger value blurs *less*; "21,2"
        is a Gaussian of about 5.2 px std-dev, "65,3" about 13.7 px (see :func:`seed_kernel_std_px`).
        """
        parts = [p for p in spec.split(",")] if isinstance(spec, str) else list(spec)
        if len(parts) != 3:
            raise ValueError(
                f"seed kernel spec needs 3 values 'size,sigma,smoothing', got {spec!r}"
            )
        size, seed_sigma, feather = float(parts[0]), float(parts[1]), float(parts[2])
        if size != int(size) or feather != int(feather):
            raise ValueError(f"kernel and smoothing sizes must be integers, got {spec!r}")
        values: dict[str, Any] = {
            "kernel_size": int(size),
            "seed_sigma": seed_sigma,
            "feather": int(feather),
        }
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        """JSON-safe dict of every field (tuples as lists)."""
        d = asdict(self)
        d["fill_color"] = [int(c) for c in self.fill_color]
        return d

    @classmethod
    def from_dict(cls, values: dict) -> BlurSettings:
        """The inverse of :meth:`to_dict` (e.g. read back from a field's provenance); keys this
        version does not know are ignored."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if "fill_color" in known:
            known["fill_color"] = tuple(int(c) for c in known["fill_color"])
        return cls(**known)


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


# --------------------------------------------------------------------------------------------
# Geometry and masks (NumPy, exact integer arithmetic)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rect:
    """A box in pixels after scaling: half-open ``[y0, y1) x [x0, x1)``."""

    y0: int
    x0: int
    y1: int
    x1: int
    ellipse: bool
    key: tuple  # blur kernel key
    size: float  # sqrt(w * h) of the scaled, unclipped box in px


def _round_px(v: float) -> int:
    return int(math.floor(v + 0.5))


def _rects(
    height: int, width: int, detections: Sequence[Detection], settings: BlurSettings
) -> list[_Rect]:
    rects: list[_Rect] = []
    for det in detections:
        x, y, w, h = (float(v) for v in det.box)
        if not (w > 0 and h > 0):
            continue
        sx, sy, sw, sh = scale_box((x, y, w, h), settings.box_scale)
        x0 = min(max(_round_px(sx * width), 0), width - 1)
        y0 = min(max(_round_px(sy * height), 0), height - 1)
        x1 = min(max(_round_px((sx + sw) * width), x0 + 1), width)
        y1 = min(max(_round_px((sy + sh) * height), y0 + 1), height)
        ellipse = settings.shape == "ellipse" or (settings.shape == "auto" and det.label == FACE)
        bw, bh = w * width * settings.box_scale, h * height * settings.box_scale
        rects.append(
            _Rect(y0, x0, y1, x1, ellipse, _kernel_key(settings, bw, bh), math.sqrt(bw * bh))
        )
    return rects


def _feather_half(settings: BlurSettings) -> int:
    """f = (b + 1) // 2 of the seed's tent; the mask reaches f - 1 px beyond a box."""
    return max(1, (settings.feather + 1) // 2)


def _paint(canvas: np.ndarray, oy: int, ox: int, height: int, width: int, rect: _Rect) -> None:
    """Set ``canvas`` (image coords ``[oy, oy+ch) x [ox, ox+cw)``, may lie outside the image,
    where it takes the value at the clamped position) to True inside ``rect``."""
    ch, cw = canvas.shape
    lo_y = rect.y0 if rect.y0 > 0 else oy
    hi_y = rect.y1 if rect.y1 < height else oy + ch
    lo_x = rect.x0 if rect.x0 > 0 else ox
    hi_x = rect.x1 if rect.x1 < width else ox + cw
    a, b = max(lo_y, oy), min(hi_y, oy + ch)
    c, d = max(lo_x, ox), min(hi_x, ox + cw)
    if a >= b or c >= d:
        return
    if not rect.ellipse:
        canvas[a - oy : b - oy, c - ox : d - ox] = True
        return
    # Inscribed ellipse at pixel centres, times 4 * A^2 * B^2 to stay in integers:
    # (2i + 1 - (y0 + y1))^2 * A^2 + (2j + 1 - (x0 + x1))^2 * B^2 <= A^2 * B^2.
    ys = np.clip(np.arange(a, b), 0, height - 1).astype(np.int64)
    xs = np.clip(np.arange(c, d), 0, width - 1).astype(np.int64)
    ah, aw = rect.y1 - rect.y0, rect.x1 - rect.x0
    dy = (2 * ys + 1 - (rect.y0 + rect.y1)) ** 2 * (aw * aw)
    dx = (2 * xs + 1 - (rect.x0 + rect.x1)) ** 2 * (ah * ah)
    canvas[a - oy : b - oy, c - ox : d - ox] |= (dy[:, None] + dx[None, :]) <= (ah * ah) * (aw * aw)


def _box_filter_valid(a: np.ndarray, f: int, axis: int, dtype) -> np.ndarray:
    """Sum of ``f`` consecutive values along ``axis`` (VALID), exact in integer ``dtype``."""
    if f == 1:
        return a.astype(dtype, copy=False)
    n = a.shape[axis] - (f - 1)

    def shifted(arr: np.ndarray, i: int, count: int) -> np.ndarray:
        return arr[i : i + count] if axis == 0 else arr[:, i : i + count]

    if f <= 8:  # a few shifted adds beat a cumulative sum
        out = shifted(a, 0, n).astype(dtype)
        for i in range(1, f):
            np.add(out, shifted(a, i, n), out=out)
        return out
    c = np.cumsum(a, axis=axis, dtype=dtype)
    return np.concatenate([shifted(c, f - 1, 1), shifted(c, f, n - 1) - shifted(c, 0, n - 1)], axis)


def _smoothed_mask_int(
    height: int, width: int, rects: Sequence[_Rect], region: tuple[int, int, int, int], f: int
) -> np.ndarray:
    """Tent-smoothed union mask over ``region`` (y0, x0, y1, x1) as integers; divide by f**4.

    The tent ``(f - |i - c|) / f`` per axis is two box filters of width f, so integer sums
    give it exactly (no float rounding at the 0.5 threshold).
    """
    y0, x0, y1, x1 = region
    r = f - 1
    canvas = np.zeros((y1 - y0 + 2 * r, x1 - x0 + 2 * r), dtype=bool)
    for rect in rects:
        _paint(canvas, y0 - r, x0 - r, height, width, rect)
    # Values stay <= f**4 (uint16 for the shifted adds of f <= 8); cumulative sums reach
    # (longest side) * f**3: int32 unless the feather is huge.
    wide = np.int32 if max(canvas.shape) * f**3 < 2**31 else np.int64
    dtype = np.uint16 if f <= 8 else wide
    m = canvas.view(np.uint8)
    for axis in (0, 1):
        m = _box_filter_valid(_box_filter_valid(m, f, axis, dtype), f, axis, dtype)
    return m


def obscured_region(
    height: int,
    width: int,
    detections: Sequence[Detection],
    settings: BlurSettings = BlurSettings(),
) -> np.ndarray:
    """Bool HxW of the pixels at least half obscured (smoothed mask >= 0.5), for coverage
    metrics and audits; the same geometry :func:`anonymize_image` uses."""
    out = np.zeros((height, width), dtype=bool)
    rects = _rects(height, width, detections, settings)
    if not rects:
        return out
    f = _feather_half(settings)
    for region in _regions(height, width, rects, f):
        y0, x0, y1, x1 = region
        m = _smoothed_mask_int(height, width, rects, region, f)
        out[y0:y1, x0:x1] = 2 * m >= f**4
    return out


def _regions(
    height: int, width: int, rects: Sequence[_Rect], f: int
) -> list[tuple[int, int, int, int]]:
    """Disjoint rectangles holding every pixel the smoothed mask touches, each box's influence
    (box + f - 1 px) merged with any overlapping one so composites never straddle two regions."""
    boxes = []
    for rect in rects:
        boxes.append(
            [
                max(rect.y0 - (f - 1), 0),
                max(rect.x0 - (f - 1), 0),
                min(rect.y1 + (f - 1), height),
                min(rect.x1 + (f - 1), width),
            ]
        )
    merged = True
    while merged:
        merged = False
        out: list[list[int]] = []
        for b in boxes:
            for o in out:
                if b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3]:
                    o[0], o[1] = min(o[0], b[0]), min(o[1], b[1])
                    o[2], o[3] = max(o[2], b[2]), max(o[3], b[3])
                    merged = True
                    break
            else:
                out.append(list(b))
        boxes = out
    return [(y0, x0, y1, x1) for y0, x0, y1, x1 in boxes]


# --------------------------------------------------------------------------------------------
# TensorFlow engine: separable blur as matrix products (whole banded matrices for small
# regions, tiles for large ones), composite, rounding
# --------------------------------------------------------------------------------------------

# Regions whose blur inputs (region + kernel margin) add up to more than this share of the
# image are processed as one whole-image region (no duplicated margins, one call).
WHOLE_IMAGE_SHARE = 0.6

_TF = None
_FUNCS: dict[str, Callable[..., Any]] = {}
_FUNCS_LOCK = threading.Lock()
_TRACED: dict[str, Any] = {}  # the tf.functions behind _FUNCS, for their tracing counts


def _tf():
    """Import TensorFlow on first use (quiet logs unless the user chose; GPU memory growth so
    onnxruntime can share the card)."""
    global _TF
    if _TF is None:
        tf = import_tensorflow()
        with quiet_tensorflow_start():
            gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            # RuntimeError: already initialised by the caller, whose setting we keep.
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)
        _TF = tf
    return _TF


def _funcs() -> dict[str, Callable[..., Any]]:
    """The compiled functions, traced once: every dimension is dynamic (``None``).

    Built and traced under a lock before they are published: two threads tracing the same
    ``tf.function`` for the first time at once can fail, and the engine blurs from threads.
    """
    if _FUNCS:
        return _FUNCS
    with _FUNCS_LOCK:
        if not _FUNCS:
            # Trace now, from one thread, and keep the concrete functions: calling them skips
            # tf.function's per-call signature matching (~1 ms a call, many calls per image).
            _TRACED.update(_build_funcs())
            _FUNCS.update({name: fn.get_concrete_function() for name, fn in _TRACED.items()})
    return _FUNCS


def _build_funcs() -> dict[str, Any]:
    tf = _tf()
    U8_3D, F32_2D, F32_3D = (3, tf.uint8), (2, tf.float32), (3, tf.float32)

    def typed(*args: tuple[int, Any]) -> Callable[[Callable], Any]:
        """``tf.function`` traced once for any sizes: each argument's rank and dtype, every
        dimension dynamic."""
        return tf.function(
            input_signature=[tf.TensorSpec([None] * rank, dtype) for rank, dtype in args]
        )

    def one_pass(x, band, axis):
        # 1-D VALID correlation along ``axis`` (1 or 2 of a [C, H, W] tensor) as tiles of T
        # outputs, each a product of its L = T + k - 1 inputs with the banded [L, T] matrix.
        # Matrix products use the fast GEMM kernels; a direct depthwise convolution on the CPU
        # is ~4x slower here.
        big, tile = tf.shape(band)[0], tf.shape(band)[1]
        n_in = tf.shape(x)[axis]
        n_out = n_in - (big - tile)
        tiles = (n_out + tile - 1) // tile
        extra = (tiles - 1) * tile + big - n_in
        pad = [[0, 0], [0, 0], [0, 0]]
        pad[axis] = [0, extra]
        frames = tf.signal.frame(tf.pad(x, pad), big, tile, axis=axis)
        s = tf.shape(x)
        if axis == 2:  # [C, H, tiles, L] @ [L, T]
            y = tf.reshape(tf.linalg.matmul(frames, band), [s[0], s[1], tiles * tile])
            return y[:, :, :n_out]
        # [T, L] @ [C, tiles, L, W]
        y = tf.reshape(tf.linalg.matmul(band, frames, transpose_a=True), [s[0], tiles * tile, s[2]])
        return y[:, :n_out, :]

    @typed(U8_3D, F32_2D)
    def blur(crop, band):
        """[H + k - 1, W + k - 1, C] uint8 (already reflect-padded) -> [H, W, C] float32."""
        x = tf.cast(tf.transpose(crop, [2, 0, 1]), tf.float32)
        y = one_pass(one_pass(x, band, 2), band, 1)
        return tf.transpose(y, [1, 2, 0])

    @typed(U8_3D, F32_3D, F32_2D)
    def composite(region, obscured, alpha):
        """``region + (obscured - region) * alpha``, i.e. ``obscured * alpha + region *
        (1 - alpha)`` with fewer passes (exactly ``region`` where alpha is 0), rounded half to
        even, as uint8."""
        x = tf.cast(region, tf.float32)
        out = x + (obscured - x) * alpha[:, :, None]
        # No clip (one pass less): blurs, cell means, fills and the interpolation are convex
        # combinations of 0..255 values and alpha is in [0, 1], so ``out`` is within float
        # rounding (~1e-4) of 0..255 and rounds to 0..255 (-0.0 casts to 0).
        return tf.cast(tf.round(out), tf.uint8)

    def separable(x, rows, cols):
        """``rows`` [H, h] and ``cols`` [W, w] applied to the [h, w, C] float32 ``x``: the
        whole blur (and interpolation) of each axis as one plain 2-D matrix product
        (batched small products are slow on the CPU); the wide product (rows) runs last,
        on the rows already narrowed to W columns."""
        s = tf.shape(x)
        width = tf.shape(cols)[0]
        # [W, w] @ [w, h * C] -> [W, h, C] -> [h, W * C], then [H, h] @ that.
        flat = tf.reshape(tf.transpose(x, [1, 0, 2]), [s[1], -1])
        wide = tf.reshape(tf.linalg.matmul(cols, flat), [width, s[0], s[2]])
        wide = tf.reshape(tf.transpose(wide, [1, 0, 2]), [s[0], -1])
        out = tf.linalg.matmul(rows, wide)  # [H, W * C]
        return tf.reshape(out, [tf.shape(rows)[0], width, s[2]])

    @typed(U8_3D, F32_2D)
    def blur_dense(crop, toeplitz):
        """What ``blur`` computes, for small regions: each axis as one product with a slice
        of ``toeplitz`` ([N, N + k - 1], row i the kernel from column i; N >= H and W),
        which is faster than the tiles up to a few hundred pixels a side."""
        s = tf.shape(crop)
        reach = tf.shape(toeplitz)[1] - tf.shape(toeplitz)[0]  # k - 1
        rows = toeplitz[: s[0] - reach, : s[0]]
        cols = toeplitz[: s[1] - reach, : s[1]]
        return separable(tf.cast(crop, tf.float32), rows, cols)

    @typed(F32_3D, F32_2D, F32_2D)
    def blur_up(cells, rows, cols):
        """Multi-resolution blur: [h + k - 1, w + k - 1, C] cell means (already padded by the
        kernel radius) -> [H, W, C] pixels, as two matrix products: ``cols`` [W, w + k - 1]
        and ``rows`` [H, h + k - 1] each compose the Gaussian on the cells with the bilinear
        interpolation back to pixels along their axis (see ``_upsample_matrix``)."""
        return separable(cells, rows, cols)

    # One call per region in the common case (one kernel): blur and composite fused, which
    # saves a dispatch and an intermediate tensor per region.
    @typed(U8_3D, F32_2D, U8_3D, F32_2D)
    def blur_composite(crop, band, region, alpha):
        return composite(region, blur(crop, band), alpha)

    @typed(U8_3D, F32_2D, U8_3D, F32_2D)
    def blur_dense_composite(crop, toeplitz, region, alpha):
        return composite(region, blur_dense(crop, toeplitz), alpha)

    @typed(F32_3D, F32_2D, F32_2D, U8_3D, F32_2D)
    def blur_up_composite(cells, rows, cols, region, alpha):
        return composite(region, blur_up(cells, rows, cols), alpha)

    return {
        "blur": blur,
        "composite": composite,
        "blur_up": blur_up,
        "blur_composite": blur_composite,
        "blur_dense": blur_dense,
        "blur_dense_composite": blur_dense_composite,
        "blur_up_composite": blur_up_composite,
    }


def _tile_for(size: int) -> int:
    """Outputs per tile: each costs T + k - 1 multiply-adds, so grow T with the kernel."""
    return 32 if size <= 31 else 64 if size <= 160 else 128


@lru_cache(maxsize=128)
def _band(key: tuple):
    """Banded [T + k - 1, T] matrix of a kernel, as a TF constant (built once per kernel)."""
    k = kernel_1d(key).astype(np.float32)
    return _tf().constant(np.ascontiguousarray(_banded(k, _tile_for(k.size)).T))


#: Regions up to this many pixels a side are blurred at full resolution with whole banded
#: (Toeplitz) matrices instead of tiles: more multiply-adds, far fewer operations. Measured on
#: 2 cores (AVX-512), 3 channels, a 43-tap kernel, ms tiles -> whole: 100x100 1.8 -> 0.9,
#: 150x200 6.8-8.0 -> 1.9-2.4, 360x640 24 -> 15; but 720x1280 69 -> 86.
DENSE_MAX_SIDE = 640


@lru_cache(maxsize=24)  # [N, N + k - 1] float32: up to ~2 MB each at N = DENSE_MAX_SIDE
def _toeplitz(key: tuple, n: int):
    """[n, n + k - 1] matrix of a kernel, row i holding it from column i, as a TF constant:
    its top-left [m, m + k - 1] block blurs m outputs (see ``blur_dense``)."""
    return _tf().constant(_banded(kernel_1d(key).astype(np.float32), n))


def _full_res_blur(
    image: np.ndarray, win: tuple[int, int, int, int], key: tuple
) -> tuple[str, tuple]:
    """The name of the blur function (``name + "_composite"``: fused with the composite) and
    its inputs for a full-resolution key over ``win``: whole matrices for small windows, tiles
    otherwise."""
    crop = _padded_crop(image, win, (key[0] - 1) // 2)
    side = max(win[2] - win[0], win[3] - win[1])
    if side > DENSE_MAX_SIDE:
        return "blur", (crop, _band(key))
    # A few matrix sizes per kernel (64, 128, 256, 512, DENSE_MAX_SIDE), each cut to the window.
    n = min(DENSE_MAX_SIDE, max(64, 1 << (side - 1).bit_length()))
    return "blur_dense", (crop, _toeplitz(key, n))


@lru_cache(maxsize=512)  # one int64 index per padded pixel of a side: <= 50 MB even at 12000 px
def _reflect_index(n: int, start: int, stop: int) -> np.ndarray:
    """Indices of ``numpy.pad(mode="reflect")`` for positions start..stop-1 of an axis of n,
    any pad width (repeated reflection), cached as a padding plan."""
    p = np.arange(start, stop)
    if n == 1:
        idx = np.zeros_like(p)
    else:
        period = 2 * (n - 1)
        p = np.mod(p, period)
        idx = np.where(p >= n, period - p, p)
    idx.setflags(write=False)
    return idx


def _padded_crop(image: np.ndarray, region: tuple[int, int, int, int], r: int) -> np.ndarray:
    """``image`` reflect-padded as a whole, cut to ``region`` grown by ``r`` on every side."""
    y0, x0, y1, x1 = region
    h, w = image.shape[:2]
    if y0 - r >= 0 and x0 - r >= 0 and y1 + r <= h and x1 + r <= w:
        return image[y0 - r : y1 + r, x0 - r : x1 + r]
    rows = _reflect_index(h, y0 - r, y1 + r)
    cols = _reflect_index(w, x0 - r, x1 + r)
    return image[rows[:, None], cols[None, :]]


def _reach(key: tuple) -> int:
    """Pixels beyond a region that its blur reads (per side)."""
    size, _, _, d = key
    return (size - 1) // 2 if d == 1 else ((size - 1) // 2 + 2) * d


def _lerp_plan(start: int, stop: int, d: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Bilinear from cells of ``d`` px (centres at ``(c + 0.5) d - 0.5``) to pixels
    start..stop-1: pixel p sits at cell coordinate ``u = (2 p + 1 - d) / 2 d``, between cells
    ``floor(u)`` and ``floor(u) + 1``. Returns the first cell, the cell count, and per pixel
    the cell index (from the first) and the weight ``u - floor(u)`` (exact rationals)."""
    num = 2 * np.arange(start, stop, dtype=np.int64) + 1 - d
    cell = num // (2 * d)
    frac = (num - 2 * d * cell) / (2 * d)
    first = int(cell[0])
    return first, int(cell[-1]) + 2 - first, cell - first, frac


@lru_cache(maxsize=64)  # [region side, ~60] float32 each: up to ~1 MB for a 4000 px side
def _upsample_matrix(start: int, stop: int, key: tuple) -> tuple[int, int, np.ndarray]:
    """One axis of a multi-resolution blur as a matrix: pixels start..stop-1 from the
    kernel-padded cells ``first - r .. first + count + r - 1``. Row p is the bilinear mix
    ``(1 - f) G[i] + f G[i + 1]`` of the Gaussian's rows for cells i and i + 1 (float64 sums,
    stored float32). Returns the first cell, the cell count (before padding) and the matrix."""
    first, count, idx, frac = _lerp_plan(start, stop, key[3])
    gauss = _banded(kernel_1d(key), count)
    rows = gauss[idx] * (1.0 - frac)[:, None] + gauss[idx + 1] * frac[:, None]
    out = rows.astype(np.float32)
    out.setflags(write=False)
    return first, count, out


def _cell_sums(a: np.ndarray, axis: int, n: int, c0: int, nc: int, d: int, offset: int, dtype):
    """Sums over cells c0..c0+nc-1 (cell c = positions ``[c d, (c + 1) d)`` of the
    reflect-padded axis of ``n`` px) along ``axis`` of ``a``, which holds that axis' pixels
    ``offset, offset + 1, ...``. Cells inside the image are summed in place; the few that
    reach into the padding are gathered first."""

    def summed(block: np.ndarray, cells: int) -> np.ndarray:
        # d strided adds (one pass over the block) beat a reduction over a middle axis.
        view = block.reshape(block.shape[:axis] + (cells, d) + block.shape[axis + 1 :])
        at = (slice(None),) * (axis + 1)
        acc = view[at + (0,)].astype(dtype)
        for k in range(1, d):
            np.add(acc, view[at + (k,)], out=acc)
        return acc

    def gathered(ca: int, cb: int) -> np.ndarray:
        return summed(np.take(a, _reflect_index(n, ca * d, cb * d) - offset, axis=axis), cb - ca)

    lo = min(max(c0, 0), c0 + nc)
    hi = min(max(n // d, lo), c0 + nc)
    parts = []
    if c0 < lo:
        parts.append(gathered(c0, lo))
    if lo < hi:
        index = [slice(None)] * a.ndim
        index[axis] = slice(lo * d - offset, hi * d - offset)
        parts.append(summed(a[tuple(index)], hi - lo))
    if hi < c0 + nc:
        parts.append(gathered(hi, c0 + nc))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)


def _cell_means(image: np.ndarray, cy: int, ny: int, cx: int, nx: int, d: int) -> np.ndarray:
    """Means over the d x d cells (cy.., cx..) of the reflect-padded image, float32 [ny, nx, C]
    (exact integer sums, in the narrowest integer type that holds them, divided in float32)."""
    h, w = image.shape[:2]
    rows = _reflect_index(h, cy * d, (cy + ny) * d)
    cols = _reflect_index(w, cx * d, (cx + nx) * d)
    ylo, yhi, xlo, xhi = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    column_sums = np.uint16 if 255 * d < 2**16 else np.uint32  # the first pass reads most data
    sums = _cell_sums(image[ylo:yhi, xlo:xhi], 0, h, cy, ny, d, ylo, column_sums)
    sums = _cell_sums(sums, 1, w, cx, nx, d, xlo, np.uint32 if 255 * d * d < 2**32 else np.uint64)
    return np.divide(sums, d * d, dtype=np.float32)


def _cell_window(region: tuple[int, int, int, int], key: tuple) -> tuple[int, int, int, int]:
    """Cells (first row, row count, first column, column count) a multi-resolution blur of
    ``region`` reads: the cells its interpolation uses, padded by the kernel radius."""
    r, d = (key[0] - 1) // 2, key[3]
    cy, ny, _, _ = _lerp_plan(region[0], region[2], d)
    cx, nx, _, _ = _lerp_plan(region[1], region[3], d)
    return cy - r, ny + 2 * r, cx - r, nx + 2 * r


class _CellGrid:
    """Cell means of one image, shared by its regions. Cells are aligned to the image origin,
    so every region blurred at factor d reads the same grid: when several regions need
    overlapping windows (a crowd, a 40 %-coverage frame), the union window is averaged once
    and sliced, instead of summing the shared margins once per region."""

    def __init__(self, image: np.ndarray, windows: dict[int, list[tuple[int, int, int, int]]]):
        self.image = image
        self.windows = windows
        # Averaged up front, so the region threads only read them.
        self.shared = {d: self._union(d) for d in windows}

    def means(self, d: int, window: tuple[int, int, int, int]) -> np.ndarray:
        cy, ny, cx, nx = window
        entry = self.shared.get(d)
        if entry is not None:
            (uy, uny, ux, unx), cells = entry
            if uy <= cy and cy + ny <= uy + uny and ux <= cx and cx + nx <= ux + unx:
                return cells[cy - uy : cy - uy + ny, cx - ux : cx - ux + nx]
        return _cell_means(self.image, cy, ny, cx, nx, d)

    def _union(self, d: int):
        wins = self.windows.get(d, [])
        if len(wins) < 2:
            return None
        y0 = min(w[0] for w in wins)
        y1 = max(w[0] + w[1] for w in wins)
        x0 = min(w[2] for w in wins)
        x1 = max(w[2] + w[3] for w in wins)
        # Worth it only when the union is no bigger than the windows summed one by one.
        if (y1 - y0) * (x1 - x0) > sum(w[1] * w[3] for w in wins):
            return None
        union = (y0, y1 - y0, x0, x1 - x0)
        return union, _cell_means(self.image, *union, d)


def _multires_inputs(grid: _CellGrid, region: tuple[int, int, int, int], key: tuple) -> tuple:
    """Arguments of ``blur_up`` for a multi-resolution key: padded cell means (from the
    image's shared grid) and the two blur-and-interpolate matrices (see the module docstring)."""
    cells = grid.means(key[3], _cell_window(region, key))
    _, _, rows = _upsample_matrix(region[0], region[2], key)
    _, _, cols = _upsample_matrix(region[1], region[3], key)
    return cells, rows, cols


def _multires_layer(grid: _CellGrid, region: tuple[int, int, int, int], key: tuple):
    """Blur of ``region`` for a multi-resolution key: cell means, Gaussian on the cells,
    bilinear back to pixels."""
    return _funcs()["blur_up"](*_multires_inputs(grid, region, key))


def _pixelate_layer(
    image: np.ndarray, rect: _Rect, block: int, region: tuple[int, int, int, int], f: int
) -> np.ndarray:
    """Mosaic of one box over ``region``: cells of ``block`` px aligned to the box's top-left
    corner, each the mean of the image pixels in it (cells clipped to the image)."""
    h, w = image.shape[:2]
    y0, x0, y1, x1 = region
    out = np.zeros((y1 - y0, x1 - x0, image.shape[2]), dtype=np.float32)
    # Cells covering the box's influence area (box + f - 1), clipped to the region.
    a, b = max(rect.y0 - (f - 1), y0), min(rect.y1 + (f - 1), y1)
    c, d = max(rect.x0 - (f - 1), x0), min(rect.x1 + (f - 1), x1)
    if a >= b or c >= d:
        return out
    cy0 = rect.y0 + ((a - rect.y0) // block) * block
    cx0 = rect.x0 + ((c - rect.x0) // block) * block
    ry = np.arange(cy0, b, block)
    rx = np.arange(cx0, d, block)
    ys, ye = np.clip(ry, 0, h), np.clip(ry + block, 0, h)
    xs, xe = np.clip(rx, 0, w), np.clip(rx + block, 0, w)
    sub = image[ys[0] : ye[-1], xs[0] : xe[-1]].astype(np.float64)
    sums = np.add.reduceat(np.add.reduceat(sub, ys - ys[0], axis=0), xs - xs[0], axis=1)
    means = sums / ((ye - ys)[:, None, None] * (xe - xs)[None, :, None])
    cell_y = (np.arange(a, b) - cy0) // block
    cell_x = (np.arange(c, d) - cx0) // block
    out[a - y0 : b - y0, c - x0 : d - x0] = means[cell_y[:, None], cell_x[None, :]]
    return out


def _fill_value(settings: BlurSettings, channels: int) -> np.ndarray:
    r, g, b = (float(c) for c in settings.fill_color)
    if channels == 1:
        return np.array([0.299 * r + 0.587 * g + 0.114 * b], dtype=np.float32)
    return np.array([r, g, b], dtype=np.float32)


def _rects_in(rects: Sequence[_Rect], region: tuple[int, int, int, int], f: int) -> list[_Rect]:
    """The boxes whose smoothed mask reaches into ``region``."""
    y0, x0, y1, x1 = region
    return [
        r
        for r in rects
        if r.y0 < y1 + f - 1 and y0 < r.y1 + f - 1 and r.x0 < x1 + f - 1 and x0 < r.x1 + f - 1
    ]


def _anonymize_region(
    image: np.ndarray,
    out: np.ndarray,
    inside: Sequence[_Rect],
    region: tuple[int, int, int, int],
    settings: BlurSettings,
    f: int,
    grid: _CellGrid,
) -> None:
    """Obscure one region of ``image`` (colour channels only) into ``out``."""
    tf = _tf()
    fn = _funcs()
    h, w = image.shape[:2]
    y0, x0, y1, x1 = region
    norm = float(f**4)
    alpha = _smoothed_mask_int(h, w, inside, region, f)
    if not alpha.any():
        return
    if settings.mode == "pixelate":
        groups: list[list[_Rect]] = [[r] for r in inside]
    elif settings.mode == "fill":
        groups = [list(inside)]
    else:
        by_key: dict[tuple, list[_Rect]] = {}
        for r in inside:
            by_key.setdefault(r.key, []).append(r)
        groups = [by_key[k] for k in sorted(by_key, key=lambda k: (k[0], k[1] or 0.0))]

    def layer(group: list[_Rect], win: tuple[int, int, int, int]):
        """The group's obscured pixels over ``win`` (a part of the region)."""
        wy0, wx0, wy1, wx1 = win
        if settings.mode == "fill":
            return tf.broadcast_to(
                _fill_value(settings, image.shape[2]), (wy1 - wy0, wx1 - wx0, image.shape[2])
            )
        if settings.mode == "pixelate":
            sigma = box_sigma(settings, group[0].size, group[0].size)
            block = max(2, int(round(2 * sigma)))
            return tf.constant(_pixelate_layer(image, group[0], block, win, f))
        key = group[0].key
        if key[3] > 1:
            return _multires_layer(grid, win, key)
        name, args = _full_res_blur(image, win, key)
        return fn[name](*args)

    alpha_f = np.divide(alpha, norm, dtype=np.float32)
    if len(groups) == 1 and settings.mode == "blur":
        key = groups[0][0].key
        if key[3] > 1:
            args = _multires_inputs(grid, region, key)
            result = fn["blur_up_composite"](*args, image[y0:y1, x0:x1], alpha_f)
        else:
            name, args = _full_res_blur(image, region, key)
            result = fn[f"{name}_composite"](*args, image[y0:y1, x0:x1], alpha_f)
        out[y0:y1, x0:x1] = result.numpy()
        return
    if len(groups) == 1:
        obscured = layer(groups[0], region)
    else:
        # Several kernels (a crowd: faces of many sizes; or one mosaic per box): each group's
        # layer and weight are computed only where its own boxes reach, not over the region.
        parts = []
        total = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
        for g in groups:
            win = _group_window(g, region, f)
            weight = _smoothed_mask_int(h, w, g, win, f).astype(np.float32)
            if weight.any():
                at = _within(win, region)
                total[at] += weight
                parts.append((g, win, at, weight))
        np.maximum(total, 1.0, out=total)
        obscured = np.zeros((y1 - y0, x1 - x0, image.shape[2]), dtype=np.float32)
        for g, win, at, weight in parts:
            obscured[at] += np.asarray(layer(g, win)) * (weight / total[at])[:, :, None]
    result = fn["composite"](image[y0:y1, x0:x1], obscured, alpha_f)
    out[y0:y1, x0:x1] = result.numpy()


def _group_window(
    group: Sequence[_Rect], region: tuple[int, int, int, int], f: int
) -> tuple[int, int, int, int]:
    """The part of ``region`` that the smoothed masks of ``group``'s boxes reach."""
    y0, x0, y1, x1 = region
    r = f - 1
    return (
        max(min(b.y0 for b in group) - r, y0),
        max(min(b.x0 for b in group) - r, x0),
        min(max(b.y1 for b in group) + r, y1),
        min(max(b.x1 for b in group) + r, x1),
    )


def _within(
    win: tuple[int, int, int, int], region: tuple[int, int, int, int]
) -> tuple[slice, slice]:
    """Index of ``win`` in an array that holds ``region``."""
    return (
        slice(win[0] - region[0], win[2] - region[0]),
        slice(win[1] - region[1], win[3] - region[1]),
    )


# Regions are disjoint, so an image's regions are obscured side by side: one region's NumPy
# work (masks, cell means, copies) and call overhead overlap another's TensorFlow compute.
# Measured on 2 cores (serial -> threaded, ms per image): 1080p at 40 % coverage, 6 regions,
# 46-60 -> 38-53; at 3 %, 3 regions, 13-14 -> 12; 400x300 with 40 small faces 61 -> 52.
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


# A region of at least twice this many pixels is cut into row strips for the threads (each
# pixel's value does not depend on the region it is computed in). Measured on 2 cores: one
# 28 % x 36 % face on a 12000x8000 photo 0.80 -> 0.54 s; a whole 1080p frame at the seed's
# fixed 21 px kernel (TensorFlow-bound) unchanged, 78 vs 79 ms.
STRIP_PIXELS = 500_000
STRIP_MAX_PIXELS = 4_000_000
STRIP_MIN_ROWS = 64


def pool_workers() -> int:
    """Threads that obscure an image's regions: the cores, at most 4."""
    try:  # the cores this process may use (taskset, container quotas), not the host's
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(4, max(1, cpus))


def _region_pool() -> ThreadPoolExecutor | None:
    """The shared pool that obscures regions (None on a single core). Callers that already
    blur several images at once (the engine's writers) share it, and region jobs start no
    jobs of their own, so waiting on them cannot deadlock."""
    global _POOL
    if pool_workers() < 2:
        return None
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(pool_workers(), thread_name_prefix="anon-blur")
    return _POOL


def _forget_pool_in_child() -> None:
    # A forked child inherits the pool object but none of its threads: start a new one there.
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _strips(
    regions: Sequence[tuple[int, int, int, int]], workers: int
) -> list[tuple[int, int, int, int]]:
    """``regions`` with each large one cut into up to ``workers`` strips of whole rows (more
    when a strip would exceed ``STRIP_MAX_PIXELS``)."""
    out: list[tuple[int, int, int, int]] = []
    for y0, x0, y1, x1 in regions:
        pixels = (y1 - y0) * (x1 - x0)
        n = max(1, min(workers, pixels // STRIP_PIXELS, (y1 - y0) // STRIP_MIN_ROWS))
        # Whatever the workers, no strip above STRIP_MAX_PIXELS: a face filling a 100 MP
        # scan must not need gigabytes of float32 layers at once.
        n = max(n, min(-(-pixels // STRIP_MAX_PIXELS), (y1 - y0) // STRIP_MIN_ROWS))
        cuts = [y0 + (i * (y1 - y0)) // n for i in range(n + 1)]
        out.extend((cuts[i], x0, cuts[i + 1], x1) for i in range(n))
    return out


def _plan(
    height: int, width: int, rects: Sequence[_Rect], f: int
) -> list[tuple[int, int, int, int]]:
    regions = _regions(height, width, rects, f)
    # Margins cost a full-resolution blur each; a multi-resolution blur only sums a few more
    # cells there, so merging regions never pays for it (it only grows the composite).
    margin = max((_reach(r.key) for r in rects if r.key[3] == 1), default=0)
    work = sum((b[2] - b[0] + 2 * margin) * (b[3] - b[1] + 2 * margin) for b in regions)
    # Only when one kernel serves every box: with several, each kernel is computed over its
    # own boxes' window anyway, so a merged region saves no margin and adds a whole-image
    # composite (video frames with a dozen faces of many sizes: 32 -> 25-26 ms per frame).
    one_kernel = len({r.key for r in rects}) == 1
    if margin and one_kernel and len(regions) > 1 and work > WHOLE_IMAGE_SHARE * height * width:
        return [(0, 0, height, width)]
    return regions


def anonymize_image(
    image: np.ndarray, detections: Sequence[Detection], settings: BlurSettings = BlurSettings()
) -> np.ndarray:
    """Anonymized copy of a uint8 HxW, HxWx1, HxWx3 or HxWx4 image (alpha left untouched)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
    out = image.copy()
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        return out
    _obscure_rects(image, out, _rects(height, width, detections, settings), settings)
    return out


def _obscure_rects(
    image: np.ndarray, out: np.ndarray, rects: Sequence[_Rect], settings: BlurSettings
) -> None:
    """Obscure ``rects`` (pixel boxes of ``image``) into ``out``, a copy of ``image``."""
    height, width = image.shape[:2]
    if not rects:
        return
    colour = image[:, :, None] if image.ndim == 2 else image[:, :, : min(3, image.shape[2])]
    target = out[:, :, None] if out.ndim == 2 else out[:, :, : colour.shape[2]]
    f = _feather_half(settings)
    pool = _region_pool()
    regions = _strips(_plan(height, width, rects, f), pool_workers() if pool is not None else 1)
    work = [(region, _rects_in(rects, region, f)) for region in regions]
    windows: dict[int, list[tuple[int, int, int, int]]] = {}
    if settings.mode == "blur":
        for region, inside in work:
            for key in {r.key for r in inside if r.key[3] > 1}:
                windows.setdefault(key[3], []).append(_cell_window(region, key))
    grid = _CellGrid(colour, windows)
    if pool is None or len(work) == 1:
        for region, inside in work:
            _anonymize_region(colour, target, inside, region, settings, f, grid)
        return
    _funcs()  # TensorFlow loaded and the functions traced once, before any thread uses them
    jobs = [
        pool.submit(_anonymize_region, colour, target, inside, region, settings, f, grid)
        for region, inside in work
    ]
    for job in jobs:
        job.result()


def _window_reach(rect: _Rect, settings: BlurSettings) -> int:
    """Pixels beyond its region that obscuring ``rect`` reads: the kernel's reach and its
    cells (blur), a mosaic block (pixelate), nothing (fill)."""
    if settings.mode == "fill":
        return 0
    if settings.mode == "pixelate":
        return max(2, int(round(2 * box_sigma(settings, rect.size, rect.size)))) + 1
    return _reach(rect.key) + 2 * rect.key[3]


def anonymize_pil_in_place(
    image, detections: Sequence[Detection], settings: BlurSettings = BlurSettings()
) -> None:
    """Obscure a Pillow image (mode L, RGB or RGBA) in place, one window at a time: for images
    too large to hold twice (a 20000 x 20000 scan is 1.2 GB of pixels).

    Each region is cut out with a margin wide enough for everything its pixels depend on
    (kernel reach, cells, feather), the window's origin on a multiple of every cell size in
    it so cells stay aligned to the image origin, obscured as an image of its own with the
    same pixel boxes, and pasted back: byte for byte what :func:`anonymize_image` gives.
    """
    from PIL import Image

    width, height = image.size
    rects = _rects(height, width, detections, settings)
    f = _feather_half(settings)
    for region in _regions(height, width, rects, f):
        inside = _rects_in(rects, region, f)
        factors = {r.key[3] for r in inside} or {1}
        align = math.lcm(*factors)
        if align > 4096:  # cells of very different sizes: align the largest, the rest are
            align = max(factors)  # within a level of the whole-image result
        margin = max(_window_reach(r, settings) for r in inside) + f
        y0, x0, y1, x1 = region
        wy0, wx0 = (max(0, y0 - margin) // align) * align, (max(0, x0 - margin) // align) * align
        wy1, wx1 = min(height, y1 + margin), min(width, x1 + margin)
        window = np.asarray(image.crop((wx0, wy0, wx1, wy1)))
        out = window.copy()
        shifted = [
            _Rect(r.y0 - wy0, r.x0 - wx0, r.y1 - wy0, r.x1 - wx0, r.ellipse, r.key, r.size)
            for r in inside
        ]
        _obscure_rects(window, out, shifted, settings)
        core = np.ascontiguousarray(out[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0])
        image.paste(Image.fromarray(core), (x0, y0))


def anonymize_batch(
    images: Sequence[np.ndarray],
    detections: Sequence[Sequence[Detection]],
    settings: BlurSettings = BlurSettings(),
) -> list[np.ndarray]:
    """:func:`anonymize_image` over a batch of images of any sizes (functions and kernels are
    shared, so the batch costs no retracing)."""
    if len(images) != len(detections):
        raise ValueError(f"{len(images)} images but {len(detections)} detection lists")
    return [
        anonymize_image(im, dets, settings) for im, dets in zip(images, detections, strict=True)
    ]
