"""The fields this plugin writes: their names and purposes, the one check of a target field
(every job, form, ``__call__`` and the command line go through it), their declaration, the App's
sidebar and media fields, and the provenance recorded in each field's ``info``.

Fields (defaults; each job lets the user rename its own):

* ``anonymizer_detections``: ``fo.Detections`` (``face`` / ``plate``, confidence, box); its
  field ``info`` records what produced them (:func:`detection_provenance`).
* ``anonymized_filepath``: the path of the anonymized copy, an App media field; its ``info``
  records the recipe (``copies.AnonymizeRecipe``), enough to rebuild every obscured region.
* ``anonymized_filepath_fingerprint``: per sample, what the copy was made from
  (``copies.AnonymizeRecipe.fingerprint``), so a rerun redoes only what changed.
* ``anonymizer_error``: why the sample failed (``"<job>: <reason>"``), None when it did not.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

DEFAULT_LABEL_FIELD = "anonymizer_detections"
DEFAULT_OUTPUT_FIELD = "anonymized_filepath"
DEFAULT_ERROR_FIELD = "anonymizer_error"
PRODUCER = "fiftyone-anonymizer"
#: The tag the audit puts on samples to review, and share leaves out by default.
REVIEW_TAG = "needs_review"

# What a field the plugin writes is for, recorded in its ``info["purpose"]`` when it is made:
# a job replaces a field only when it wrote that field for that same purpose.
DETECTIONS = "detections"
COPIES = "copies"
FINGERPRINTS = "fingerprints"
ERRORS = "errors"
RESIDUALS = "residuals"
POSSIBLE_RESIDUALS = "possible residuals"
UNCOVERED = "uncovered counts"
#: How each purpose reads in an error message.
PURPOSE_TEXT = {
    DETECTIONS: "detections",
    COPIES: "anonymized copies' paths",
    FINGERPRINTS: "copies' fingerprints",
    ERRORS: "error messages",
    RESIDUALS: "audit residuals",
    POSSIBLE_RESIDUALS: "audit possible residuals",
    UNCOVERED: "audit counts of uncovered boxes",
}


# --------------------------------------------------------------------------------------------
# Field names: the one check every job, form, ``__call__`` and the command line go through

#: A field name a job may create: a letter, then letters, digits or underscores (FiftyOne takes
#: "bad name!" or "a.b", which the App, views and exports then trip over).
FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")


def field_name_problem(name: Any, what: str = "field") -> str | None:
    """Why ``name`` cannot name a field this plugin creates, or None."""
    if not isinstance(name, str) or not name:
        return f"the {what} name is empty"
    if not FIELD_NAME.fullmatch(name):
        return (
            f"'{name}' is not a valid {what} name: use a letter, then letters, digits or "
            f"underscores (no spaces, dots or other characters)"
        )
    return None


def field_purpose(sample_collection, path: str) -> str | None:
    """What the plugin wrote the field at ``path`` for (see :data:`PURPOSE_TEXT`), or None when
    it did not write it. Fields written before purposes were recorded are recognised by their
    provenance (producer, recipe) and, for the bookkeeping fields, by their names."""
    import fiftyone as fo

    fld = sample_collection.get_field(path)
    if fld is None:
        return None
    info = fld.info or {}
    if info.get("purpose"):
        return str(info["purpose"])
    produced = str(info.get("produced_by", ""))
    holds_detections = isinstance(fld, fo.EmbeddedDocumentField) and issubclass(
        fld.document_type, fo.Detections
    )
    if produced == AUDIT_PRODUCER:
        return RESIDUALS if holds_detections else UNCOVERED
    if produced.startswith(PRODUCER):
        if "label_fields" in info and "settings" in info:
            return COPIES
        if holds_detections:
            return DETECTIONS
        return None
    name = path.rsplit(".", 1)[-1]
    if isinstance(fld, fo.StringField) and not info:
        if name == DEFAULT_ERROR_FIELD:
            return ERRORS
        base = name.removesuffix("_fingerprint")
        if base != name and field_purpose(sample_collection, base) == COPIES:
            return FINGERPRINTS
    return None


def target_field_problem(
    sample_collection, name: Any, purpose: str, frames: bool = False
) -> str | None:
    """Why a job may not write its ``purpose`` into field ``name`` (``frames.<name>`` with
    ``frames``), or None: the name must be valid, and a field that exists must have been
    written by this plugin for that same purpose (anything else would be destroyed)."""
    what = "frame field" if frames else "field"
    problem = field_name_problem(name, what)
    if problem:
        return problem
    path = f"frames.{name}" if frames else name
    if sample_collection.get_field(path) is None:
        return None
    found = field_purpose(sample_collection, path)
    if found == purpose:
        return None
    holds = (
        f"holds {PURPOSE_TEXT.get(found, found)} of this plugin"
        if found
        else "was not written by this plugin"
    )
    return (
        f"the {what} '{path}' exists and {holds}; writing {PURPOSE_TEXT[purpose]} into it "
        f"would destroy its values: choose another name"
    )


def check_target_fields(
    sample_collection, targets: Sequence[tuple[Any, str, bool]]
) -> dict[Any, str]:
    """:func:`target_field_problem` of each ``(name, purpose, frames)``: the problems, by name
    (empty when every target may be written). Two purposes may not share one name either."""
    problems: dict[Any, str] = {}
    seen: dict[Any, str] = {}
    for name, purpose, frames in targets:
        if name in seen and seen[name] != purpose:
            problems[name] = (
                f"'{name}' is asked to hold both {PURPOSE_TEXT[seen[name]]} and "
                f"{PURPOSE_TEXT[purpose]}: give each its own field"
            )
            continue
        seen[name] = purpose
        problem = target_field_problem(sample_collection, name, purpose, frames)
        if problem:
            problems[name] = problem
    return problems


def require_target_fields(sample_collection, targets: Sequence[tuple[Any, str, bool]]) -> None:
    """Raise ``ValueError`` with the first problem of :func:`check_target_fields`."""
    problems = check_target_fields(sample_collection, targets)
    if problems:
        raise ValueError(next(iter(problems.values())))


def copies_field_problem(sample_collection, name: Any) -> str | None:
    """Why ``name`` is not a field of anonymized copies to read (audit, share, status), or None:
    it must exist and have been written by ``anonymize_images`` (``filepath`` or a label field
    holds originals or labels, and sharing them would leak)."""
    problem = field_name_problem(name)
    if problem:
        return problem
    if sample_collection.get_field(name) is None:
        return f"no field '{name}': run anonymize_images first"
    if field_purpose(sample_collection, name) != COPIES:
        return (
            f"field '{name}' does not hold anonymized copies written by anonymize_images: "
            f"choose the copies' field (default '{DEFAULT_OUTPUT_FIELD}')"
        )
    return None


def detections_fields(sample_collection) -> list[str]:
    """The ``fo.Detections`` fields a job can take boxes from: on images the samples' fields,
    on videos the frames' (named without ``frames.``, as the jobs take them)."""
    import fiftyone as fo

    if sample_collection.media_type == "video":
        fields = sample_collection.get_frame_field_schema(embedded_doc_type=fo.Detections) or {}
    else:
        fields = sample_collection.get_field_schema(embedded_doc_type=fo.Detections)
    return sorted(fields)


def labels_path(sample_collection, label_field: str) -> str:
    """Where a detections field's labels are: ``label_field`` on images, ``frames.<field>``
    on videos (whose jobs name their fields without the prefix)."""
    if sample_collection.media_type == "video" and not label_field.startswith("frames."):
        return f"frames.{label_field}"
    return label_field


def label_fields(sample_collection) -> list[str]:
    """Every label field, frame fields as ``frames.<name>``, but the audit's (share keeps these
    or drops them)."""
    import fiftyone.core.labels as fol

    audit = audit_fields(sample_collection)
    names = list(sample_collection.get_field_schema(embedded_doc_type=fol.Label))
    if sample_collection.media_type == "video":
        frame = sample_collection.get_frame_field_schema(embedded_doc_type=fol.Label) or {}
        names += [f"frames.{name}" for name in frame]
    return sorted(n for n in names if n not in audit)


def closest(name: str, valid: Sequence[str]) -> str:
    """``"; the closest valid name is 'x'"``, or ``""`` when there is none: a valid name that
    the given one starts (``gt`` -> ``gt_field``), else difflib's closest."""
    started = sorted((v for v in valid if v.startswith(name)), key=len)
    match = started[:1] or difflib.get_close_matches(name, list(valid), n=1, cutoff=0.0)
    return f"; the closest valid name is '{match[0]}'" if match else ""


def declare_frame_detections_field(dataset, name: str, purpose: str = DETECTIONS) -> None:
    """A frame-level ``fo.Detections`` field, marked as written by this plugin for ``purpose``."""
    import fiftyone as fo

    if not dataset.has_frame_field(name):
        dataset.add_frame_field(name, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    mark_field(dataset, f"frames.{name}", purpose)


def mark_field(dataset, path: str, purpose: str) -> None:
    """Record in the field's info that this plugin writes it for ``purpose`` (the mark
    :func:`target_field_problem` reads), when it is made, before any value is written."""
    fld = dataset.get_field(path)
    if fld is None:
        return
    info = dict(fld.info or {})
    if info.get("purpose") == purpose:
        return
    info.setdefault("produced_by", PRODUCER)
    info["purpose"] = purpose
    fld.info = info
    fld.save()


def declare_detections_field(dataset, name: str, purpose: str = DETECTIONS) -> None:
    """A sample-level ``fo.Detections`` field, marked as written by this plugin for ``purpose``."""
    import fiftyone as fo

    if not dataset.has_field(name):
        dataset.add_sample_field(name, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    mark_field(dataset, name, purpose)


def declare_string_field(dataset, name: str, purpose: str) -> None:
    import fiftyone as fo

    if not dataset.has_field(name):
        dataset.add_sample_field(name, fo.StringField)
    mark_field(dataset, name, purpose)


def error_values(dataset, error_field: str) -> Callable[[str | None], dict[str, Any]]:
    """``values(reason)``: what to write into ``error_field`` for a sample. The field is
    declared on the first failure only (a sidebar entry that is always empty misleads), and a
    sample's old error is cleared only where the field exists."""
    declared = [dataset.has_field(error_field)]

    def values(reason: str | None) -> dict[str, Any]:
        if reason is not None and not declared[0]:
            declare_string_field(dataset, error_field, ERRORS)
            group_fields(dataset)
            declared[0] = True
        return {error_field: reason} if declared[0] else {}

    return values


SIDEBAR_GROUP = "anonymizer"


def group_fields(dataset) -> None:
    """Gather the plugin's bookkeeping fields (fingerprints, errors, audit results) into one
    collapsed "anonymizer" group of the App's sidebar, so they do not crowd the user's own;
    the labels and the copies' path stay where the user looks for them."""
    import fiftyone as fo

    bookkeeping = (FINGERPRINTS, ERRORS, RESIDUALS, POSSIBLE_RESIDUALS, UNCOVERED)
    ours = {
        name
        for name, fld in dataset.get_field_schema().items()
        if name.endswith("_fingerprint")
        or name == DEFAULT_ERROR_FIELD
        or (fld.info or {}).get("purpose") in bookkeeping
        or str((fld.info or {}).get("produced_by", "")).startswith(AUDIT_PRODUCER)
    }
    if not ours:
        return
    groups = dataset.app_config.sidebar_groups or fo.DatasetAppConfig.default_sidebar_groups(
        dataset
    )
    for group in groups:
        group.paths = [path for path in group.paths if path not in ours]
    existing = next((g for g in groups if g.name == SIDEBAR_GROUP), None)
    if existing is None:
        groups.append(
            fo.SidebarGroupDocument(name=SIDEBAR_GROUP, paths=sorted(ours), expanded=False)
        )
    else:
        existing.paths = sorted(ours)
    dataset.app_config.sidebar_groups = groups
    dataset.save()


def show_copies(dataset, output_field: str) -> None:
    """Make the copies the App's default media in the grid and the modal (a video modal plays
    the copy), for every App opened on the dataset from now on; an App already open switches
    through the ``show_media`` operator of ``plugin/app/show_media.js``."""
    if output_field not in dataset.app_config.media_fields:
        dataset.app_config.media_fields = [*dataset.app_config.media_fields, output_field]
    dataset.app_config.grid_media_field = output_field
    dataset.app_config.modal_media_field = output_field
    dataset.save()


#: How the audit's residuals look in the App: likely misses in red, possible ones in amber.
LIKELY_COLOR, POSSIBLE_COLOR = "#ff1f1f", "#f5b400"


def show_review_fields(dataset, likely_path: str, possible_path: str) -> None:
    """The App shows the likely misses by default, in red, and the possible ones (many, mostly
    noise) only when switched on in the sidebar, in amber: the dataset's default active fields
    and colour scheme, the user's other choices kept."""
    import fiftyone as fo

    config = dataset.app_config
    active = config.active_fields
    if active is None:
        config.active_fields = fo.ActiveFields(exclude=True, paths=[possible_path])
    elif active.exclude:
        active.paths = [p for p in active.paths if p != likely_path]
        if possible_path not in active.paths:
            active.paths = [*active.paths, possible_path]
    else:
        active.paths = [p for p in active.paths if p != possible_path]
        if likely_path not in active.paths:
            active.paths = [*active.paths, likely_path]
    scheme = config.color_scheme or fo.ColorScheme()
    colours = {likely_path: LIKELY_COLOR, possible_path: POSSIBLE_COLOR}
    scheme.fields = [
        entry for entry in (scheme.fields or []) if entry.get("path") not in colours
    ] + [{"path": path, "fieldColor": colour} for path, colour in colours.items()]
    config.color_scheme = scheme
    dataset.save()


def record_provenance(dataset, field_name: str, description: str, info: Mapping[str, Any]) -> None:
    """Describe a field the FiftyOne way (field description and info), visible in the App; the
    field's purpose (:func:`mark_field`) is kept."""
    fld = dataset.get_field(field_name)
    if fld is None:
        return
    purpose = (fld.info or {}).get("purpose")
    fld.description = description
    fld.info = json.loads(json.dumps(dict(info), default=str))
    if purpose and "purpose" not in fld.info:
        fld.info["purpose"] = purpose
    fld.save()


def record_detections(
    dataset, label_field: str, produced_by: str, config: Any, detector: Any
) -> None:
    """Provenance of a detections field: the configuration and what it built (models, sha256,
    versions, thresholds)."""
    record_provenance(
        dataset,
        label_field,
        "Faces and licence plates found by fiftyone-anonymizer",
        {"produced_by": produced_by, **detection_provenance(config, detector)},
    )


AUDIT_PRODUCER = "fiftyone-anonymizer audit_anonymization"


def audit_fields(sample_collection) -> set[str]:
    """The fields the audit wrote (residual detections, uncovered counts; on videos
    ``frames.<name>``): review material about the originals, never shared."""

    def audit(fld) -> bool:
        info = fld.info or {}
        return info.get("produced_by") == AUDIT_PRODUCER or info.get("purpose") in (
            RESIDUALS,
            POSSIBLE_RESIDUALS,
            UNCOVERED,
        )

    found = {name for name, fld in sample_collection.get_field_schema().items() if audit(fld)}
    if sample_collection.media_type == "video":
        frames = sample_collection.get_frame_field_schema() or {}
        found |= {f"frames.{name}" for name, fld in frames.items() if audit(fld)}
    return found


def detection_provenance(config: Any, detector: Any) -> dict[str, Any]:
    """``config.to_dict()`` (None for a detector given directly) and ``detectors.describe``;
    a stand-in detector (tests, custom models) is named by its type."""
    from .. import detectors

    try:
        described = detectors.describe(detector)
    except Exception:
        described = {"detector": type(detector).__name__}
    return {"config": config.to_dict() if config is not None else None, **described}
