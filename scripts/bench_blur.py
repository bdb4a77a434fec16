"""Benchmark the blur module against the seed's whole-image approach and OpenCV (1920x1080).

Run with ``make bench-blur``. Prints ms per image and megapixels per second for:
  * this module on the CPU, with our default settings (adaptive kernel, ellipses, box_scale)
    and with a fixed seed-equivalent kernel ("21,2,9", rectangles, unscaled boxes: the same
    geometry and kernel as the two baselines, so the comparison is fair);
  * the seed's approach in TensorFlow: whole-image per-channel 2-D 21x21 convolution with
    reflect padding, 9x9 tent-smoothed mask, composite;
  * OpenCV's whole-image GaussianBlur (21 px, same std-dev) plus the same composite.
Two cases: 3 boxes covering ~3 % of the image, and 6 boxes covering ~40 %. With the default
adaptive strength the 40 % boxes get a ~54 px std-dev, blurred at reduced resolution (see the
blur module); the summary compares that to OpenCV's whole-image 21 px blur + composite.
Then one large photo: 12000x8000 with one face box of 28 % x 36 % (std-dev ~430 px).
The last line is the speedup of the seed-equivalent settings over the seed approach at 3 %.
Our two settings and OpenCV are timed in interleaved rounds (medians of 15), so they share
whatever load the machine has; the seconds-long seed approach is timed on its own.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the CPU figures are what we report

import cv2  # noqa: E402  (dev dependency, benchmark only)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fiftyone_anonymizer.blur import (  # noqa: E402
    BlurSettings,
    anonymize_image,
    obscured_region,
    seed_kernel_1d,
    seed_kernel_std_px,
)
from fiftyone_anonymizer.core.boxes import FACE, PLATE, Detection  # noqa: E402

W, H = 1920, 1080
MP = W * H / 1e6


def boxes_3pct() -> list[Detection]:
    # Two faces and a plate, ~62k px in all (3 % of 2.07 MP).
    px = [(FACE, 300, 200, 130, 160), (FACE, 1200, 350, 130, 160), (PLATE, 800, 800, 260, 80)]
    return [Detection(lab, 0.9, (x / W, y / H, w / W, h / H)) for lab, x, y, w, h in px]


def boxes_40pct() -> list[Detection]:
    # Six 480x300 boxes (864k px, 41.7 % of the image), spread over the frame.
    out = []
    for i, (x, y) in enumerate(
        [(60, 80), (720, 60), (1380, 100), (100, 650), (760, 700), (1400, 640)]
    ):
        out.append(Detection(FACE if i % 2 else PLATE, 0.9, (x / W, y / H, 480 / W, 300 / H)))
    return out


def test_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    base = ((xx // 7 + yy // 5) % 256)[:, :, None]
    return ((base + rng.integers(0, 64, (H, W, 3))) % 256).astype(np.uint8)


def seed_mask(dets: list[Detection]) -> np.ndarray:
    mask = np.zeros((H, W), np.float32)
    for d in dets:
        x0, y0, x1, y1 = (int(round(v)) for v in d.to_pixels(W, H))
        mask[y0:y1, x0:x1] = 1.0
    return mask


def tent(size: int = 9) -> np.ndarray:
    f = (size + 1) // 2
    t = np.array([1 - abs(i - (f - 1)) / f for i in range(size)], np.float32)
    k = np.outer(t, t)
    return k / k.sum()


def make_seed_tf():
    k1 = seed_kernel_1d(21, 2.0)
    k2 = np.outer(k1, k1).astype(np.float32)
    kernel = tf.constant(np.tile(k2[:, :, None, None], (1, 1, 3, 1)))
    smooth = tf.constant(tent()[:, :, None, None])

    @tf.function
    def seed(image, mask):
        x = tf.cast(image, tf.float32)[None]
        padded = tf.pad(x, [[0, 0], [10, 10], [10, 10], [0, 0]], mode="REFLECT")
        blurred = tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")
        m = tf.nn.conv2d(mask[None, :, :, None], smooth, 1, "SAME")
        out = x * (1 - m) + blurred * m
        return tf.cast(out[0], tf.uint8)  # the seed truncates

    return seed


def opencv_path(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    blurred = cv2.GaussianBlur(
        image, (21, 21), seed_kernel_std_px(21, 2), borderType=cv2.BORDER_REFLECT_101
    )
    m = cv2.filter2D(mask, -1, tent(), borderType=cv2.BORDER_CONSTANT)[:, :, None]
    img = image.astype(np.float32)
    return np.rint(img + (blurred.astype(np.float32) - img) * m).astype(np.uint8)


def timed(fn, reps: int) -> float:
    """Median ms of ``reps`` runs after one warm-up (tracing, caches)."""
    return interleaved({"fn": fn}, reps)["fn"]


def interleaved(fns: dict, rounds: int) -> dict[str, float]:
    """Median ms per function over ``rounds`` rounds that each run every function once, after
    one warm-up each: on a shared, noisy machine a slow spell then hits all of them alike
    instead of whichever happened to be running."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1000)
    return {name: statistics.median(v) for name, v in times.items()}


def line(name: str, ms: float) -> None:
    print(f"  {name:<44s} {ms:9.1f} ms/image  {MP / (ms / 1000):8.1f} MP/s")


def main() -> None:
    image = test_image()
    default = BlurSettings()
    seed_eq = BlurSettings.from_seed_kernel("21,2,9", shape="rectangle", box_scale=1.0)
    seed_tf = make_seed_tf()
    print(
        f"1920x1080 RGB, CPU only, TensorFlow {tf.__version__}, OpenCV {cv2.__version__}, {os.cpu_count()} CPUs"
    )
    print(f"seed kernel 21,2 = {seed_kernel_std_px(21, 2):.2f} px std-dev; smoothing 9")
    results = {}
    for label, dets in (("3%", boxes_3pct()), ("40%", boxes_40pct())):
        mask = seed_mask(dets)
        cover = mask.mean() * 100
        obscured = obscured_region(H, W, dets, default).mean() * 100
        print(
            f"\ncase {label}: boxes cover {cover:.1f} % (default settings obscure {obscured:.1f} % after box_scale)"
        )
        fast = interleaved(
            {
                "default": lambda d=dets: anonymize_image(image, d, default),
                "seed_eq": lambda d=dets: anonymize_image(image, d, seed_eq),
                "opencv": lambda m=mask: opencv_path(image, m),
            },
            15,
        )
        ours_default, ours_seed, cv_ms = fast["default"], fast["seed_eq"], fast["opencv"]
        m_tf = tf.constant(mask)
        img_tf = tf.constant(image)
        seed_ms = timed(lambda m=m_tf, i=img_tf: seed_tf(i, m).numpy(), 2)
        line("this module, default (adaptive) settings", ours_default)
        line("this module, fixed seed-equivalent 21,2,9", ours_seed)
        line("seed approach in TensorFlow (2-D 21x21)", seed_ms)
        line("OpenCV GaussianBlur whole image + composite", cv_ms)
        print(
            f"  speedup vs seed approach: default {seed_ms / ours_default:.1f}x, seed-equivalent "
            f"{seed_ms / ours_seed:.1f}x; vs OpenCV: default {cv_ms / ours_default:.2f}x, "
            f"seed-equivalent {cv_ms / ours_seed:.2f}x"
        )
        results[label] = seed_ms / ours_seed
        results[label + " default"] = (ours_default, cv_ms)
    big = np.full((8000, 12000, 3), 100, np.uint8)
    face = [Detection(FACE, 1.0, (0.30, 0.05, 0.28, 0.36))]
    big_ms = timed(lambda: anonymize_image(big, face, default), 5)
    print(f"\n12000x8000, one face box of 28 % x 36 % (default settings): {big_ms / 1000:.2f} s")
    ours, cv = results["40% default"]
    print(
        f"\ndefault settings vs OpenCV at 40% coverage: {ours:.1f} ms vs {cv:.1f} ms per image "
        f"({cv / ours:.2f}x, {'faster' if ours <= cv else 'slower'})"
    )
    print("(last line: fixed seed-equivalent kernel, the like-for-like comparison)")
    print(f"blur speedup vs seed approach at 3% coverage: {results['3%']:.0f}x")


if __name__ == "__main__":
    main()
