"""The share job: a new dataset (and optionally an export) whose media are the anonymized copies."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import schema
from .report import JobReport

#: Why a sample is left out of a share, in the order they are checked.
NO_COPY = "no anonymized copy"
FAILED = "failed"
FLAGGED = "tagged for review"
NOT_CURRENT = "copy older than its boxes or source"
NOTHING_OBSCURED = "nothing obscured although it has detections"
#: The reasons an explicit switch can override (the others leave nothing to share).
OVERRIDABLE = (FLAGGED, NOT_CURRENT, NOTHING_OBSCURED)
DEFAULT_REVIEW_TAG = "needs_review"


@dataclass
class ShareCheck:
    """Which samples are ready to leave, and why the others are not (sample ids per reason)."""

    ready: list[str] = field(default_factory=list)
    left_out: dict[str, list[str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {reason: len(ids) for reason, ids in self.left_out.items() if ids}

    def summary(self) -> str:
        """``"3 left out: 2 tagged for review, 1 failed"`` (or that none is)."""
        counts = self.counts()
        if not counts:
            return "every sample is ready to share"
        parts = ", ".join(f"{n} {reason}" for reason, n in counts.items())
        return f"{sum(counts.values())} left out: {parts}"


def check_shareable(
    sample_collection,
    output_field: str = schema.DEFAULT_OUTPUT_FIELD,
    error_field: str = schema.DEFAULT_ERROR_FIELD,
    review_tag: str = DEFAULT_REVIEW_TAG,
) -> ShareCheck:
    """Sort the samples into ready to share and left out, with the reason.

    A sample is left out when it has no copy (or the file is gone), failed, is tagged for
    review (the audit found something), its copy is not current (its boxes or its source
    changed since: :func:`anonymize.copy_is_current`'s rule, read back through the copy's
    recipe), or nothing was obscured although its label fields hold detections (e.g. a
    confidence floor above every score).

    Args:
        sample_collection: a dataset or view that was anonymized
        output_field: the field holding the copies' paths
        error_field: the error field
        review_tag: the audit's review tag
    """
    from .anonymize import copy_is_current

    if not sample_collection.has_field(output_field):
        raise ValueError(f"no field '{output_field}': run anonymize_images first")
    try:
        recipes = schema.AnonymizeRecipe.read_all(sample_collection, output_field)
    except ValueError:
        recipes = {}  # copies made before recipes were recorded: their currency is unknown
    label_fields = list(
        dict.fromkeys(
            f for r in recipes.values() for f in r.label_fields if sample_collection.has_field(f)
        )
    )
    fp_field = schema.fingerprint_field(output_field)
    names = ["id", "filepath", "tags", output_field]
    names += [n for n in (error_field, fp_field) if sample_collection.has_field(n)]
    columns = dict(zip(names, sample_collection.values(names)))
    labels = dict(zip(label_fields, sample_collection.values(label_fields))) if label_fields else {}
    n = len(columns["id"])
    errors = columns.get(error_field, [None] * n)
    fps = columns.get(fp_field, [None] * n)
    check = ShareCheck(left_out={r: [] for r in (NO_COPY, FAILED) + OVERRIDABLE})
    video = sample_collection.media_type == "video"
    for i, sid in enumerate(columns["id"]):
        copy = columns[output_field][i]
        own = recipes.get(schema.recipe_id_of(fps[i])) or recipes.get("")
        boxes, found = _boxes(sample_collection, sid, own, labels, i, video)
        if errors[i]:
            reason = FAILED
        elif not copy or not os.path.isfile(copy):
            reason = NO_COPY
        elif review_tag in (columns["tags"][i] or []):
            reason = FLAGGED
        elif own is not None and not copy_is_current(
            copy, Path(copy), columns["filepath"][i], fps[i], own.fingerprint(boxes, copy)
        ):
            reason = NOT_CURRENT
        elif own is not None and found and not any(boxes):
            reason = NOTHING_OBSCURED
        else:
            check.ready.append(sid)
            continue
        check.left_out[reason].append(sid)
    return check


def _boxes(
    sample_collection,
    sid: str,
    recipe: schema.AnonymizeRecipe | None,
    labels: dict[str, list],
    i: int,
    video: bool,
) -> tuple[list, bool]:
    """The boxes a sample's copy obscured by its recipe (per frame for a video), and whether
    its label fields hold any detection at all."""
    if recipe is None:
        return [], False
    if video:
        from .video_jobs import _frame_boxes

        per_frame = _frame_boxes(sample_collection, sid, recipe)
        unfiltered = _frame_boxes(
            sample_collection,
            sid,
            schema.AnonymizeRecipe(recipe.label_fields, settings=recipe.settings),
        )
        return per_frame, any(unfiltered)
    values = [labels[f][i] for f in recipe.label_fields if f in labels]
    return recipe.boxes(values), any(v is not None and v.detections for v in values)


def anonymized_view(
    sample_collection,
    output_field: str = schema.DEFAULT_OUTPUT_FIELD,
    error_field: str = schema.DEFAULT_ERROR_FIELD,
    review_tag: str = DEFAULT_REVIEW_TAG,
    include: Sequence[str] = (),
):
    """The samples ready to share (see :func:`check_shareable`), plus those left out only for
    one of the ``include`` reasons (from :data:`OVERRIDABLE`)."""
    check = check_shareable(sample_collection, output_field, error_field, review_tag)
    chosen = set(check.ready)
    for reason in include:
        if reason not in OVERRIDABLE:
            raise ValueError(f"cannot include samples left out for '{reason}'")
        chosen.update(check.left_out.get(reason, []))
    ids = [sid for sid in sample_collection.values("id") if sid in chosen]
    return sample_collection.select(ids, ordered=True), check


@schema.guarded
def share_anonymized(
    sample_collection,
    name: str | None = None,
    label_fields: Sequence[str] | None = None,
    export_dir: str | os.PathLike | None = None,
    dataset_type: str = "FiftyOneDataset",
    output_field: str = schema.DEFAULT_OUTPUT_FIELD,
    error_field: str = schema.DEFAULT_ERROR_FIELD,
    persistent: bool = True,
    overwrite: bool = False,
    review_tag: str = DEFAULT_REVIEW_TAG,
    include_left_out: bool = False,
):
    """Clone the samples ready to share into a new dataset whose ``filepath`` is the copy.

    Left out by default (:func:`check_shareable`): samples tagged for review, failed, without a
    current copy, or with nothing obscured although they have detections; the report says how
    many, per reason. Only the label fields in ``label_fields`` are kept (default: every label
    field but the audit's), and no field that points at an original survives, nor the
    plugin's own bookkeeping (fingerprints, errors, audit results, the review tag). With
    ``export_dir`` the clone is also exported in a FiftyOne export format.

    Example usage::

        import fiftyone_anonymizer as anon

        shared, report = anon.share_anonymized(dataset, name="street-photos-public",
                                               label_fields=["anonymizer_detections"])
        print(report.extra["left_out"])  # e.g. {"tagged for review": 2}

    Args:
        sample_collection: a dataset or view that was anonymized
        name: the new dataset's name (default: ``<dataset>-anonymized``)
        label_fields: label fields to keep (None: all but the audit's)
        export_dir: optionally also export there, in ``dataset_type`` format
        dataset_type: a ``fiftyone.types`` name, e.g. ``"COCODetectionDataset"``
        output_field: the field holding the anonymized copies' paths
        error_field: the error field
        persistent: whether the new dataset persists
        overwrite: replace an existing dataset of that name
        review_tag: the audit's review tag
        include_left_out: share the samples left out for review, a copy that is not current
            or nothing obscured too (never those without a copy)

    Returns:
        ``(dataset, report)``
    """
    import fiftyone as fo
    import fiftyone.core.labels as fol

    view, check = anonymized_view(
        sample_collection,
        output_field,
        error_field,
        review_tag,
        OVERRIDABLE if include_left_out else (),
    )
    report = JobReport("share", samples=len(sample_collection), processed=len(view))
    report.skipped = report.samples - report.processed
    report.extra["left_out"] = {
        reason: len(ids)
        for reason, ids in check.left_out.items()
        if ids and not (include_left_out and reason in OVERRIDABLE)
    }
    report.extra["left_out_ids"] = [
        sid
        for reason, ids in check.left_out.items()
        for sid in ids
        if not (include_left_out and reason in OVERRIDABLE)
    ]
    if name is None:
        name = f"{sample_collection._dataset.name}-anonymized"
    if fo.dataset_exists(name):
        if not overwrite:
            raise ValueError(
                f"a dataset named '{name}' already exists (set overwrite to replace it)"
            )
        fo.delete_dataset(name)
    shared = view.clone(name, persistent=persistent)
    shared.set_values("filepath", shared.values(output_field))

    for key in shared.list_evaluations():  # the audit's evaluation refers to the originals
        shared.delete_evaluation(key)
    field_schema = shared.get_field_schema()
    label_schema = {
        k
        for k, v in field_schema.items()
        if isinstance(v, fo.EmbeddedDocumentField) and issubclass(v.document_type, fol.Label)
    }
    audit_fields = schema.audit_fields(sample_collection._dataset)
    keep = set(label_fields) if label_fields is not None else label_schema - audit_fields
    unknown = keep - label_schema
    if unknown:
        raise ValueError(f"label field(s) not on the dataset: {sorted(unknown)}")
    ours = {output_field, schema.fingerprint_field(output_field), error_field} | audit_fields
    drop = (label_schema - keep) | {f for f in ours if f in field_schema}
    for fld in sorted(drop):
        shared.delete_sample_field(fld)
    shared.untag_samples(review_tag)
    shared.app_config.media_fields = ["filepath"]
    shared.app_config.grid_media_field = "filepath"
    shared.app_config.modal_media_field = "filepath"
    shared.info["anonymized_from"] = sample_collection._dataset.name
    shared.save()
    shared.compute_metadata(overwrite=True)

    if export_dir is not None:
        export_type = getattr(fo.types, dataset_type, None)
        if export_type is None:
            raise ValueError(f"unknown export format '{dataset_type}'")
        kwargs: dict[str, Any] = {"export_dir": str(export_dir), "dataset_type": export_type}
        kept = sorted(keep)
        if dataset_type != "FiftyOneDataset" and kept:
            kwargs["label_field"] = kept[0] if len(kept) == 1 else kept
        shared.export(**kwargs)
        report.extra["export_dir"] = str(export_dir)
    report.extra.update(dataset=name, label_fields=sorted(keep))
    return shared, report
