"""Our boxes and FiftyOne's labels, both ways: ``fo.Detections`` for images, per frame for
videos (with each box's track), and back, filtered by class and confidence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from ..core.boxes import Detection, RelBox


def to_fo_detections(
    detections: Sequence[Detection], attributes: Sequence[dict[str, Any]] | None = None
):
    """Our boxes as an ``fo.Detections``.

    Args:
        detections: the boxes
        attributes: per box, extra label attributes (track index, audit tier, ...), if any
    """
    import fiftyone as fo

    extras = attributes if attributes is not None else [{}] * len(detections)
    return fo.Detections(
        detections=[
            fo.Detection(
                label=d.label, confidence=float(d.score), bounding_box=list(d.box), **extra
            )
            for d, extra in zip(detections, extras, strict=True)
        ]
    )


def to_fo_frame_detections(tracked: Sequence[Any]):
    """A frame's tracked boxes (``detectors.tracking.TrackedDetection``) as an
    ``fo.Detections``: each box's track in ``index`` (FiftyOne's object id across frames) and
    ``filled=True`` where the tracker added it (gap fill or extension), not the detector."""
    return to_fo_detections(
        [t.detection for t in tracked],
        [{"index": t.track if t.track >= 0 else None, "filled": t.filled} for t in tracked],
    )


def media_type(sample_collection) -> str:
    """ "image" or "video"; anything else (grouped or mixed media) is refused with the way out."""
    kind = sample_collection.media_type
    if kind not in ("image", "video"):
        raise ValueError(
            f"this view holds {kind} media: run the job on images or on videos, e.g. "
            f"view.select_group_slices(media_type='video') or a view of one media type"
        )
    return kind


def from_fo_detections(
    labels,
    classes: Sequence[str] | None = None,
    min_confidence: float | Mapping[str, float] | None = None,
) -> list[Detection]:
    """Our boxes from an ``fo.Detections`` (or None), filtered by class and confidence.

    A label without a confidence (ground truth, hand-drawn fixes) always passes the
    confidence filter: someone decided it must be obscured.

    Args:
        labels: an ``fo.Detections`` or None
        classes: labels to keep (None or empty: all)
        min_confidence: a floor for every class, or per class
    """
    if labels is None:
        return []
    out = []
    for det in labels.detections:
        if classes and det.label not in classes:
            continue
        conf = det.confidence
        floor = (
            min_confidence.get(det.label) if isinstance(min_confidence, Mapping) else min_confidence
        )
        if conf is not None and floor is not None and conf < floor:
            continue
        if det.bounding_box is None:
            continue
        out.append(
            Detection(
                det.label or "",
                1.0 if conf is None else float(conf),
                cast(RelBox, tuple(float(v) for v in det.bounding_box)),
            )
        )
    return out
