"""Boxes shared by the detectors, the blur module and the FiftyOne pipeline.

Every box is FiftyOne's relative ``[x, y, w, h]`` (top-left corner, width, height, each a
fraction of the image size), so a detection can be stored as an ``fo.Detection`` unchanged and
does not depend on the resolution it was found at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

RelBox = tuple[float, float, float, float]

FACE = "face"
PLATE = "plate"


@dataclass(frozen=True)
class Detection:
    """One found object: the seed tool's ``[label, score, position]``."""

    label: str
    score: float
    box: RelBox  # relative [x, y, w, h]

    def to_pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Absolute ``(x_min, y_min, x_max, y_max)`` in pixels (floats)."""
        x, y, w, h = self.box
        return x * width, y * height, (x + w) * width, (y + h) * height

    @classmethod
    def from_pixels(
        cls, label: str, score: float, xyxy: Sequence[float] | np.ndarray, width: int, height: int
    ) -> Detection:
        """Build from absolute ``(x_min, y_min, x_max, y_max)``, clipped to the image."""
        x0, y0, x1, y1 = (float(v) for v in xyxy)
        x0, x1 = max(0.0, min(x0, width)), max(0.0, min(x1, width))
        y0, y1 = max(0.0, min(y0, height)), max(0.0, min(y1, height))
        return cls(
            label, float(score), (x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height)
        )


def scale_box(box: RelBox, factor: float) -> RelBox:
    """Grow (or shrink) a relative box around its centre by ``factor``, clipped to [0, 1]."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    w2, h2 = w * factor / 2, h * factor / 2
    x0, y0 = max(0.0, cx - w2), max(0.0, cy - h2)
    x1, y1 = min(1.0, cx + w2), min(1.0, cy + h2)
    return (x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0))


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of ``(x0, y0, x1, y1)`` boxes (any common unit)."""
    a = np.asarray(a_xyxy, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy, dtype=np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = iou_matrix(xyxy[i : i + 1], xyxy[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def merge_detections(
    sources: Iterable[Sequence[Detection]], iou_threshold: float = 0.5
) -> list[Detection]:
    """Merge boxes from several models or sources, suppressing duplicates per class."""
    pooled = [d for source in sources for d in source]
    merged: list[Detection] = []
    for label in sorted({d.label for d in pooled}):
        same = [d for d in pooled if d.label == label]
        xyxy = xywh_to_xyxy(np.array([d.box for d in same]))
        keep = nms(xyxy, np.array([d.score for d in same]), iou_threshold)
        merged.extend(same[i] for i in keep)
    return merged


def count_text(counts: Mapping[str, int]) -> str:
    """``{"face": 14, "plate": 1}`` -> ``"14 faces, 1 plate"`` (labels in sorted order)."""
    parts = [f"{n} {label}" + ("" if n == 1 else "s") for label, n in sorted(counts.items()) if n]
    return ", ".join(parts) or "no boxes"
