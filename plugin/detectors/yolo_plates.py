"""Licence plates with a YOLOv8s-seg model (ONNX, AGPL-3.0, float16 weights; masks ignored).

Pre-processing follows Ultralytics' own inference: the long side resized to 640 (aspect kept),
the short side padded centred with grey 114 only up to a multiple of 32 (a 16:9 frame runs as
640x384, not 640x640), RGB scaled to 0-1. The shipped graph is fixed to 640x640 (its anchor grid
is baked in), so it is cut after the detection head's three per-stride outputs, given dynamic
sizes, and those are decoded here (distribution-focal box offsets, anchor grid, sigmoid score),
as the graph's own tail does; the mask branch is never computed.
The float16 file is converted to float32 once at load time on the CPU, where float16
convolutions are slow; on CUDA the original float16 graph is used as shipped.
Tiles (``tiles.TiledDetector``, per effort level) catch plates that the single downscaled
view of a wide photo makes too small.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.boxes import PLATE, Detection, nms
from .base import check_image, expand_xyxy, resize, to_detections
from .onnx_runtime import (
    ArenaBoundedSession,
    dynamic_input_model,
    float16_to_float32,
    keep_outputs,
    name_nodes,
    session_provider,
)

SIZE = 640
STRIDE = 32
PAD_VALUE = 114
# The detection head's outputs at strides 8, 16 and 32: [1, 64 box bins + 1 score, H/s, W/s].
HEADS = (
    "/model.22/Concat_1_output_0",
    "/model.22/Concat_2_output_0",
    "/model.22/Concat_3_output_0",
)
DFL_BINS = 16
#: What this backend runs in; ``detectors.backend_precision`` chooses (the one place).
PRECISIONS = ("float32", "float16", "int8")


def prepare_graph(path: Path, precision: str = "float32") -> bytes:
    """The graph a float precision runs, from the shipped file: float16 converted to float32
    (for ``"float32"``), cut after the detection head's three outputs, input and output sizes
    declared dynamic, every node named (``quantize`` keeps chosen nodes in float by name)."""
    model = float16_to_float32(path) if precision == "float32" else path
    model = dynamic_input_model(
        keep_outputs(model, list(HEADS)),
        {"images": ["N", 3, "H", "W"]},
        {name: ["N", 4 * DFL_BINS + 1, f"h{i}", f"w{i}"] for i, name in enumerate(HEADS)},
    )
    return name_nodes(model)


def letterbox(
    image: np.ndarray, size: int = SIZE, stride: int | None = STRIDE
) -> tuple[np.ndarray, float, float, float]:
    """Resize keeping the aspect so the long side is ``size``, pad centred with grey: up to a
    multiple of ``stride`` per side, or to ``size x size`` with ``stride=None``.

    Returns the padded image, the factor and the left/top padding, so that a point ``p`` of
    the input maps to ``p * factor + pad``.
    """
    height, width = image.shape[:2]
    factor = size / max(height, width)
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    if stride is None:
        out_w = out_h = size
    else:
        out_w, out_h = -(-new_w // stride) * stride, -(-new_h // stride) * stride
    out = np.full((out_h, out_w, 3), PAD_VALUE, dtype=np.uint8)
    left, top = (out_w - new_w) // 2, (out_h - new_h) // 2
    out[top : top + new_h, left : left + new_w] = resize(image, new_w, new_h)
    return out, factor, float(left), float(top)


def make_blob(
    image: np.ndarray, dtype: type = np.float32, size: int = SIZE
) -> tuple[np.ndarray, float, float, float]:
    """The network input for ``image``: letterboxed (see :func:`letterbox`), RGB 0-1,
    1 x 3 x H x W of ``dtype``; also the letterbox's factor and left/top padding."""
    boxed, factor, left, top = letterbox(image, size)
    blob = (boxed.transpose(2, 0, 1)[None].astype(np.float32) / 255.0).astype(dtype)
    return blob, factor, left, top


def decode_heads(
    heads: Sequence[np.ndarray], input_h: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (``xyxy`` in input pixels) and scores >= ``threshold`` from the per-stride head
    outputs ``[1, 4 * 16 + 1, h, w]``: the score is the sigmoid of the last channel; each box
    side's distance from the cell centre is the expectation of a softmax over 16 bins, in
    units of the stride (Ultralytics' DFL and ``dist2bbox``)."""
    boxes, scores = [], []
    bins = np.arange(DFL_BINS, dtype=np.float64)
    for head in heads:
        _, channels, h, w = head.shape
        stride = input_h / h
        logits = head[0, channels - 1].astype(np.float64)
        score = 1.0 / (1.0 + np.exp(-logits))
        ys, xs = np.nonzero(score >= threshold)
        if ys.size == 0:
            continue
        dist = head[0, : 4 * DFL_BINS, ys, xs].astype(np.float64).reshape(-1, 4, DFL_BINS)
        dist = np.exp(dist - dist.max(axis=2, keepdims=True))
        dist = (dist / dist.sum(axis=2, keepdims=True)) @ bins  # [n, 4]: left, top, right, bottom
        cx, cy = xs + 0.5, ys + 0.5
        xyxy = np.stack(
            [cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1
        )
        boxes.append(xyxy * stride)
        scores.append(score[ys, xs])
    if not boxes:
        return np.zeros((0, 4)), np.zeros(0)
    return np.concatenate(boxes), np.concatenate(scores)


class YoloPlateDetector:
    """Plates with the YOLOv8 plate model; ``threshold`` on the class score (0-1)."""

    name = "yolov8-plates"
    labels: tuple[str, ...] = (PLATE,)

    def __init__(
        self,
        model_path: str | Path | None = None,
        threshold: float = 0.25,
        nms_iou: float = 0.5,
        expand: tuple[float, float] = (1.0, 1.0),
        precision: str = "float32",
        device: str = "auto",
        size: int = SIZE,
    ) -> None:
        """Args:
        model_path: the ONNX file (default: fetched per ``models/manifest.json``).
        threshold: minimum plate score.
        nms_iou: overlap above which the lower-scored of two boxes is dropped.
        expand: box growth (width, height) around the centre.
        precision: "float32", "float16" (the shipped graph) or "int8" (see ``quantize``).
        device: "auto", "cpu" or "cuda".
        size: the long side the photo is letterboxed to (the network was trained at 640; it
            is fully convolutional, so a larger look sees small plates at more pixels).
        """
        if model_path is None:
            from ..core.weights import model_path as fetch

            model_path = fetch("yolov8-plates")
        self.model_path = Path(model_path)
        self.threshold = float(threshold)
        self.nms_iou = float(nms_iou)
        self.expand = (float(expand[0]), float(expand[1]))
        self.size = int(size)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.precision = precision
        if precision == "int8":
            from .quantize import int8_model

            self.session = ArenaBoundedSession(
                int8_model(self.name, self.model_path, prepare_graph), device
            )
        else:
            self.session = ArenaBoundedSession(prepare_graph(self.model_path, precision), device)
        self.provider = session_provider(self.session)
        self.input_name = self.session.get_inputs()[0].name
        self.dtype = np.float16 if precision == "float16" else np.float32

    def detect_one(self, image: np.ndarray) -> list[Detection]:
        """One letterboxed view of ``image``: its plates after NMS."""
        height, width = image.shape[:2]
        blob, factor, left, top = make_blob(image, self.dtype, self.size)
        heads = self.session.run(list(HEADS), {self.input_name: blob})
        xyxy, scores = decode_heads(heads, blob.shape[2], self.threshold)
        xyxy = (xyxy - np.array([left, top, left, top])) / factor
        if scores.size:
            keep = nms(xyxy, scores, self.nms_iou)
            xyxy, scores = expand_xyxy(xyxy[keep], *self.expand), scores[keep]
        return to_detections(PLATE, xyxy, scores, width, height)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self.detect_one(check_image(im, i)) for i, im in enumerate(images)]
