"""Detection quality against hand boxes: recall, precision and coverage (what actually gets blurred).

Shared by ``scripts/evaluate.py`` and the audit feature. Conventions:

* Matching is per image and per class, **one-to-one and greedy by score**: detections are taken
  from the highest score down, each claims the still-unmatched truth of the same label with the
  highest IoU, provided that IoU is >= ``iou_threshold`` (0.3 by default: hand boxes and model
  boxes frame faces differently, and for privacy a roughly-placed box is still a hit).
* recall = matched truths / truths; precision = matched detections / detections.
* coverage = share of truths of which at least ``min_covered`` (70 %) of the pixels lie inside
  the union of the regions that would be blurred, as computed by
  ``blur.obscured_region`` (so the blur module's box scaling is included). Every detection counts
  toward that union whatever its label: a face hidden by a plate box is hidden.
* IoU is computed on relative boxes: scaling x and y by constants scales every area by the same
  factor, so it equals the pixel IoU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .core.boxes import Detection, iou_matrix, xywh_to_xyxy

IOU_THRESHOLD = 0.3
MIN_COVERED = 0.7
#: Edges (pixels of a truth box's height) of the size classes recall is reported by: < 10,
#: 10-16, 16-24, 24-48, >= 48. A face under 16 px is hardly identifiable; from 16 px on it is
#: the faces a reviewer could recognise, so those classes carry the targets.
SIZE_EDGES = (10, 16, 24, 48)


@dataclass(frozen=True)
class Match:
    """Outcome of matching one image's detections to its truths, for one label."""

    truth_matched: np.ndarray  # bool per truth, in input order
    detection_matched: np.ndarray  # bool per detection, in input order
    pairs: tuple[tuple[int, int], ...]  # (truth index, detection index) within this label


def match_boxes(
    truth_boxes: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    iou_threshold: float = IOU_THRESHOLD,
) -> Match:
    """One-to-one greedy matching by score of ``[x, y, w, h]`` boxes of a single label."""
    truth_boxes = np.asarray(truth_boxes, dtype=np.float64).reshape(-1, 4)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    t_ok = np.zeros(len(truth_boxes), dtype=bool)
    d_ok = np.zeros(len(det_boxes), dtype=bool)
    pairs: list[tuple[int, int]] = []
    if len(truth_boxes) and len(det_boxes):
        ious = iou_matrix(xywh_to_xyxy(det_boxes), xywh_to_xyxy(truth_boxes))
        for d in np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="stable"):
            row = np.where(t_ok, -1.0, ious[d])
            t = int(np.argmax(row))
            if row[t] >= iou_threshold:
                t_ok[t] = d_ok[d] = True
                pairs.append((t, int(d)))
    return Match(t_ok, d_ok, tuple(pairs))


def match_detections(
    truths: Sequence[Detection],
    detections: Sequence[Detection],
    iou_threshold: float = IOU_THRESHOLD,
) -> dict[str, Match]:
    """Per-label matches for one image; indices in each ``Match`` are within that label's subset
    (in input order). Labels present in either list appear in the result."""
    out = {}
    for label in sorted({d.label for d in truths} | {d.label for d in detections}):
        t = [d for d in truths if d.label == label]
        p = [d for d in detections if d.label == label]
        out[label] = match_boxes(
            np.array([d.box for d in t]),
            np.array([d.box for d in p]),
            np.array([d.score for d in p]),
            iou_threshold,
        )
    return out


def covered_fractions(truths: Sequence[Detection], mask: np.ndarray) -> np.ndarray:
    """Share of each truth box's pixels that are True in ``mask`` (HxW bool).

    Box edges are rounded to whole pixels; a box thinner than a pixel counts as the pixel it is in.
    """
    height, width = mask.shape
    integral = np.zeros((height + 1, width + 1), dtype=np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.int64), axis=0), axis=1)
    out = np.zeros(len(truths))
    for i, det in enumerate(truths):
        x0, y0, x1, y1 = det.to_pixels(width, height)
        c0, r0 = min(int(round(x0)), width - 1), min(int(round(y0)), height - 1)
        c1, r1 = max(int(round(x1)), c0 + 1), max(int(round(y1)), r0 + 1)
        c1, r1 = min(c1, width), min(r1, height)
        area = (r1 - r0) * (c1 - c0)
        inside = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
        out[i] = inside / area if area > 0 else 0.0
    return out


def obscured_mask(
    height: int, width: int, detections: Sequence[Detection], settings=None
) -> np.ndarray:
    """The pixels the blur module would hide for these detections (default ``BlurSettings``)."""
    from .blur import BlurSettings, obscured_region

    return np.asarray(
        obscured_region(height, width, list(detections), settings or BlurSettings()), dtype=bool
    )


@dataclass
class Tally:
    """Running counts for one label; add images with :meth:`add`, read the rates as properties."""

    truths: int = 0
    detections: int = 0
    matched_truths: int = 0
    matched_detections: int = 0
    covered_truths: int = 0
    images: int = 0

    def add(self, other: Tally) -> None:
        self.truths += other.truths
        self.detections += other.detections
        self.matched_truths += other.matched_truths
        self.matched_detections += other.matched_detections
        self.covered_truths += other.covered_truths
        self.images += other.images

    @property
    def recall(self) -> float:
        """Share of truths found; 1.0 when there is nothing to find."""
        return self.matched_truths / self.truths if self.truths else 1.0

    @property
    def precision(self) -> float:
        """Share of detections that are truths; 1.0 when nothing was detected."""
        return self.matched_detections / self.detections if self.detections else 1.0

    @property
    def coverage(self) -> float:
        """Share of truths at least ``MIN_COVERED`` hidden; 1.0 when there is nothing to hide."""
        return self.covered_truths / self.truths if self.truths else 1.0

    def as_dict(self) -> dict:
        return {
            "truths": self.truths,
            "detections": self.detections,
            "matched_truths": self.matched_truths,
            "matched_detections": self.matched_detections,
            "covered_truths": self.covered_truths,
            "images": self.images,
            "recall": self.recall,
            "precision": self.precision,
            "coverage": self.coverage,
        }


def score_image(
    truths: Sequence[Detection],
    detections: Sequence[Detection],
    height: int,
    width: int,
    mask: np.ndarray | None = None,
    iou_threshold: float = IOU_THRESHOLD,
    min_covered: float = MIN_COVERED,
    settings=None,
) -> dict[str, Tally]:
    """Counts per label for one image. ``mask`` (the obscured pixels) is computed from all
    ``detections`` with ``blur.obscured_region`` unless given."""
    if mask is None:
        mask = obscured_mask(height, width, detections, settings)
    out: dict[str, Tally] = {}
    for label, m in match_detections(truths, detections, iou_threshold).items():
        t = [d for d in truths if d.label == label]
        covered = int((covered_fractions(t, mask) >= min_covered).sum()) if t else 0
        out[label] = Tally(
            truths=len(t),
            detections=len(m.detection_matched),
            matched_truths=int(m.truth_matched.sum()),
            matched_detections=int(m.detection_matched.sum()),
            covered_truths=covered,
            images=1,
        )
    return out


def size_class(height_px: float, edges: Sequence[float] = SIZE_EDGES) -> str:
    """The size class of a box ``height_px`` tall: ``"<10"``, ``"10-16"``, ..., ``">=48"``."""
    if height_px < edges[0]:
        return f"<{edges[0]:g}"
    for lo, hi in zip(edges, edges[1:]):
        if height_px < hi:
            return f"{lo:g}-{hi:g}"
    return f">={edges[-1]:g}"


def size_classes(edges: Sequence[float] = SIZE_EDGES) -> list[str]:
    """Every size class, smallest first."""
    return [size_class(e - 0.5, edges) for e in edges] + [size_class(edges[-1], edges)]


def score_by_size(
    truths: Sequence[Detection],
    detections: Sequence[Detection],
    height: int,
    width: int,
    mask: np.ndarray | None = None,
    edges: Sequence[float] = SIZE_EDGES,
    settings=None,
) -> dict[tuple[str, str], Tally]:
    """Like :func:`score_image`, but the truths split by ``(label, size class)`` (the box's
    height in pixels, :func:`size_class`). Only truth counts are kept (``truths``,
    ``matched_truths``, ``covered_truths``): a detection has no true size to be classed by."""
    if mask is None:
        mask = obscured_mask(height, width, detections, settings)
    out: dict[tuple[str, str], Tally] = {}
    for label, m in match_detections(truths, detections).items():
        t = [d for d in truths if d.label == label]
        if not t:
            continue
        covered = covered_fractions(t, mask) >= MIN_COVERED
        for truth, matched, hidden in zip(t, m.truth_matched, covered, strict=True):
            key = (label, size_class(truth.box[3] * height, edges))
            tally = out.setdefault(key, Tally(images=1))
            tally.truths += 1
            tally.matched_truths += int(matched)
            tally.covered_truths += int(hidden)
    return out


def combine(per_image: Iterable[dict[Any, Tally]]) -> dict[Any, Tally]:
    """Sum per-image tallies into one per key (label, or label and size class)."""
    total: dict[Any, Tally] = {}
    for tallies in per_image:
        for label, tally in tallies.items():
            total.setdefault(label, Tally()).add(tally)
    return total


@dataclass
class Curve:
    """Recall / precision / coverage of one label as the score threshold varies."""

    thresholds: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    precision: list[float] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)
    detections: list[int] = field(default_factory=list)
