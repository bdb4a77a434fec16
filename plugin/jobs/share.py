"""The share job: a new dataset (and optionally an export) whose media are the anonymized copies."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import copies, database, fields
from .report import JobReport, Progress

#: Why a sample is left out of a share, in the order they are checked.
NO_COPY = "no anonymized copy"
FAILED = "failed"
FLAGGED = "tagged for review"
NOT_CURRENT = "copy older than its boxes or source"
NOTHING_OBSCURED = "nothing obscured although it has detections"
#: The reasons an explicit switch can override (the others leave nothing to share).
OVERRIDABLE = (FLAGGED, NOT_CURRENT, NOTHING_OBSCURED)
DEFAULT_REVIEW_TAG = fields.REVIEW_TAG


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
    output_field: str = fields.DEFAULT_OUTPUT_FIELD,
    error_field: str = fields.DEFAULT_ERROR_FIELD,
    review_tag: str = DEFAULT_REVIEW_TAG,
) -> ShareCheck:
    """Sort the samples into ready to share and left out, with the reason.

    A sample is left out when it has no copy (or the file is gone), failed, is tagged for
    review (the audit found something), its copy is not current (its boxes or its source
    changed since: :func:`copies.copy_is_current`'s rule, read back through the copy's
    recipe), or nothing was obscured although its label fields hold detections (e.g. a
    confidence floor above every score).

    Args:
        sample_collection: a dataset or view that was anonymized
        output_field: the field holding the copies' paths
        error_field: the error field
        review_tag: the audit's review tag
    """
    problem = fields.copies_field_problem(sample_collection, output_field)
    if problem:
        raise ValueError(problem)
    recipes = copies.AnonymizeRecipe.read_all(sample_collection, output_field)
    label_fields = list(
        dict.fromkeys(
            f for r in recipes.values() for f in r.label_fields if sample_collection.has_field(f)
        )
    )
    fp_field = copies.fingerprint_field(output_field)
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
        own = copies.recipe_of(recipes, fps[i])
        boxes, found = _boxes(sample_collection, sid, own, labels, i, video)
        if errors[i]:
            reason = FAILED
        elif not copy or not os.path.isfile(copy):
            reason = NO_COPY
        elif review_tag in (columns["tags"][i] or []):
            reason = FLAGGED
        elif own is not None and not copies.copy_is_current(
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
    recipe: copies.AnonymizeRecipe | None,
    labels: dict[str, list],
    i: int,
    video: bool,
) -> tuple[list, bool]:
    """The boxes a sample's copy obscured by its recipe (per frame for a video), and whether
    its label fields hold any detection at all."""
    if recipe is None:
        return [], False
    if video:
        per_frame = copies.frame_boxes(sample_collection, sid, recipe)
        unfiltered = copies.frame_boxes(
            sample_collection,
            sid,
            copies.AnonymizeRecipe(recipe.label_fields, settings=recipe.settings),
        )
        return per_frame, any(unfiltered)
    values = [labels[f][i] for f in recipe.label_fields if f in labels]
    return recipe.boxes(values), any(v is not None and v.detections for v in values)


def anonymized_view(
    sample_collection,
    output_field: str = fields.DEFAULT_OUTPUT_FIELD,
    error_field: str = fields.DEFAULT_ERROR_FIELD,
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


#: The export formats share offers: the media each takes, and whether it holds exactly one
#: ``fo.Detections`` field (FiftyOne's COCO, YOLOv5 and VOC exporters take one).
EXPORT_FORMATS: dict[str, tuple[tuple[str, ...], bool]] = {
    "FiftyOneDataset": (("image", "video"), False),
    "COCODetectionDataset": (("image",), True),
    "YOLOv5Dataset": (("image",), True),
    "VOCDetectionDataset": (("image",), True),
    "ImageDirectory": (("image",), False),
    "VideoDirectory": (("video",), False),
}


def share_problems(
    sample_collection,
    name: str | None = None,
    label_fields: Sequence[str] | None = None,
    export_dir: str | os.PathLike | None = None,
    dataset_type: str = "FiftyOneDataset",
    output_field: str = fields.DEFAULT_OUTPUT_FIELD,
    overwrite: bool = False,
    shared_count: int | None = None,
) -> dict[str, str]:
    """Everything that would make a share fail, found before anything is created: the
    problems by parameter name (empty when the share can go ahead). The share form shows each
    next to its field; :func:`share_anonymized` raises the first.

    Args:
        sample_collection: the dataset or view to share
        name: the new dataset's name (default ``<dataset>-anonymized``)
        label_fields: label fields to keep (None: all but the audit's)
        export_dir: the export folder, if any
        dataset_type: the export format (see :data:`EXPORT_FORMATS`)
        output_field: the copies' field
        overwrite: whether an existing dataset of that name may be replaced
        shared_count: how many samples would be shared, if known (0 is a problem)
    """
    import fiftyone as fo

    problems: dict[str, str] = {}
    copies = fields.copies_field_problem(sample_collection, output_field)
    if copies:
        return {"output_field": copies}
    dataset = sample_collection._dataset
    name = name or f"{dataset.name}-anonymized"
    if name == dataset.name:
        problems["name"] = "the new dataset needs a name of its own (this is the source's name)"
    elif fo.dataset_exists(name) and not overwrite:
        problems["name"] = (
            f"a dataset named '{name}' already exists (choose another name, or replace it)"
        )
    if shared_count == 0:
        problems["nothing"] = "nothing to share: no sample is ready"
    available = fields.label_fields(sample_collection)
    keep = kept_fields(sample_collection, label_fields)
    unknown = [f for f in keep if f not in available]
    if unknown:
        audit = sorted(set(unknown) & fields.audit_fields(sample_collection))
        problems["label_fields"] = (
            f"the audit's fields stay with the originals: {', '.join(audit)}"
            if audit
            else f"not a label field of this dataset: {', '.join(unknown)}"
        )
    if export_dir:
        kind = sample_collection.media_type
        if dataset_type not in EXPORT_FORMATS:
            problems["dataset_type"] = (
                f"unknown export format '{dataset_type}'; one of {', '.join(EXPORT_FORMATS)}"
            )
        else:
            media, one_field = EXPORT_FORMATS[dataset_type]
            detections = [f for f in keep if f in fields.detections_fields(sample_collection)]
            if kind not in media:
                problems["dataset_type"] = (
                    f"{dataset_type} does not hold {kind}s; choose "
                    f"{' or '.join(k for k, (m, _) in EXPORT_FORMATS.items() if kind in m)}"
                )
            elif one_field and (len(detections) != 1 or len(keep) != 1):
                problems["label_fields"] = (
                    f"{dataset_type} holds exactly one detections field; keep one "
                    f"(now: {', '.join(keep) or 'none'})"
                )
        problem = export_dir_problem(sample_collection, export_dir, output_field)
        if problem:
            problems["export_dir"] = problem
    return problems


def kept_fields(sample_collection, label_fields: Sequence[str] | None) -> list[str]:
    """The label fields a share keeps: ``label_fields`` (on videos a frame field may be named
    with or without ``frames.``), or every label field but the audit's."""
    available = fields.label_fields(sample_collection)
    if label_fields is None:
        return available
    return [
        f"frames.{f}" if f not in available and f"frames.{f}" in available else f
        for f in label_fields
    ]


def export_dir_problem(
    sample_collection, export_dir: str | os.PathLike, output_field: str
) -> str | None:
    """``core.paths.export_dir_problem`` for this collection: not among (or above) the
    originals nor in the copies' folder, not a system folder, new or empty."""
    from ..core.paths import export_dir_problem as folder_problem
    from ..core.paths import source_folders

    folders = source_folders(sample_collection._dataset.distinct("filepath"))
    try:
        recipes = copies.AnonymizeRecipe.read_all(sample_collection, output_field)
        folders |= {Path(r.output_dir) for r in recipes.values() if r.output_dir}
    except ValueError:
        pass
    return folder_problem(export_dir, folders)


@database.guarded
def share_anonymized(
    sample_collection,
    name: str | None = None,
    label_fields: Sequence[str] | None = None,
    export_dir: str | os.PathLike | None = None,
    dataset_type: str = "FiftyOneDataset",
    output_field: str = fields.DEFAULT_OUTPUT_FIELD,
    error_field: str = fields.DEFAULT_ERROR_FIELD,
    persistent: bool = True,
    overwrite: bool = False,
    review_tag: str = DEFAULT_REVIEW_TAG,
    include_left_out: bool = False,
    progress: Progress | None = None,
):
    """Clone the samples ready to share into a new dataset whose ``filepath`` is the copy.

    Left out by default (:func:`check_shareable`): samples tagged for review, failed, without a
    current copy, or with nothing obscured although they have detections; the report says how
    many, per reason. Only the label fields in ``label_fields`` are kept (default: every label
    field but the audit's; on videos frame fields are named ``frames.<name>``), and no field
    that points at an original survives, nor the plugin's own bookkeeping (fingerprints,
    errors, audit results, evaluation results, the review tag). With ``export_dir`` the clone
    is also exported in a FiftyOne export format.

    All or nothing: every check (:func:`share_problems`) runs before anything is created; the
    dataset is built under a temporary name (not persistent) and the export in a hidden
    folder beside ``export_dir``, and both take their names only when everything succeeded. A
    failure removes what was made; an existing dataset replaced with ``overwrite`` stays until
    then.

    Example usage::

        import fiftyone_anonymizer as anon

        shared, report = anon.share_anonymized(dataset, name="street-photos-public",
                                               label_fields=["anonymizer_detections"])
        print(report.extra["left_out"])  # e.g. {"tagged for review": 2}

    Args:
        sample_collection: a dataset or view that was anonymized
        name: the new dataset's name (default: ``<dataset>-anonymized``)
        label_fields: label fields to keep (None: all but the audit's)
        export_dir: optionally also export there (a new or empty folder), in ``dataset_type``
        dataset_type: a format of :data:`EXPORT_FORMATS`, e.g. ``"COCODetectionDataset"``
            (which holds exactly one detections field)
        output_field: the field holding the anonymized copies' paths
        error_field: the error field
        persistent: whether the new dataset persists
        overwrite: replace an existing dataset of that name
        review_tag: the audit's review tag
        include_left_out: share the samples left out for review, a copy that is not current
            or nothing obscured too (never those without a copy)
        progress: ``progress(fraction, label)`` callback

    Returns:
        ``(dataset, report)``

    Raises:
        ValueError: a check failed (nothing was created)
    """
    import fiftyone as fo

    problems = share_problems(
        sample_collection, name, label_fields, export_dir, dataset_type, output_field, overwrite
    )
    if problems:
        raise ValueError(next(iter(problems.values())))
    view, check = anonymized_view(
        sample_collection,
        output_field,
        error_field,
        review_tag,
        OVERRIDABLE if include_left_out else (),
    )
    if not len(view):
        raise ValueError(f"nothing to share: no sample is ready ({check.summary()})")
    dataset = sample_collection._dataset
    name = name or f"{dataset.name}-anonymized"
    keep = kept_fields(sample_collection, label_fields)
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

    def step(fraction: float, label: str) -> None:
        if progress is not None:
            progress(fraction, label)

    partial = f"{name}.partial-{secrets.token_hex(4)}"
    export_to = Path(export_dir).expanduser().absolute() if export_dir else None
    staging = (
        export_to.parent / f".{export_to.name}.partial-{secrets.token_hex(4)}"
        if export_to is not None
        else None
    )
    made_parent = _first_missing(export_to.parent) if export_to is not None else None
    exported = False
    try:
        step(0.05, f"cloning the {len(view)} samples ready to share")
        shared = view.clone(partial, persistent=False)
        shared.set_values("filepath", shared.values(output_field))
        step(0.4, "removing the originals' paths and the review fields")
        _strip(shared, dataset, keep, output_field, error_field)
        shared.untag_samples(review_tag)
        shared.app_config.media_fields = ["filepath"]
        shared.app_config.grid_media_field = "filepath"
        shared.app_config.modal_media_field = "filepath"
        shared.app_config.active_fields = None
        shared.app_config.sidebar_groups = None
        shared.info["anonymized_from"] = dataset.name
        shared.save()
        originals = set(sample_collection.values("filepath"))
        if originals & set(shared.values("filepath")):
            raise RuntimeError("an original's path reached the shared dataset; nothing shared")
        step(0.5, "reading the copies' metadata")
        shared.compute_metadata(overwrite=True, progress=False)
        if export_to is not None and staging is not None:
            step(0.7, f"exporting to {export_to}")
            _export(shared, staging, dataset_type, keep)
            if export_to.exists():
                export_to.rmdir()  # checked empty before
            staging.rename(export_to)
            exported = True
            _relocate_export(export_to, staging, dataset_type)
        if fo.dataset_exists(name):
            fo.delete_dataset(name)  # share_problems checked that overwrite was asked
        shared.name = name
        shared.persistent = persistent
        shared.save()
    except BaseException:
        if fo.dataset_exists(partial):
            fo.delete_dataset(partial)
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if exported and export_to is not None:
            shutil.rmtree(export_to, ignore_errors=True)
        if made_parent is not None and made_parent.is_dir() and not any(made_parent.iterdir()):
            made_parent.rmdir()
        raise
    step(1.0, f"shared {len(shared)} samples as '{name}'")
    if export_to is not None:
        report.extra["export_dir"] = str(export_to)
    report.extra.update(dataset=name, label_fields=sorted(keep))
    return shared, report


def _first_missing(folder: Path) -> Path | None:
    """The highest folder of ``folder``'s path that does not exist yet (removed again when a
    failed export leaves it empty), or None."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _strip(shared, dataset, keep: Sequence[str], output_field: str, error_field: str) -> None:
    """Delete from ``shared`` every field that must not leave: label fields not kept, the
    plugin's bookkeeping (copies' paths, fingerprints, errors), the audit's fields and every
    evaluation's fields and per-box attributes (review material about the originals)."""
    import fiftyone as fo

    kept = set(keep)
    evals = set(dataset.list_evaluations())
    for name in fields.audit_fields(dataset):
        if not name.startswith("frames."):
            key = (dataset.get_field(name).info or {}).get("eval_key")
            if key:
                evals.add(key)
    bookkeeping = (
        fields.COPIES,
        fields.FINGERPRINTS,
        fields.ERRORS,
        fields.RESIDUALS,
        fields.POSSIBLE_RESIDUALS,
        fields.UNCOVERED,
    )
    samples = shared.get_field_schema()
    labels = set(shared.get_field_schema(embedded_doc_type=fo.core.labels.Label))
    drop = {n for n in labels if n not in kept}
    drop |= {n for n in (output_field, copies.fingerprint_field(output_field), error_field)}
    drop |= {n for n in samples if fields.field_purpose(dataset, n) in bookkeeping}
    drop |= {n for n in dataset.app_config.media_fields if n != "filepath"}  # originals' media
    drop |= {f"{key}_{s}" for key in evals for s in ("tp", "fp", "fn")}
    flat = shared.get_field_schema(flat=True)
    attributes = {
        path
        for path in flat
        if "." in path
        and path.split(".", 1)[0] in kept
        and path.rsplit(".", 1)[-1] in {f"{k}{s}" for k in evals for s in ("", "_id", "_iou")}
    }
    for path in sorted(attributes):
        shared.delete_sample_field(path)
    for name in sorted(n for n in drop if n in samples):
        shared.delete_sample_field(name)
    if shared.media_type == "video":
        frames = shared.get_frame_field_schema() or {}
        frame_labels = set(
            shared.get_frame_field_schema(embedded_doc_type=fo.core.labels.Label) or {}
        )
        drop_frames = {n for n in frame_labels if f"frames.{n}" not in kept}
        drop_frames |= {
            n for n in frames if fields.field_purpose(dataset, f"frames.{n}") in bookkeeping
        }
        for name in sorted(n for n in drop_frames if n in frames):
            shared.delete_frame_field(name)


def _export(shared, folder: Path, dataset_type: str, keep: Sequence[str]) -> None:
    import fiftyone as fo

    kwargs: dict[str, Any] = {
        "export_dir": str(folder),
        "dataset_type": getattr(fo.types, dataset_type),
        "progress": False,
    }
    if EXPORT_FORMATS[dataset_type][1]:
        kwargs["label_field"] = keep[0]
    shared.export(**kwargs)


def _relocate_export(export_to: Path, staging: Path, dataset_type: str) -> None:
    """Formats that record their own folder (YOLOv5's ``dataset.yaml``) get its final name."""
    if dataset_type != "YOLOv5Dataset":
        return
    import yaml

    path = export_to / "dataset.yaml"
    if path.is_file():
        data = yaml.safe_load(path.read_text()) or {}
        if data.get("path") == str(staging):
            data["path"] = str(export_to)
            path.write_text(yaml.safe_dump(data, default_flow_style=False))
