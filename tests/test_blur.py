"""The blur module against an independent float64 NumPy reference of the same maths.

The reference works on the whole image with 2-D kernels and ``numpy.pad``; the module works on
regions with separable float32 passes. Inside the smoothed mask they may differ by one level
(float32 vs float64 at the rounding point); outside it they must be byte-identical.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from fiftyone_anonymizer.blur import (
    BlurSettings,
    anonymize_batch,
    anonymize_image,
    box_sigma,
    kernels,
    masks,
    obscured_region,
    regions,
    seed_kernel_std_px,
    tf_ops,
)
from fiftyone_anonymizer.blur.tf_ops import _funcs
from fiftyone_anonymizer.core import tf_runtime
from fiftyone_anonymizer.core.boxes import FACE, PLATE, Detection, scale_box

DEFAULT = BlurSettings()

# ------------------------------------------------------------------------------------------
# Reference (deliberately plain: whole image, 2-D kernels, float64)
# ------------------------------------------------------------------------------------------


def ref_kernel_2d(settings: BlurSettings, sigma: float) -> np.ndarray:
    if settings.seed_sigma is not None:
        k, s = settings.kernel_size, settings.seed_sigma
        d = (2 * s + 1.0) / k
        x = np.linspace(-s - d / 2, s + d / 2, k + 1)
        cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
        raw = np.sqrt(np.outer(np.diff(cdf), np.diff(cdf)))
        return raw / raw.sum()
    size = settings.kernel_size or 2 * math.ceil(3 * sigma) + 1
    r = size // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    raw = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return raw / raw.sum()


def ref_correlate(image: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """VALID correlation of the padded HxWxC float64 image with a 2-D kernel."""
    k = kernel.shape[0]
    r = k // 2
    padded = np.pad(image, ((r, r), (r, r), (0, 0)), mode=mode)
    h, w = image.shape[:2]
    out = np.zeros(image.shape, dtype=np.float64)
    for i in range(k):
        windows = sliding_window_view(padded[i : i + h], k, axis=1)[:, :w]  # H, W, C, k
        out += windows @ kernel[i]
    return out


# Wide derived Gaussians: the module's documented multi-resolution rule, restated here.
MULTIRES_SIGMA, MULTIRES_STEP = 8.0, 3.0


def ref_multires(colour: np.ndarray, sigma: float) -> np.ndarray:
    """Whole-image multi-resolution blur: means over d x d cells of the reflect-padded image
    (cells aligned to the image origin), a 2-D Gaussian of sqrt((sigma/d)^2 - 1/4) cells
    (VALID), then bilinear interpolation with half-pixel centres back to every pixel."""
    d = int(sigma // MULTIRES_STEP)
    s = math.sqrt((sigma / d) ** 2 - 0.25)
    r = math.ceil(3 * s)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    g = np.exp(-(xx**2 + yy**2) / (2 * s * s))
    g /= g.sum()
    h, w = colour.shape[:2]
    # Cells -1-r .. ceil(n/d)+r per axis: the bilinear step reads cells -1 .. ceil(n/d).
    ny, nx = -(-h // d) + 2 * r + 2, -(-w // d) + 2 * r + 2
    before = (r + 1) * d
    padded = np.pad(
        colour, ((before, ny * d - before - h), (before, nx * d - before - w), (0, 0)), "reflect"
    )
    cells = padded.reshape(ny, d, nx, d, -1).mean(axis=(1, 3))
    blurred = np.zeros((ny - 2 * r, nx - 2 * r, cells.shape[2]))
    for i in range(2 * r + 1):
        windows = sliding_window_view(cells[i : i + ny - 2 * r], 2 * r + 1, axis=1)
        blurred += windows @ g[i]  # blurred[j] is cell j - 1

    def lerp(n: int, count: int) -> np.ndarray:
        u = (np.arange(n) + 0.5) / d - 0.5
        i0 = np.floor(u).astype(int)
        m = np.zeros((n, count))
        m[np.arange(n), i0 + 1] += 1 - (u - i0)
        m[np.arange(n), i0 + 2] += u - i0
        return m

    ly, lx = lerp(h, blurred.shape[0]), lerp(w, blurred.shape[1])
    return np.einsum("yi,ixc->yxc", ly, np.einsum("ijc,xj->ixc", blurred, lx))


def ref_blur(colour: np.ndarray, settings: BlurSettings, sigma: float) -> np.ndarray:
    if settings.kernel_size is None and sigma > MULTIRES_SIGMA:
        return ref_multires(colour, sigma)
    return ref_correlate(colour, ref_kernel_2d(settings, sigma), "reflect")


def ref_geometry(h: int, w: int, dets, settings: BlurSettings):
    """Per box: (bool HxW mask, sigma in px, kernel identity)."""
    boxes = []
    for d in dets:
        if d.box[2] <= 0 or d.box[3] <= 0:
            continue
        x, y, bw, bh = scale_box(d.box, settings.box_scale)
        x0 = min(max(math.floor(x * w + 0.5), 0), w - 1)
        y0 = min(max(math.floor(y * h + 0.5), 0), h - 1)
        x1 = min(max(math.floor((x + bw) * w + 0.5), x0 + 1), w)
        y1 = min(max(math.floor((y + bh) * h + 0.5), y0 + 1), h)
        mask = np.zeros((h, w), dtype=bool)
        ellipse = settings.shape == "ellipse" or (settings.shape == "auto" and d.label == FACE)
        if ellipse:
            yy, xx = np.mgrid[0:h, 0:w]
            a, b = x1 - x0, y1 - y0  # full axes; centres and pixel centres doubled -> integers
            mask = (2 * xx + 1 - x0 - x1) ** 2 * b * b + (2 * yy + 1 - y0 - y1) ** 2 * a * a <= (
                a * a * b * b
            )
        else:
            mask[y0:y1, x0:x1] = True
        sigma = box_sigma(
            settings, d.box[2] * w * settings.box_scale, d.box[3] * h * settings.box_scale
        )
        boxes.append((mask, sigma, (y0, x0)))
    return boxes


def ref_smooth(mask: np.ndarray, feather: int) -> np.ndarray:
    """Seed's tent smoothing (edge-replicated at the image border), in exact integers / f^4."""
    f = max(1, (feather + 1) // 2)
    tent = np.array([f - abs(i - (f - 1)) for i in range(2 * f - 1)], dtype=np.int64)
    k2 = np.outer(tent, tent)
    r = f - 1
    padded = np.pad(mask.astype(np.int64), r, mode="edge")
    h, w = mask.shape
    out = np.zeros((h, w), dtype=np.int64)
    for i in range(2 * f - 1):
        for j in range(2 * f - 1):
            out += k2[i, j] * padded[i : i + h, j : j + w]
    return out / float(f**4)


def ref_pixelate(image: np.ndarray, corner: tuple[int, int], block: int) -> np.ndarray:
    """Mosaic of cells aligned to the box's top-left corner, each its mean over the image."""
    y0, x0 = corner
    h, w = image.shape[:2]
    out = np.zeros(image.shape, dtype=np.float64)
    for cy in range(y0 - 64 * block, h, block):
        for cx in range(x0 - 64 * block, w, block):
            a, b, c, d = max(cy, 0), min(cy + block, h), max(cx, 0), min(cx + block, w)
            if a < b and c < d:
                out[a:b, c:d] = image[a:b, c:d].reshape(-1, image.shape[2]).mean(axis=0)
    return out


def ref_anonymize(image: np.ndarray, dets, settings: BlurSettings = DEFAULT):
    """Return (output uint8, alpha float64 HxW)."""
    squeeze = image.ndim == 2
    img = image[:, :, None] if squeeze else image
    ncol = min(3, img.shape[2])
    colour = img[:, :, :ncol].astype(np.float64)
    h, w = img.shape[:2]
    boxes = ref_geometry(h, w, dets, settings)
    out = img.copy()
    if not boxes:
        return out.reshape(image.shape), np.zeros((h, w))
    union = np.zeros((h, w), dtype=bool)
    for m, _, _ in boxes:
        union |= m
    alpha = ref_smooth(union, settings.feather)
    layers = []  # (weight, layer)
    if settings.mode == "blur":
        for sigma in sorted({s for _, s, _ in boxes}):
            mask = np.zeros((h, w), dtype=bool)
            for m, s, _ in boxes:
                mask |= m if s == sigma else False
            layers.append(
                (
                    ref_smooth(mask, settings.feather),
                    ref_blur(colour, settings, sigma),
                )
            )
    elif settings.mode == "fill":
        r, g, b = settings.fill_color
        value = [0.299 * r + 0.587 * g + 0.114 * b] if ncol == 1 else [r, g, b]
        layers.append((alpha, np.broadcast_to(np.array(value, dtype=np.float64), colour.shape)))
    else:
        for m, sigma, corner in boxes:
            block = max(2, round(2 * sigma))
            layers.append((ref_smooth(m, settings.feather), ref_pixelate(colour, corner, block)))
    total = sum(wt for wt, _ in layers)
    obscured = (
        sum(wt[:, :, None] * lay for wt, lay in layers) / np.maximum(total, 1e-300)[:, :, None]
    )
    mixed = colour * (1 - alpha[:, :, None]) + obscured * alpha[:, :, None]
    out[:, :, :ncol] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out.reshape(image.shape), alpha


def check(image, dets, settings=DEFAULT):
    before = image.copy()
    got = anonymize_image(image, dets, settings)
    want, alpha = ref_anonymize(image, dets, settings)
    assert np.array_equal(image, before), "input modified in place"
    assert got.shape == image.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want.astype(int))
    diff = diff if diff.ndim == 3 else diff[:, :, None]
    inside = alpha > 0
    assert diff[inside].max(initial=0) <= 1, f"max diff inside {diff[inside].max()}"
    signed = got.astype(int) - want.astype(int)
    if inside.sum() > 200:  # rounded, not truncated: the 1-level misses are rare and unbiased
        assert abs(signed[inside].mean()) < 0.05 and (diff[inside] > 0).mean() < 0.05
    assert np.array_equal(got[~inside], image[~inside]), "pixels outside the mask changed"
    assert inside.any() == bool(ref_geometry(*image.shape[:2], dets, settings))
    if (alpha >= 0.5).sum() > 4:
        assert not np.array_equal(got, image), "nothing was obscured"
    if image.ndim == 3 and image.shape[2] == 4:
        assert np.array_equal(got[:, :, 3], image[:, :, 3]), "alpha channel changed"
    return got


def textured(h: int, w: int, c: int | None = 3, seed: int = 0) -> np.ndarray:
    """Noise plus gradients: every level matters, and blur visibly changes it."""
    rng = np.random.default_rng(seed)
    shape = (h, w) if c is None else (h, w, c)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx * 255 // max(w - 1, 1) + yy * 128 // max(h - 1, 1)) % 256
    base = base if c is None else base[:, :, None]
    return ((base + rng.integers(0, 256, shape)) % 256).astype(np.uint8)


def det(label, x, y, w, h, width, height):
    return Detection(label, 0.9, (x / width, y / height, w / width, h / height))


SEED = BlurSettings.from_seed_kernel("21,2,9")

# ------------------------------------------------------------------------------------------
# Synthetic images
# ------------------------------------------------------------------------------------------

W, H = 120, 90
CASES = {
    "borders": [
        det(FACE, 0, 0, 30, 25, W, H),
        det(PLATE, W - 20, 0, 20, 15, W, H),
        det(PLATE, 0, H - 12, 40, 12, W, H),
        det(FACE, W - 25, H - 30, 25, 30, W, H),
    ],
    "overlap": [
        det(FACE, 30, 20, 40, 40, W, H),
        det(PLATE, 50, 40, 50, 25, W, H),
        det(FACE, 35, 25, 10, 10, W, H),
    ],
    "one_pixel": [
        det(PLATE, 10, 10, 1, 1, W, H),
        det(FACE, 60, 45, 1, 1, W, H),
        det(PLATE, W - 1, H - 1, 1, 1, W, H),
    ],
    "whole_image": [Detection(PLATE, 0.9, (0.0, 0.0, 1.0, 1.0))],
    # One region holding faces of many sizes (many kernels), each reaching only part of it.
    "crowd": [det(FACE, 4 + 13 * i, 30 + (i % 3) * 9, 4 + 2 * i, 5 + 2 * i, W, H) for i in range(8)]
    + [det(PLATE, 70, 75, 30, 10, W, H)],
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    "settings",
    [
        BlurSettings(),
        SEED,
        BlurSettings(kernel_size=15, sigma=3.0, shape="ellipse", box_scale=1.0, feather=5),
        BlurSettings(kernel_size=9, feather=0, shape="rectangle"),
    ],
    ids=["default", "seed", "fixed_ellipse", "hard_edge"],
)
@pytest.mark.parametrize("dense_max_side", [tf_ops.DENSE_MAX_SIDE, 0], ids=["whole", "tiles"])
def test_matches_reference(case, settings, dense_max_side, monkeypatch):
    # Small regions blur with whole matrices, large ones with tiles: both checked here.
    monkeypatch.setattr(tf_ops, "DENSE_MAX_SIDE", dense_max_side)
    check(textured(H, W, seed=len(case)), CASES[case], settings)


@pytest.mark.parametrize("channels", [None, 1, 4], ids=["gray", "hw1", "rgba"])
def test_grayscale_and_rgba(channels):
    check(textured(H, W, channels, seed=3), CASES["overlap"] + CASES["borders"][:2], SEED)


@pytest.mark.parametrize("mode", ["pixelate", "fill"])
def test_pixelate_and_fill(mode):
    settings = BlurSettings(mode=mode, fill_color=(200, 30, 90))
    check(textured(H, W, seed=4), CASES["overlap"] + CASES["borders"], settings)
    check(textured(H, W, None, seed=5), CASES["borders"], settings)


def test_flat_image_stays_flat():
    # Blurring a constant gives the constant back: truncation would turn 200 into 199.
    image = np.full((60, 80, 3), 200, np.uint8)
    for settings in (DEFAULT, SEED, BlurSettings(mode="pixelate")):
        assert np.array_equal(anonymize_image(image, CASES["overlap"], settings), image)


def test_fill_is_solid_inside():
    image = textured(60, 80)
    out = anonymize_image(
        image, [det(PLATE, 20, 20, 30, 20, 80, 60)], BlurSettings(mode="fill", box_scale=1.0)
    )
    assert (out[25:35, 25:45] == 0).all()


def test_kernel_wider_than_image():
    # Reflect padding wider than the image repeats the reflection, as numpy.pad does.
    image = textured(12, 9, seed=6)
    check(
        image,
        [Detection(PLATE, 0.9, (0.2, 0.2, 0.5, 0.5))],
        BlurSettings(kernel_size=41, sigma=8.0),
    )
    check(textured(1, 7, seed=7), [Detection(PLATE, 0.9, (0.0, 0.0, 1.0, 1.0))], SEED)


def test_whole_image_fallback_many_boxes():
    w, h = 200, 150
    dets = [
        det(FACE if (i + j) % 2 else PLATE, 10 + 45 * i, 8 + 35 * j, 30, 25, w, h)
        for i in range(4)
        for j in range(4)
    ]
    check(textured(h, w, seed=8), dets, BlurSettings())
    check(textured(h, w, seed=8), dets, SEED)


# ------------------------------------------------------------------------------------------
# Wide Gaussians (multi-resolution path)
# ------------------------------------------------------------------------------------------

LH, LW = 180, 240
LARGE = [
    det(FACE, 0, 0, 110, 90, LW, LH),  # touches two borders; sigma ~ 13 px (factor 3)
    det(PLATE, 90, 60, 120, 70, LW, LH),  # overlaps the face; factor 3-4
    det(FACE, 150, 70, 20, 20, LW, LH),  # small: full-resolution kernel, inside the plate
    det(PLATE, LW - 70, LH - 40, 70, 40, LW, LH),  # bottom-right corner
]


@pytest.mark.parametrize(
    "settings",
    [
        BlurSettings(),
        BlurSettings(strength=0.35),  # sigmas 32-54 px: margins reflect more than once
        BlurSettings(sigma=30.0, shape="rectangle", feather=5),
    ],
    ids=["default", "strong", "fixed_sigma"],
)
def test_large_sigma_matches_reference(settings):
    sigmas = {box_sigma(settings, d.box[2] * LW * 1.3, d.box[3] * LH * 1.3) for d in LARGE}
    assert max(sigmas) > MULTIRES_SIGMA  # the case exercises the multi-resolution path
    check(textured(LH, LW, seed=11), LARGE, settings)
    check(textured(LH, LW, None, seed=12), LARGE[:2], settings)


def test_large_sigma_tiny_images():
    # Cells wider than the image: every cell is built from repeated reflections.
    whole = [Detection(PLATE, 0.9, (0.0, 0.0, 1.0, 1.0))]
    check(textured(12, 9, seed=13), whole, BlurSettings(sigma=40.0))
    check(textured(1, 30, seed=14), whole, BlurSettings(sigma=20.0))
    check(textured(30, 1, 4, seed=15), whole, BlurSettings(sigma=9.0, feather=0))


def test_regions_share_one_cell_grid(monkeypatch):
    # Four separate boxes blurred at the same factor: their cell windows overlap, so the cell
    # means are computed once over the union and sliced per region (and match the reference).
    h, w = 160, 260
    boxes = [
        det(FACE, 10, 10, 40, 40, w, h),
        det(PLATE, 200, 15, 50, 30, w, h),
        det(FACE, 20, 110, 40, 40, w, h),
        det(PLATE, 190, 120, 60, 30, w, h),
    ]
    settings = BlurSettings(sigma=20.0)
    calls = []
    real = tf_ops._cell_means
    monkeypatch.setattr(tf_ops, "_cell_means", lambda *a: calls.append(a[1:]) or real(*a))
    check(textured(h, w, seed=21), boxes, settings)
    assert len(regions._plan(h, w, masks._rects(h, w, boxes, settings), 5)) == 4
    assert len(calls) == 1


def counting_pool(monkeypatch):
    """A 2-thread pool installed as the blur's region pool, and the list of its jobs."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(2)
    submitted = []
    real_submit = pool.submit
    monkeypatch.setattr(pool, "submit", lambda *a: submitted.append(a) or real_submit(*a))
    monkeypatch.setattr(regions, "_region_pool", lambda: pool)
    monkeypatch.setattr(regions, "pool_workers", lambda: 2)
    return pool, submitted


def test_regions_obscured_side_by_side_match_one_by_one(monkeypatch):
    # Several regions with full-resolution and multi-resolution kernels, mixed in one region:
    # the threads give the same bytes as the serial path (which a single core takes), and
    # both match the reference.
    h, w = 400, 640
    boxes = [
        det(FACE, 20, 20, 30, 36, w, h),
        det(PLATE, 400, 30, 90, 30, w, h),
        det(FACE, 40, 220, 90, 80, w, h),
        det(FACE, 100, 240, 20, 24, w, h),
        det(PLATE, 380, 300, 60, 30, w, h),
    ]
    image = textured(h, w, seed=22)
    rects = masks._rects(h, w, boxes, DEFAULT)
    assert len(regions._plan(h, w, rects, 5)) == 4
    assert {r.key[3] > 1 for r in rects} == {True, False}
    pool, submitted = counting_pool(monkeypatch)
    check(image, boxes, DEFAULT)
    threaded = anonymize_image(image, boxes, DEFAULT)
    assert len(submitted) == 8
    monkeypatch.setattr(regions, "_region_pool", lambda: None)
    np.testing.assert_array_equal(anonymize_image(image, boxes, DEFAULT), threaded)
    pool.shutdown()


@pytest.mark.parametrize(
    "settings", [DEFAULT, SEED, BlurSettings(mode="pixelate")], ids=["multires", "seed", "pixelate"]
)
def test_one_big_region_cut_into_strips_for_the_threads(monkeypatch, settings):
    # A region that fills most of the image is cut into row strips (here at a lowered size
    # limit); each pixel comes out as it does from the whole region, and as the reference says.
    h, w = 150, 180
    boxes = [det(FACE, 20, 15, 140, 120, w, h), det(PLATE, 60, 100, 50, 20, w, h)]
    image = textured(h, w, seed=23)
    whole = anonymize_image(image, boxes, settings)
    monkeypatch.setattr(regions, "STRIP_PIXELS", 6000)
    monkeypatch.setattr(regions, "STRIP_MIN_ROWS", 8)
    pool, submitted = counting_pool(monkeypatch)
    np.testing.assert_array_equal(anonymize_image(image, boxes, settings), whole)
    assert len(submitted) == 2
    if settings.mode == "blur":
        check(image, boxes, settings)
    pool.shutdown()


def _pool_is_unset(queue) -> None:
    queue.put(regions._POOL is None)


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork on this platform")
def test_a_forked_child_starts_its_own_region_pool():
    # A forked child inherits the pool object but not its threads: jobs sent there would wait
    # forever, so the child must build a new pool.
    import multiprocessing

    image = textured(120, 200, seed=24)
    anonymize_image(
        image, [det(FACE, 5, 5, 30, 30, 200, 120), det(PLATE, 150, 80, 40, 20, 200, 120)]
    )
    assert regions._region_pool() is not None or regions.pool_workers() < 2
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_pool_is_unset, args=(queue,))
    child.start()
    assert queue.get(timeout=60) is True
    child.join(60)


def test_multires_stays_within_a_level_of_the_full_resolution_gaussian(monkeypatch):
    # The reduced-resolution blur is a stand-in for the exact Gaussian: on a real photo, every
    # pixel must stay within 1 level of the full-resolution blur with the same sigma.
    from skimage import data

    image = data.astronaut()
    dets = [
        Detection(FACE, 0.9, (0.30, 0.05, 0.28, 0.36)),
        Detection(PLATE, 0.9, (0.05, 0.62, 0.55, 0.3)),
    ]
    settings = BlurSettings()
    sigmas = {box_sigma(settings, d.box[2] * 512 * 1.3, d.box[3] * 512 * 1.3) for d in dets}
    assert min(sigmas) > MULTIRES_SIGMA  # both boxes take the multi-resolution path
    fast = anonymize_image(image, dets, settings).astype(int)
    monkeypatch.setattr(kernels, "MULTIRES_SIGMA", float("inf"))  # full resolution
    exact = anonymize_image(image, dets, settings).astype(int)
    diff = np.abs(fast - exact)
    assert diff.max() <= 1 and diff.mean() < 0.1, (diff.max(), diff.mean())
    assert (exact != image).mean() > 0.2  # the boxes really are blurred


@pytest.mark.parametrize("sigma", [9.0, 26.9, 53.8])
def test_multires_std_dev_matches_sigma(sigma):
    # An impulse per channel at each pixel phase of a cell: the second moment of the response
    # about the impulse, averaged over the phases, is sigma^2 (cell means + Gaussian + bilinear).
    d = int(sigma // MULTIRES_STEP)
    n = int(8 * sigma) + 4 * d
    x0 = n // 2 - n // 2 % d
    image = np.zeros((1, n, d))
    image[0, x0 + np.arange(d), np.arange(d)] = 1.0
    response = ref_multires(image, sigma)[0]  # [n, d]
    x = np.arange(n)[:, None] - (x0 + np.arange(d))[None, :]
    assert np.allclose(response.sum(axis=0), 1.0)
    second = (x * x * response).sum(axis=0).mean()
    assert math.sqrt(second) == pytest.approx(sigma, rel=0.01)


def test_large_sigma_blur_is_strong():
    # Noise inside a big box: the pixel-to-pixel (high-frequency) energy drops by > 95 %.
    rng = np.random.default_rng(16)
    image = rng.integers(0, 256, (300, 300, 3)).astype(np.uint8)
    box = [det(PLATE, 50, 50, 200, 200, 300, 300)]
    assert box_sigma(DEFAULT, 260, 260) > MULTIRES_SIGMA
    out = check(image, box, DEFAULT).astype(float)[60:240, 60:240]
    before = image.astype(float)[60:240, 60:240]

    def energy(a):
        return (np.diff(a, axis=0) ** 2).mean() + (np.diff(a, axis=1) ** 2).mean()

    assert energy(out) < 0.05 * energy(before)


def test_huge_image_with_one_big_face():
    # A face box of 28 % x 36 % of a 6000 x 4000 photo: sigma ~ 215 px, well under a second
    # (12000 x 8000, sigma ~ 430 px, takes a few seconds: scripts/bench_blur.py times it).
    h, w = 4000, 6000
    cell = np.array(
        [[50, 50, 150, 150], [50, 50, 150, 150], [150, 150, 50, 50], [150, 150, 50, 50]]
    )
    image = np.tile(cell.astype(np.uint8)[:, :, None], (h // 4, w // 4, 3))  # 2 px checkerboard
    face = Detection(FACE, 1.0, (0.30, 0.05, 0.28, 0.36))
    (out,) = anonymize_batch([image], [[face]])
    region = obscured_region(h, w, [face])
    ys, xs = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    f = DEFAULT.feather // 2 + 1  # the mask reaches a few px past the half-obscured area
    y0, y1, x0, x1 = max(ys[0] - f, 0), ys[-1] + 1 + f, max(xs[0] - f, 0), xs[-1] + 1 + f
    for rows, cols in (
        (slice(0, y0), slice(None)),
        (slice(y1, h), slice(None)),
        (slice(y0, y1), slice(0, x0)),
        (slice(y0, y1), slice(x1, w)),
    ):
        assert np.array_equal(out[rows, cols], image[rows, cols]), "changed outside the mask"
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    core = out[cy - 500 : cy + 500, cx - 500 : cx + 500]
    assert np.abs(core.astype(int) - 100).max() <= 1  # the checkerboard is gone


def test_empty_boxes_unchanged():
    image = textured(40, 50)
    for dets in ([], [Detection(FACE, 0.9, (0.1, 0.1, 0.0, 0.2))]):
        out = anonymize_image(image, dets)
        assert out is not image and np.array_equal(out, image)
    assert not obscured_region(40, 50, []).any()


def test_mixed_size_batch_and_no_retracing():
    images = [
        textured(90, 120, seed=1),
        textured(57, 33, seed=2),
        textured(90, 120, 4, seed=3),
        textured(64, 64, None, seed=4),
    ]
    dets = [
        CASES["overlap"],
        [Detection(FACE, 0.9, (0.2, 0.1, 0.5, 0.6))],
        CASES["borders"],
        CASES["one_pixel"],
    ]
    outs = anonymize_batch(images, dets, SEED)
    assert len(outs) == len(images)
    for image, ds, out in zip(images, dets, outs, strict=True):
        assert out.shape == image.shape
        assert np.array_equal(out, check(image, ds, SEED))
    wide = [Detection(PLATE, 0.9, (0.1, 0.1, 0.8, 0.8))]  # multi-resolution blur
    anonymize_batch([textured(100, 140, seed=10)], [wide])
    _funcs()
    fns = tf_ops._TRACED  # the concrete functions called per image can never retrace
    traces = {name: fn.experimental_get_tracing_count() for name, fn in fns.items()}
    anonymize_batch(
        images[::-1] + [textured(77, 111, seed=9), textured(130, 90, seed=9)],
        dets[::-1] + [CASES["overlap"], wide],
    )
    again = {name: fn.experimental_get_tracing_count() for name, fn in fns.items()}
    assert again == traces and traces["blur"] == traces["blur_up"] == 1
    with pytest.raises(ValueError):
        anonymize_batch(images, dets[:1])


def test_obscured_region_matches_reference():
    for settings in (BlurSettings(), SEED, BlurSettings(feather=0)):
        dets = CASES["borders"] + CASES["overlap"] + CASES["one_pixel"]
        _, alpha = ref_anonymize(textured(H, W), dets, settings)
        assert np.array_equal(obscured_region(H, W, dets, settings), alpha >= 0.5)


def test_border_box_stays_obscured_to_the_edge():
    # The seed's zero padding left a border-touching face half visible; ours does not.
    region = obscured_region(
        50, 50, [Detection(PLATE, 0.9, (0.0, 0.2, 0.4, 0.4))], BlurSettings(box_scale=1.0)
    )
    assert region[12:28, 0].all()


def test_adaptive_strength_scales_with_box():
    s = BlurSettings()
    assert box_sigma(s, 400, 400) > 5 * box_sigma(s, 40, 40)
    assert box_sigma(SEED, 400, 400) == box_sigma(SEED, 40, 40)


# ------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------


def test_seed_kernel_spec():
    s = BlurSettings.from_seed_kernel("21,2,9")
    assert (s.kernel_size, s.seed_sigma, s.feather, s.mode) == (21, 2.0, 9, "blur")
    assert BlurSettings.from_seed_kernel([65, 3, 9], shape="rectangle").shape == "rectangle"
    assert seed_kernel_std_px(21, 2) == pytest.approx(5.2, abs=0.05)
    assert seed_kernel_std_px(65, 3) == pytest.approx(13.7, abs=0.05)
    assert json.loads(json.dumps(s.to_dict()))["seed_sigma"] == 2.0
    for bad in ("21,2", "20,2,9", "21,2,8", "21,0,9"):
        with pytest.raises(ValueError):
            BlurSettings.from_seed_kernel(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "smear"},
        {"shape": "star"},
        {"kernel_size": 4},
        {"feather": 4},
        {"box_scale": 0},
        {"fill_color": (0, 0, 300)},
    ],
)
def test_settings_validation(kwargs):
    with pytest.raises(ValueError):
        BlurSettings(**kwargs)


def test_rejects_bad_images():
    with pytest.raises(TypeError):
        anonymize_image(np.zeros((4, 4, 3), np.float32), [])
    with pytest.raises(ValueError):
        anonymize_image(np.zeros((4, 4, 2), np.uint8), [])


# ------------------------------------------------------------------------------------------
# Real photos
# ------------------------------------------------------------------------------------------


def _load(shared: Path, kind: str, count: int, min_boxes: int = 1):
    entries = json.loads((shared / kind / "labels.json").read_text())
    chosen = [e for e in entries if len(e["boxes"]) >= min_boxes][:count]
    for e in chosen:
        image = np.asarray(Image.open(shared / kind / e["file"]).convert("RGB"))
        h, w = image.shape[:2]
        dets = [det(b["label"], b["x"], b["y"], b["w"], b["h"], w, h) for b in e["boxes"]]
        yield image, dets, e


def test_real_faces(shared_data):
    n = 0
    for image, dets, _ in _load(shared_data, "faces", 4, min_boxes=3):
        check(image, dets, BlurSettings())
        check(image, dets, SEED)
        n += 1
    assert n == 4


def test_real_plates_cropped(shared_data):
    # Crop around the plate (keeps the whole-image 2-D reference fast); boxes stay real.
    for image, _, entry in _load(shared_data, "plates", 3):
        b = entry["boxes"][0]
        x0, y0 = max(0, int(b["x"]) - 80), max(0, int(b["y"]) - 60)
        crop = np.ascontiguousarray(image[y0 : y0 + 240, x0 : x0 + 420])
        h, w = crop.shape[:2]
        dets = [
            det(
                PLATE,
                b["x"] - x0,
                b["y"] - y0,
                min(b["w"], w - (b["x"] - x0)),
                min(b["h"], h - (b["y"] - y0)),
                w,
                h,
            )
        ]
        check(crop, dets, SEED)
        check(crop, dets, BlurSettings(mode="pixelate"))


def test_tensorflow_import_skips_only_the_eager_keras_import():
    # Our import leaves Keras unloaded (seconds saved per process), the user's environment as
    # it was, and tf.keras still usable afterwards.
    code = (
        "import os, sys\n"
        "from fiftyone_anonymizer.blur import tf_ops as blur\n"
        "tf = blur._tf()\n"
        "print('keras' in sys.modules, 'TF_USE_LEGACY_KERAS' in os.environ)\n"
        "print(type(tf.keras.layers.Dense(1)).__module__.split('.')[0])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    assert out.stdout.split() == ["False", "False", "keras"], out.stdout + out.stderr[-2000:]
    noise = [
        line
        for line in out.stderr.splitlines()
        if any(marker in line for marker in tf_runtime._noise())
    ]
    assert not noise, noise


def test_tensorflow_start_up_chatter_is_dropped_and_the_rest_passed_on(capfd, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with tf_runtime.quiet_tensorflow_start():
        os.write(
            2,
            b"I0000 12:00 cudart_stub.cc:31] Could not find cuda drivers on your "
            b"machine, GPU will not be used.\n",
        )
        os.write(2, b"a real problem\n")
        # The message that matters from the same file as harmless chatter is kept.
        os.write(
            2,
            b"F0000 cpu_feature_guard.cc:1] The TensorFlow library was compiled to use "
            b"AVX instructions, but these aren't available on your machine.\n",
        )
        sys.stderr.write("from Python\n")
    # (pytest's own capture routes Python's writes around fd 2, so order is not compared)
    err = capfd.readouterr().err.splitlines()
    assert "a real problem" in err and "from Python" in err and len(err) == 3
    assert any("compiled to use AVX" in line for line in err)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user asked for TensorFlow's logs
    with tf_runtime.quiet_tensorflow_start():
        os.write(
            2,
            b"I0000 12:00 cudart_stub.cc:31] Could not find cuda drivers on your "
            b"machine, GPU will not be used.\n",
        )
    assert "cudart_stub" in capfd.readouterr().err
