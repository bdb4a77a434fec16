"""Obscure an image region by region: the plan, the thread pool, whole images, images held by
Pillow (window by window) and batches."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..core.boxes import Detection
from .kernels import box_sigma
from .masks import _feather_half, _Rect, _rects, _regions, _smoothed_mask_int
from .settings import DEFAULT_SETTINGS, BlurSettings
from .tf_ops import (
    WHOLE_IMAGE_SHARE,
    _cell_window,
    _CellGrid,
    _full_res_blur,
    _funcs,
    _multires_inputs,
    _multires_layer,
    _pixelate_layer,
    _reach,
    _tf,
)


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
    image: np.ndarray, detections: Sequence[Detection], settings: BlurSettings = DEFAULT_SETTINGS
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
    image, detections: Sequence[Detection], settings: BlurSettings = DEFAULT_SETTINGS
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
    settings: BlurSettings = DEFAULT_SETTINGS,
) -> list[np.ndarray]:
    """:func:`anonymize_image` over a batch of images of any sizes (functions and kernels are
    shared, so the batch costs no retracing)."""
    if len(images) != len(detections):
        raise ValueError(f"{len(images)} images but {len(detections)} detection lists")
    return [
        anonymize_image(im, dets, settings) for im, dets in zip(images, detections, strict=True)
    ]
