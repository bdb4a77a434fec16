"""Box geometry and smoothed masks in exact integer arithmetic (NumPy), and the regions to obscure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.boxes import FACE, Detection, scale_box
from .kernels import _kernel_key
from .settings import DEFAULT_SETTINGS, BlurSettings

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
    settings: BlurSettings = DEFAULT_SETTINGS,
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
