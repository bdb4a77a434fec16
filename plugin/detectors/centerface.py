"""CenterFace face detector (ONNX, MIT) with its own resizing, decoding and multi-scale passes.

The network is fully convolutional (stride 4 heatmap), so the image is resized by a factor and
zero-padded at the bottom/right to multiples of 32; no aspect distortion, and boxes map back by
dividing by the factor. Several factors ("scales") are run and pooled: faces of 8-16 px are only
found on an upscaled pass, large faces only on a downscaled one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.boxes import FACE, Detection, nms
from .base import check_image, expand_xyxy, resize, to_detections
from .onnx_runtime import (
    ArenaBoundedSession,
    convert_opset,
    dynamic_input_model,
    fold_batch_norms,
    keep_outputs,
    name_nodes,
    session_provider,
)

INPUT = "input.1"
# Heatmap (after its sigmoid), log box size (h, w), centre offset; the landmark output ("540")
# is cut off with the branch that computes it.
OUTPUTS = ("537", "538", "539")
#: What this backend runs in; ``detectors.backend_precision`` chooses (the one place).
PRECISIONS = ("float32", "int8")


def prepare_graph(path: Path) -> bytes:
    """The float32 graph both precisions run, from the shipped file: input and output sizes
    declared dynamic (the file says 10x3x32x32 although the network is fully convolutional),
    the unused landmark branch cut off, opset 9 raised to 13 (what the int8 copy needs), the
    batch norms after the upsampling layers folded into them, and every node named
    (``quantize`` keeps chosen nodes in float by name). The arithmetic is the shipped model's
    (folding changes results by ~1e-6)."""
    model = dynamic_input_model(
        path,
        {INPUT: ["N", 3, "H", "W"]},
        {
            "537": ["N", 1, "h", "w"],
            "538": ["N", 2, "h", "w"],
            "539": ["N", 2, "h", "w"],
            "540": ["N", 10, "h", "w"],
        },
    )
    return name_nodes(fold_batch_norms(convert_opset(keep_outputs(model, list(OUTPUTS)), 13)))


def plan_factors(
    height: int,
    width: int,
    scales: Sequence[float],
    min_side: int,
    max_side: int,
    max_pixels: float,
) -> list[float]:
    """Resize factors for one image: a base factor bringing the long side into
    ``[min_side, max_side]``, times each of ``scales``; a pass whose input would exceed
    ``max_pixels`` is capped there (huge photos are not upscaled into gigapixel tensors)."""
    long_side = max(height, width)
    base = 1.0
    if long_side > max_side:
        base = max_side / long_side
    elif long_side < min_side:
        base = min_side / long_side
    factors: list[float] = []
    for s in scales:
        f = base * s
        if f * f * height * width > max_pixels:
            f = (max_pixels / (height * width)) ** 0.5
        if all(abs(f - g) > 1e-3 for g in factors):
            factors.append(f)
    return factors


#: One pass's outputs: heatmap, log box size, offset (1 x C x h x w each), resized (width, height).
Outputs = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]


def _resized(height: int, width: int, factor: float) -> tuple[int, int]:
    """``(width, height)`` of an image resized by ``factor``."""
    return max(1, round(width * factor)), max(1, round(height * factor))


def make_blob(
    image: np.ndarray, factor: float, mirror: bool = False
) -> tuple[np.ndarray, tuple[int, int]]:
    """The network input for ``image`` resized by ``factor``: float32 RGB 0-255, N x 3 x H x W
    zero-padded at the bottom/right to multiples of 32, N = 2 with the mirror image second.
    Also returns the resized ``(width, height)``."""
    height, width = image.shape[:2]
    new_w, new_h = _resized(height, width, factor)
    chw = resize(image, new_w, new_h).transpose(2, 0, 1)
    pad_w, pad_h = -(-new_w // 32) * 32, -(-new_h // 32) * 32
    blob = np.zeros((2 if mirror else 1, 3, pad_h, pad_w), dtype=np.float32)
    blob[0, :, :new_h, :new_w] = chw
    if mirror:
        blob[1, :, :new_h, :new_w] = chw[:, :, ::-1]
    return blob, (new_w, new_h)


def decode(
    heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """CenterFace's outputs (one image, stride 4) to pixel ``xyxy`` boxes and scores: heatmap
    cells above ``threshold`` that are 3x3 local maxima (CenterNet's peaks; a face lights up
    a blob of cells, its centre is the peak)."""
    heat = heatmap[0, 0]
    padded = np.pad(heat, 1, constant_values=-np.inf)
    h, w = heat.shape
    local_max = np.max(
        [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0
    )
    ys, xs = np.nonzero((heat > threshold) & (heat >= local_max))
    if ys.size == 0:
        return np.zeros((0, 4)), np.zeros(0)
    h = np.exp(scale[0, 0, ys, xs].astype(np.float64)) * 4
    w = np.exp(scale[0, 1, ys, xs].astype(np.float64)) * 4
    cy = (ys + offset[0, 0, ys, xs] + 0.5) * 4
    cx = (xs + offset[0, 1, ys, xs] + 0.5) * 4
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return xyxy, heat[ys, xs].astype(np.float64)


class CenterFaceDetector:
    """Faces with CenterFace. ``threshold`` applies to the heatmap score (0-1).

    ``expand`` (width, height) grows each box around its centre after moving the centre down by
    ``shift_down`` box heights: hand boxes of (masked) faces sit ~12 % of a height lower than
    CenterFace's and are ~6 % wider. With the calibration every effort level uses (``expand``
    (1.2, 1.3), ``shift_down`` 0.08; the constructor's own defaults leave boxes as the network
    gives them) the new box still contains the original one (top edge 0.57 h above the old
    centre instead of 0.5 h).
    """

    name = "centerface"
    labels: tuple[str, ...] = (FACE,)

    def __init__(
        self,
        model_path: str | Path | None = None,
        threshold: float = 0.5,
        scales: Sequence[float] = (1.0,),
        min_side: int = 640,
        max_side: int = 1920,
        max_pixels: float = 4096 * 2304,
        expand: tuple[float, float] = (1.0, 1.0),
        shift_down: float = 0.0,
        nms_iou: float = 0.3,
        flip: bool = False,
        refine_below: float = 0.0,
        refine_score: float = 0.15,
        precision: str = "float32",
        device: str = "auto",
    ) -> None:
        """Args:
        model_path: the ONNX file (default: fetched per ``models/manifest.json``).
        threshold: minimum heatmap score of a face.
        scales: resize factors run and pooled, relative to the base factor that brings the
            long side into ``[min_side, max_side]``.
        min_side: smaller photos are upscaled to this long side (small faces).
        max_side: larger photos are downscaled to this long side.
        max_pixels: cap on the input size of any pass.
        expand: box growth (width, height), see the class docstring.
        shift_down: box centre moved down by this share of its height.
        nms_iou: overlap above which the lower-scored of two boxes is dropped.
        flip: also run the mirrored image and average the two heatmaps.
        refine_below: when > 0, look at each photo at its own size first (one view) and
            run the passes above (``min_side``, ``flip``) only if that look finds a
            candidate scoring at least ``refine_score`` that is shorter than this many
            pixels; otherwise its boxes are the answer. 0: always run the passes.
        refine_score: see ``refine_below``. Absolute, not relative to ``threshold``, so the
            passes run do not depend on the threshold (scripts/evaluate.py relies on it).
        precision: "float32" or "int8" (the quantized copy, see ``quantize``).
        device: "auto", "cpu" or "cuda".
        """
        if model_path is None:
            from ..core.weights import model_path as fetch

            model_path = fetch("centerface")
        self.model_path = Path(model_path)
        self.threshold = float(threshold)
        self.scales = tuple(float(s) for s in scales)
        self.min_side, self.max_side, self.max_pixels = (
            int(min_side),
            int(max_side),
            float(max_pixels),
        )
        self.expand = (float(expand[0]), float(expand[1]))
        self.shift_down = float(shift_down)
        self.nms_iou = float(nms_iou)
        self.flip = bool(flip)
        self.refine_below, self.refine_score = float(refine_below), float(refine_score)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.precision = precision
        if precision == "int8":
            from .quantize import int8_model

            self.session = ArenaBoundedSession(
                int8_model(self.name, self.model_path, prepare_graph), device
            )
        else:
            self.session = ArenaBoundedSession(prepare_graph(self.model_path), device)
        self.provider = session_provider(self.session)

    def heatmaps(
        self, image: np.ndarray, factor: float, mirror: bool, single: Outputs | None = None
    ) -> Outputs:
        """The network's outputs for ``image`` resized by ``factor`` (zero-padded to multiples
        of 32): heatmap, scale and offset of the image, and the resized ``(width, height)``.

        With ``mirror``, the heatmap is the average of the image's and its mirror image's
        (mirrored back over the valid columns): a face scores high in both views, texture noise
        rarely does. ``single``: this factor's unmirrored outputs from an earlier call, so that
        only the mirror image is run (or nothing, without ``mirror``).
        """
        if single is not None and not mirror:
            return single
        blob, (new_w, new_h) = make_blob(image, factor, mirror)
        if single is not None:  # the first view is known: run the mirror image alone
            heat, scale, offset, _ = single
            mirrored = self.session.run([OUTPUTS[0]], {INPUT: blob[1:]})[0]
            both = np.concatenate([heat, mirrored])
        else:
            both, scale, offset = self.session.run(list(OUTPUTS), {INPUT: blob})
        heat = both[:1].copy()
        if mirror:
            valid = -(-new_w // 4)
            heat[..., :valid] = (heat[..., :valid] + both[1:, ..., :valid][..., ::-1]) / 2
        return heat, scale[:1], offset[:1], (new_w, new_h)

    @staticmethod
    def boxes(
        outputs: Outputs, width: int, height: int, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decoded boxes of one pass in original-image pixels, and their scores (before NMS)."""
        heat, scale, offset, (new_w, new_h) = outputs
        xyxy, scores = decode(heat, scale, offset, threshold)
        # Exact factors per axis (rounding), so boxes map back without drift.
        return xyxy / np.array([new_w / width, new_h / height] * 2), scores

    def finish(
        self, xyxy: np.ndarray, scores: np.ndarray, width: int, height: int
    ) -> list[Detection]:
        """Pooled pixel boxes of one image to detections: NMS, then the box calibration."""
        if scores.size:
            keep = nms(xyxy, scores, self.nms_iou)
            xyxy, scores = xyxy[keep], scores[keep]
            dy = (xyxy[:, 3] - xyxy[:, 1]) * self.shift_down
            xyxy = expand_xyxy(xyxy + np.stack([0 * dy, dy, 0 * dy, dy], axis=1), *self.expand)
        return to_detections(FACE, xyxy, scores, width, height)

    def detect_one(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        scout = None
        if self.refine_below > 0:
            # A first look at the photo's own size (only photos over max_side are shrunk):
            # where it sees no small face, the upscaled and mirrored passes would not change
            # the answer (measured, see models/centerface.md), and they cost 2-4x more.
            scout_factor = plan_factors(height, width, (1.0,), 1, self.max_side, self.max_pixels)[0]
            scout = self.heatmaps(image, scout_factor, mirror=False)
            xyxy, sc = self.boxes(scout, width, height, min(self.threshold, self.refine_score))
            tall = (xyxy[:, 3] - xyxy[:, 1]) * scout_factor
            if not np.any((sc >= self.refine_score) & (tall < self.refine_below)):
                keep = sc > self.threshold
                return self.finish(xyxy[keep], sc[keep], width, height)
        boxes, scores = [], []
        for factor in plan_factors(
            height, width, self.scales, self.min_side, self.max_side, self.max_pixels
        ):
            same = scout is not None and scout[3] == _resized(height, width, factor)
            outputs = self.heatmaps(image, factor, self.flip, single=scout if same else None)
            xyxy, sc = self.boxes(outputs, width, height, self.threshold)
            boxes.append(xyxy)
            scores.append(sc)
        return self.finish(np.concatenate(boxes), np.concatenate(scores), width, height)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self.detect_one(check_image(im, i)) for i, im in enumerate(images)]
