"""The FiftyOne schema of this plugin: field names, labels, fingerprints, provenance, writes.

Every job and front end that touches a dataset goes through here, so the field layout exists
once: the detect job, the anonymize job, the audit, share, and the command line's ``--dataset``.

Fields (defaults; each job lets the user rename its own):

* ``anonymizer_detections``: ``fo.Detections`` (``face`` / ``plate``, confidence, box); its
  field ``info`` records what produced them (:func:`detection_provenance`).
* ``anonymized_filepath``: the path of the anonymized copy, an App media field; its ``info``
  records the recipe (:class:`AnonymizeRecipe`), enough to rebuild every obscured region.
* ``anonymized_filepath_fingerprint``: per sample, what the copy was made from (its recipe's id,
  the boxes and the copy's path: :meth:`AnonymizeRecipe.fingerprint`), so a rerun redoes only
  what changed, and the audit finds the recipe of each copy.
* ``anonymizer_error``: why the sample failed (``"<job>: <reason>"``), None when it did not.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from ..core.boxes import Detection, RelBox
from ..core.images import DEFAULT_JPEG_QUALITY

T = TypeVar("T")

DEFAULT_LABEL_FIELD = "anonymizer_detections"
DEFAULT_OUTPUT_FIELD = "anonymized_filepath"
DEFAULT_ERROR_FIELD = "anonymizer_error"
SAVE_EVERY = 32  # samples per database write: a killed job loses at most this much work
LOCKS_COLLECTION = "fiftyone_anonymizer_locks"
PRODUCER = "fiftyone-anonymizer"

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


def fingerprint_field(output_field: str) -> str:
    """The field holding each copy's fingerprint beside ``output_field`` (the copy's path)."""
    return f"{output_field}_fingerprint"


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


# --------------------------------------------------------------------------------------------
# Labels


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


def declare_frame_detections_field(dataset, name: str, purpose: str = DETECTIONS) -> None:
    """A frame-level ``fo.Detections`` field, marked as written by this plugin for ``purpose``."""
    import fiftyone as fo

    if not dataset.has_frame_field(name):
        dataset.add_frame_field(name, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    mark_field(dataset, f"frames.{name}", purpose)


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


# --------------------------------------------------------------------------------------------
# What anonymize did: its recipe, recorded in the output field's info


@dataclass(frozen=True)
class AnonymizeRecipe:
    """How the copies were made: which boxes, which look, which quality, where.

    Args:
        label_fields: the ``fo.Detections`` fields whose boxes were obscured
        classes: the labels obscured (None: all)
        min_confidence: the confidence floor, for every class or per class
        settings: ``blur.BlurSettings``
        jpeg_quality: quality of JPEG copies
        output_dir: the folder the copies went to
        audio: whether video copies keep the source's audio
    """

    label_fields: tuple[str, ...]
    classes: tuple[str, ...] | None = None
    min_confidence: float | Mapping[str, float] | None = None
    settings: Any = None
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    output_dir: str | None = None
    audio: bool = True

    def boxes(self, labels_per_field: Sequence[Any]) -> list[Detection]:
        """The boxes obscured for one sample, given its value of each label field in order."""
        return [
            d
            for labels in labels_per_field
            for d in from_fo_detections(labels, self.classes, self.min_confidence)
        ]

    @property
    def recipe_id(self) -> str:
        """A short name for this recipe; each copy's fingerprint starts with it, so the copy's
        recipe can be found among those its field's info records."""
        payload = json.dumps(self.to_info(), sort_keys=True, default=str)
        return hashlib.sha1(payload.encode()).hexdigest()[:8]

    def fingerprint(self, boxes: Sequence[Any], target: str | os.PathLike) -> str:
        """What a copy depends on besides its source: this recipe (look, quality, folder), the
        boxes (a list, or one list per frame of a video) and the copy's own path.
        ``"<recipe id>-<hash>"``."""

        def rows(items: Sequence[Any]) -> list:
            return [
                rows(d)
                if not isinstance(d, Detection)
                else [d.label, round(d.score, 4), [round(v, 6) for v in d.box]]
                for d in items
            ]

        payload = json.dumps({"boxes": rows(boxes), "target": os.fspath(target)}, sort_keys=True)
        return f"{self.recipe_id}-{hashlib.sha1(payload.encode()).hexdigest()[:16]}"

    def to_info(self) -> dict[str, Any]:
        """Everything that changes a copy (its id is :attr:`recipe_id`). The audio is recorded
        only when it is left out, so that recipes recorded before it was have the same id."""
        info = {
            "label_fields": list(self.label_fields),
            "classes": list(self.classes) if self.classes else None,
            "min_confidence": (
                dict(self.min_confidence)
                if isinstance(self.min_confidence, Mapping)
                else self.min_confidence
            ),
            "settings": self.settings.to_dict(),
            "output_dir": self.output_dir,
            "jpeg_quality": self.jpeg_quality,
        }
        if not self.audio:
            info["audio"] = False
        return info

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> AnonymizeRecipe:
        from ..blur import BlurSettings

        classes = info.get("classes")
        return cls(
            label_fields=tuple(info["label_fields"]),
            classes=tuple(classes) if classes else None,
            min_confidence=info.get("min_confidence"),
            settings=BlurSettings.from_dict(info["settings"]),
            jpeg_quality=int(info.get("jpeg_quality", DEFAULT_JPEG_QUALITY)),
            output_dir=info.get("output_dir"),
            audio=bool(info.get("audio", True)),
        )

    @classmethod
    def read(cls, sample_collection, output_field: str = DEFAULT_OUTPUT_FIELD) -> AnonymizeRecipe:
        """The latest recipe recorded on ``output_field``; a clear error when there is none."""
        return cls.from_info(_copies_info(sample_collection, output_field))

    @classmethod
    def read_all(
        cls, sample_collection, output_field: str = DEFAULT_OUTPUT_FIELD
    ) -> dict[str, AnonymizeRecipe]:
        """Every recipe the field's copies were made with, by recipe id (see :meth:`fingerprint`);
        the latest also under ``""``, for copies fingerprinted before recipe ids existed."""
        info = _copies_info(sample_collection, output_field)
        recipes = {rid: cls.from_info(entry) for rid, entry in info.get("recipes", {}).items()}
        recipes[""] = cls.from_info(info)
        return recipes


def recipe_id_of(fingerprint: str | None) -> str:
    """The recipe id a copy's fingerprint starts with (``""`` for older fingerprints)."""
    head, sep, _ = (fingerprint or "").partition("-")
    return head if sep else ""


def _copies_info(sample_collection, output_field: str) -> dict[str, Any]:
    fld = sample_collection.get_field(output_field)
    info = (fld.info or {}) if fld is not None else {}
    if "settings" not in info or "label_fields" not in info:
        raise ValueError(
            f"field '{output_field}' records no anonymization: run anonymize_images first"
        )
    return info


# --------------------------------------------------------------------------------------------
# Fields: declared, described, registered


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


def declare_copy_fields(dataset, output_field: str) -> None:
    """The copy's path and its fingerprint; the path becomes a media field."""
    declare_string_field(dataset, output_field, COPIES)
    declare_string_field(dataset, fingerprint_field(output_field), FINGERPRINTS)
    if output_field not in dataset.app_config.media_fields:
        dataset.app_config.media_fields = [*dataset.app_config.media_fields, output_field]
        dataset.save()
    group_fields(dataset)


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


def record_copies(dataset, output_field: str, produced_by: str, recipe: AnonymizeRecipe) -> None:
    """Record ``recipe`` on the copies field before any copy made with it is stored, so the
    field's info always names the recipe of every value: the latest at the top level (what the
    audit and the App show), and under ``recipes`` every recipe still in use, by id (two runs
    into different folders or with different looks can share a field). Runs that start at the
    same time take turns (:func:`field_lock`)."""
    with field_lock(dataset, output_field):
        dataset.reload()
        fld = dataset.get_field(output_field)
        old = (fld.info or {}) if fld is not None else {}
        in_use = (
            {recipe_id_of(fp) for fp in dataset.values(fingerprint_field(output_field)) if fp}
            if dataset.has_field(fingerprint_field(output_field))
            else set()
        )
        # A recipe stays while copies use it, or while a run that recorded it may still be
        # writing its first copies.
        recent = (datetime.utcnow() - timedelta(days=1)).isoformat()
        recipes = {
            rid: entry
            for rid, entry in old.get("recipes", {}).items()
            if rid in in_use or entry.get("recorded_at", "") > recent
        }
        recipes[recipe.recipe_id] = {
            **recipe.to_info(),
            "recorded_at": datetime.utcnow().isoformat(),
        }
        record_provenance(
            dataset,
            output_field,
            "Path of the anonymized copy written by fiftyone-anonymizer",
            {"produced_by": produced_by, **recipe.to_info(), "recipes": recipes},
        )


@contextmanager
def field_lock(
    dataset, field_name: str, timeout_s: float = 60.0, stale_after_s: float = 120.0
) -> Iterator[None]:
    """Hold a lock on one field of one dataset, in FiftyOne's own database (so processes on
    other machines sharing it take turns too). A lock older than ``stale_after_s`` belongs to
    a process that died holding it and is taken over.

    Raises:
        TimeoutError: another process held it for ``timeout_s``
    """
    from fiftyone.core.odm.database import get_db_conn
    from pymongo.errors import DuplicateKeyError

    locks = get_db_conn()[LOCKS_COLLECTION]
    key = f"{dataset._doc.id}:{field_name}"
    deadline = time.monotonic() + timeout_s
    while True:
        now = datetime.utcnow()
        try:
            locks.insert_one(
                {"_id": key, "at": now, "host": socket.gethostname(), "pid": os.getpid()}
            )
            break
        except DuplicateKeyError:
            locks.delete_one({"_id": key, "at": {"$lt": now - timedelta(seconds=stale_after_s)}})
            if time.monotonic() > deadline:
                raise TimeoutError(f"field '{field_name}' is locked by another run") from None
            time.sleep(0.05)
    try:
        yield
    finally:
        locks.delete_one({"_id": key})


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


# --------------------------------------------------------------------------------------------
# Writes


class SampleWriter:
    """The one place the jobs write sample fields: buffered, one atomic update per sample.

    Each sample's fields (labels, copy path, fingerprint, error) are set in a single database
    update, so a job killed at any moment never leaves a sample with its copy's path from one
    run and its fingerprint or error from another. Writes go out every ``every`` samples and
    when the writer closes (also on an exception: what finished is real work).

    Args:
        collection: the dataset or view the job runs on
        every: samples per database round trip
    """

    def __init__(self, collection, every: int = SAVE_EVERY) -> None:
        self._dataset = collection._dataset
        self._every = every
        self._pending: dict[str, dict[str, Any]] = {}

    def write(self, sample_id: str, values: Mapping[str, Any]) -> None:
        """Set ``values`` (field -> label, string, number or None) on one sample."""
        self._pending.setdefault(sample_id, {}).update(values)
        if len(self._pending) >= self._every:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        from bson import ObjectId
        from pymongo import UpdateOne

        now = datetime.utcnow()
        ops = [
            UpdateOne(
                {"_id": ObjectId(sid)},
                {"$set": {**{k: _to_mongo(v) for k, v in values.items()}, "last_modified_at": now}},
            )
            for sid, values in self._pending.items()
        ]
        ids = list(self._pending)
        self._pending = {}
        with database_guard(DATABASE_TIMEOUT_S):
            self._dataset._bulk_write(ops, ids=ids)

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None and issubclass(exc_type, DatabaseLost):
            return  # nothing more can be written; the error says how to resume
        self.flush()


#: Seconds a database write may take before the job calls the database lost (pymongo's own
#: default waits 30 s for a server that is gone, then prints a page of traceback). A flush
#: takes milliseconds; 10 s was once exceeded on a 2-core machine at load 17, hence 20.
DATABASE_TIMEOUT_S = 20.0


class DatabaseLost(RuntimeError):
    """FiftyOne's database cannot be reached; the message says what happened and how to resume."""


@contextmanager
def database_guard(timeout_s: float | None = None) -> Iterator[None]:
    """Turn a lost database into one plain :class:`DatabaseLost` (within ``timeout_s``, if
    given, instead of pymongo's 30 s)."""
    import pymongo
    from pymongo.errors import ConnectionFailure, PyMongoError

    try:
        with pymongo.timeout(timeout_s) if timeout_s else nullcontext():
            yield
    except PyMongoError as exc:
        if not isinstance(exc, ConnectionFailure) and not getattr(exc, "timeout", False):
            raise
        raise DatabaseLost(
            f"lost the connection to FiftyOne's database ({type(exc).__name__}); the copies "
            f"written so far are complete, the samples' fields are as the last save left them; "
            f"run the same job again once the database is back: it redoes only what is not "
            f"current"
        ) from None


def connect() -> None:
    """Connect to FiftyOne's database, starting the embedded one if need be, one process at a
    time: two processes that start it at the same moment otherwise race for its data folder
    and one fails (``ServiceListenTimeout``). A no-op once connected."""
    import fcntl

    import fiftyone as fo
    from fiftyone.core.odm import database

    if fo.config.database_uri is not None or database._client is not None:
        database.get_db_conn()
        return
    folder = Path(fo.config.database_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".fiftyone-anonymizer-start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        database.get_db_conn()


def check_keywords(
    job: str, given: Mapping[str, Any], named: Sequence[str], engine_options: bool
) -> None:
    """Refuse a keyword ``job`` does not take (a misspelt option must not run the defaults
    without a word): ``TypeError`` naming it, the closest valid name, and where a detector or
    blur setting goes instead.

    Args:
        job: the job's name, for the message
        given: the keyword arguments of the call
        named: the job's own parameters
        engine_options: whether the job passes other keywords on as ``engine.EngineOptions``
    """
    from dataclasses import fields

    from ..engine import EngineOptions

    valid = list(named) + ([f.name for f in fields(EngineOptions)] if engine_options else [])
    for key in given:
        if key in valid:
            continue
        from ..blur import BlurSettings
        from ..detectors import DetectorConfig

        where = ""
        if key in {f.name for f in fields(DetectorConfig)} and "detector" in named:
            where = f" (a detector setting: pass detector=DetectorConfig({key}=...))"
        elif key in {f.name for f in fields(BlurSettings)} and "settings" in named:
            where = f" (a blur setting: pass settings=BlurSettings({key}=...))"
        raise TypeError(
            f"{job}() got an unexpected keyword argument '{key}'{closest(key, valid)}{where}"
        )


def guarded(job: Callable[..., T]) -> Callable[..., T]:
    """A job whose lost database ends in :class:`DatabaseLost` (see :func:`database_guard`),
    which connects without racing another process's first start (:func:`connect`), and which
    refuses keywords it does not know (:func:`check_keywords`)."""
    import inspect

    params = inspect.signature(job).parameters.values()
    named = [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    engine_options = any(p.kind == p.VAR_KEYWORD for p in params)

    @functools.wraps(job)
    def run(*args: Any, **kwargs: Any) -> T:
        check_keywords(job.__name__, kwargs, named, engine_options)
        with database_guard():
            connect()
            return job(*args, **kwargs)

    return run


def _to_mongo(value: Any) -> Any:
    return value.to_mongo() if hasattr(value, "to_mongo") else value
