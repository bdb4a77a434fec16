"""The TensorFlow engine: separable blur as matrix products (whole banded matrices for small
regions, tiles for large ones), multi-resolution Gaussians and pixelation (GPU when present)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from ..core.tf_runtime import import_tensorflow, quiet_tensorflow_start
from .kernels import _banded, kernel_1d
from .masks import _Rect

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
