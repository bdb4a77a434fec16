"""Where a dataset stands: detected, anonymized, current, flagged, failed, per class.

What the App's anonymization panel shows, and what its buttons open; usable from Python too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import fields
from .share import DEFAULT_REVIEW_TAG, NOT_CURRENT, check_shareable

#: The groups, in the order the panel lists them: (key, label).
GROUPS = (
    ("samples", "Samples"),
    ("detected", "Detected"),
    ("anonymized", "Anonymized"),
    ("ready", "Ready to share"),
    ("flagged", "Tagged for review"),
    ("not_current", "Copy not current"),
    ("failed", "Failed"),
    ("not_anonymized", "Not anonymized yet"),
)


@dataclass
class Status:
    """Sample ids per group (see :data:`GROUPS`) and boxes per class."""

    groups: dict[str, list[str]] = field(default_factory=dict)
    boxes_per_class: Counter = field(default_factory=Counter)

    def counts(self) -> dict[str, int]:
        return {key: len(self.groups.get(key, [])) for key, _ in GROUPS}

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts(), "boxes_per_class": dict(self.boxes_per_class)}


def anonymization_status(
    sample_collection,
    label_field: str = fields.DEFAULT_LABEL_FIELD,
    output_field: str = fields.DEFAULT_OUTPUT_FIELD,
    error_field: str = fields.DEFAULT_ERROR_FIELD,
    review_tag: str = DEFAULT_REVIEW_TAG,
) -> Status:
    """The dataset's anonymization state, by group.

    Args:
        sample_collection: a dataset or view
        label_field: the detections field (on videos the frames' field, named without
            ``frames.``); on videos boxes are counted per track
        output_field: the copies' field
        error_field: the error field
        review_tag: the audit's review tag
    """
    from fiftyone import ViewField as F

    status = Status()
    ids = sample_collection.values("id")
    status.groups["samples"] = ids
    path = fields.labels_path(sample_collection, label_field)
    if sample_collection.has_field(path):
        status.groups["detected"] = sample_collection.exists(path).values("id")
        labels = sample_collection.values(f"{path}.detections.label")
        if path.startswith("frames."):  # videos: one face on screen for 300 frames is one face
            indexes = sample_collection.values(f"{path}.detections.index")
            for video_labels, video_indexes in zip(labels, indexes):
                tracks = set()  # (class, track); a box without a track counts alone
                for n, (frame, frame_indexes) in enumerate(
                    zip(video_labels or [], video_indexes or [])
                ):
                    for i, (label, track) in enumerate(zip(frame or [], frame_indexes or [])):
                        tracks.add((label, track if track is not None else (n, i)))
                status.boxes_per_class.update(label for label, _ in tracks)
        else:
            status.boxes_per_class = Counter(label for row in labels for label in (row or []))
    if sample_collection.has_field(error_field):
        status.groups["failed"] = sample_collection.match(F(error_field) != None).values("id")  # noqa: E711 (a MongoDB expression)
    status.groups["flagged"] = sample_collection.match_tags(review_tag).values("id")
    if fields.copies_field_problem(sample_collection, output_field) is None:
        status.groups["anonymized"] = sample_collection.exists(output_field).values("id")
        check = check_shareable(sample_collection, output_field, error_field, review_tag)
        status.groups["ready"] = check.ready
        status.groups["not_current"] = check.left_out.get(NOT_CURRENT, [])
    done = set(status.groups.get("anonymized", []))
    status.groups["not_anonymized"] = [sid for sid in ids if sid not in done]
    return status


def samples_view(
    dataset,
    ids: list[str] | None = None,
    tag: str | None = None,
    field: str | None = None,
    present: bool = True,
):
    """The samples a button opens: by ``ids`` (in that order), by ``tag``, or those whose
    ``field`` is set (``present=False``: not set; on videos a frame field as
    ``fields.labels_path`` names it); every sample when nothing is given."""
    if ids is not None:
        return dataset.select(ids, ordered=True)
    if tag:
        return dataset.match_tags(tag)
    if field:
        if not dataset.has_field(field):  # the error field exists once something failed
            return dataset.limit(0) if present else dataset.view()
        return dataset.exists(field, present)
    return dataset.view()


def group_view(dataset, group: str, ids: dict[str, list[str]] | None = None):
    """The samples of one of the panel's :data:`GROUPS` (``ids``: the groups that are lists of
    ids, from :func:`anonymization_status`)."""
    if group in ("ready", "not_current"):
        return samples_view(dataset, ids=(ids or {}).get(group, []))
    by_field = {
        "detected": (fields.labels_path(dataset, fields.DEFAULT_LABEL_FIELD), True),
        "anonymized": (fields.DEFAULT_OUTPUT_FIELD, True),
        "not_anonymized": (fields.DEFAULT_OUTPUT_FIELD, False),
        "failed": (fields.DEFAULT_ERROR_FIELD, True),
    }
    if group in by_field:
        name, present = by_field[group]
        return samples_view(dataset, field=name, present=present)
    if group == "flagged":
        return samples_view(dataset, tag=DEFAULT_REVIEW_TAG)
    return samples_view(dataset)
