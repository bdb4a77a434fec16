"""The anonymized copy, in one place: the recipe behind it, its fingerprint, where it goes,
whether it is current, the boxes it obscured, and adopting copies a dead worker finished.

Every job asks here: anonymize (images and videos) makes copies by it, the audit and share read
them back through it, the shards salvage them with it, and the forms check folders with it.
A copy's recipe (:class:`AnonymizeRecipe`) is recorded in its field's ``info``; each copy's
fingerprint (``<field>_fingerprint``) starts with its recipe's id, so the recipe of any copy
can be found again (:func:`recipe_of`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..core.boxes import Detection
from ..core.images import DEFAULT_JPEG_QUALITY
from ..core.paths import (
    common_root,
    distinct_targets,
    mirrored_path,
    output_dir_problem,
    source_folders,
)
from .database import field_lock
from .fields import (
    COPIES,
    DEFAULT_LABEL_FIELD,
    DEFAULT_OUTPUT_FIELD,
    FINGERPRINTS,
    declare_string_field,
    group_fields,
    record_provenance,
)
from .labels import from_fo_detections


def fingerprint_field(output_field: str) -> str:
    """The field holding each copy's fingerprint beside ``output_field`` (the copy's path)."""
    return f"{output_field}_fingerprint"


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
    def from_params(cls, params: Mapping[str, Any]) -> AnonymizeRecipe:
        """The recipe a job's keywords, a form or an operator's ``__call__`` describe, by the
        same names: ``label_fields``, ``classes``, ``min_confidence``, ``settings`` (a
        ``BlurSettings``, or else ``blur.BLUR_PARAMS``: ``mode``, ``shape``, ``box_scale``,
        ``strength``, ``feather``, ``seed_kernel``), ``jpeg_quality``, ``output_dir``,
        ``audio``. Every path that makes copies builds its recipe here, so a copy made from
        the App, the SDK or a shard has the same fingerprint.

        Raises:
            ValueError: a confidence floor outside [0, 1]
        """
        from ..blur import BlurSettings

        label_fields = params.get("label_fields") or [DEFAULT_LABEL_FIELD]
        if isinstance(label_fields, str):
            label_fields = [label_fields]
        classes = params.get("classes") or None
        min_confidence = params.get("min_confidence")
        floors = (
            min_confidence.values()
            if isinstance(min_confidence, Mapping)
            else []
            if min_confidence is None
            else [min_confidence]
        )
        if any(not 0.0 <= float(v) <= 1.0 for v in floors):
            raise ValueError(
                f"min_confidence must be between 0 and 1, got {min_confidence}: a "
                f"floor above every score would obscure nothing"
            )
        output_dir = params.get("output_dir")
        return cls(
            label_fields=tuple(label_fields),
            classes=tuple(classes) if classes else None,
            min_confidence=min_confidence,
            settings=params.get("settings") or BlurSettings.from_params(params),
            jpeg_quality=int(params.get("jpeg_quality") or DEFAULT_JPEG_QUALITY),
            output_dir=str(Path(output_dir).expanduser().resolve()) if output_dir else None,
            audio=bool(params.get("audio", True)),
        )

    @classmethod
    def read(cls, sample_collection, output_field: str = DEFAULT_OUTPUT_FIELD) -> AnonymizeRecipe:
        """The latest recipe recorded on ``output_field``; a clear error when there is none."""
        return cls.from_info(recorded_info(sample_collection, output_field))

    @classmethod
    def read_all(
        cls, sample_collection, output_field: str = DEFAULT_OUTPUT_FIELD
    ) -> dict[str, AnonymizeRecipe]:
        """Every recipe the field's copies were made with, by recipe id (see :meth:`fingerprint`);
        the latest also under ``""``, for copies fingerprinted before recipe ids existed."""
        info = recorded_info(sample_collection, output_field)
        recipes = {rid: cls.from_info(entry) for rid, entry in info.get("recipes", {}).items()}
        recipes[""] = cls.from_info(info)
        return recipes


def declare_copy_fields(dataset, output_field: str) -> None:
    """The copy's path and its fingerprint; the path becomes a media field."""
    declare_string_field(dataset, output_field, COPIES)
    declare_string_field(dataset, fingerprint_field(output_field), FINGERPRINTS)
    if output_field not in dataset.app_config.media_fields:
        dataset.app_config.media_fields = [*dataset.app_config.media_fields, output_field]
        dataset.save()
    group_fields(dataset)


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


def recipe_of(recipes: Mapping[str, AnonymizeRecipe], fingerprint: str | None) -> AnonymizeRecipe:
    """The recipe a copy was made with, among ``AnonymizeRecipe.read_all``'s, by its
    fingerprint; the latest for a copy fingerprinted before recipe ids existed."""
    return recipes.get(recipe_id_of(fingerprint)) or recipes[""]


def recipe_id_of(fingerprint: str | None) -> str:
    """The recipe id a copy's fingerprint starts with (``""`` for older fingerprints)."""
    head, sep, _ = (fingerprint or "").partition("-")
    return head if sep else ""


def recorded_info(sample_collection, output_field: str) -> dict[str, Any]:
    """The copies field's ``info`` with its recipe; a clear error when there is none."""
    fld = sample_collection.get_field(output_field)
    info = (fld.info or {}) if fld is not None else {}
    if "settings" not in info or "label_fields" not in info:
        raise ValueError(
            f"field '{output_field}' records no anonymization: run anonymize_images first"
        )
    return info


def copy_targets(
    source_paths: Sequence[str], output_dir: Path, video: bool = False
) -> dict[str, Path]:
    """Where each source's copy goes: its path mirrored under ``output_dir`` (relative to the
    folder holding every source); video copies are MP4 (``videos.copy_name``), and two
    videos that would land on one copy (``x.mp4`` and ``x.webm``) keep their names apart
    (``core.paths.distinct_targets``).

    Args:
        source_paths: every source of the dataset (not only the view's: a copy's place must
            not depend on which view a run took)
        output_dir: the folder for the copies
        video: whether the sources are videos

    Raises:
        ValueError: two sources would still share one copy
    """
    from ..videos import copy_name

    unique = list(dict.fromkeys(source_paths))
    root = common_root(unique)
    targets = [mirrored_path(path, root, output_dir) for path in unique]
    if video:
        targets = distinct_targets(unique, [copy_name(t) for t in targets])
    return dict(zip(unique, targets))


def check_output_dir(
    output_dir: str | os.PathLike, source_paths: Sequence[str], video: bool = False
) -> str | None:
    """Why copies of ``source_paths`` may not go to ``output_dir`` (:mod:`core.paths`' rule, no
    copy may land on a source file, no two sources on one copy), or None."""
    problem = output_dir_problem(output_dir, source_folders(source_paths))
    if problem:
        return problem
    out = Path(output_dir).expanduser().resolve()
    try:
        targets = copy_targets(source_paths, out, video)
    except ValueError as exc:
        return str(exc)
    sources = {os.path.realpath(p) for p in source_paths}
    for path, target in targets.items():
        if os.path.realpath(target) in sources:
            return f"the output folder {out} would overwrite source media ({path})"
    return None


def copy_is_current(
    stored_path: str | None, target: Path, source: str, stored_fp: str | None, fp: str
) -> bool:
    """A copy is current when it is where this run would write it, was made from the same
    recipe and boxes (the fingerprint), still exists and is newer than its source."""
    if stored_path != str(target) or stored_fp != fp or not target.is_file():
        return False
    try:
        return target.stat().st_mtime >= os.path.getmtime(source)
    except OSError:
        return False


def frame_boxes(sample_collection, sid: str, recipe: AnonymizeRecipe) -> list[list[Detection]]:
    """One list of boxes per frame (frame 1 first) from the recipe's frame label fields."""
    return frame_labels(sample_collection, sid, recipe)[0]


def frame_labels(
    sample_collection, sid: str, recipe: AnonymizeRecipe
) -> tuple[list[list[Detection]], dict[str, int]]:
    """:func:`frame_boxes`, and the tracks per class among those boxes (a face on screen for
    300 frames is one face, as the detect job counts it; a box without a track counts alone)."""
    view = sample_collection.select(sid)
    numbers = view.values("frames.frame_number")[0] or []
    fields = [view.values(f"frames.{name}")[0] or [] for name in recipe.label_fields]
    count = max(numbers, default=0)
    per_frame: list[list[Detection]] = [[] for _ in range(count)]
    tracks: dict[str, set] = {}
    for n, column in enumerate(fields):
        for number, labels in zip(numbers, column):
            kept = recipe.boxes([labels])
            per_frame[number - 1].extend(kept)
            if labels is None or not kept:
                continue
            ids = {(d.label, tuple(d.bounding_box or ())): d.index for d in labels.detections}
            for d in kept:
                index = ids.get((d.label, tuple(d.box)))
                key = (n, index) if index is not None else (n, number, d.box)
                tracks.setdefault(d.label, set()).add(key)
    return per_frame, {label: len(keys) for label, keys in tracks.items()}


def adopt_finished(view, params: Mapping[str, Any], since: float) -> tuple[int, int]:
    """Record the copies a dead ``anonymize_images`` run on ``view`` finished, and remove its
    partial files.

    The anonymize job records copies in the database in groups, so a worker killed mid-run
    leaves complete copies (written atomically) that the database does not know about. A copy
    is recorded when it lies where the job puts it (:func:`copy_targets`), was written after
    the run started (and after its source changed), and the sample has not changed since the
    run started: then it is what the run wrote from the same boxes and settings. Its
    fingerprint is the job's own (the recipe from the run's ``params``, as every path builds
    it: :meth:`AnonymizeRecipe.from_params`), so the next attempt skips it as up to date.
    Anything not proven is redone. File times and ``since`` (the run's start, seconds since
    the epoch) are compared, so the workers' clocks and the file server's must agree (NTP).

    Args:
        view: the samples the dead run took
        params: its parameters (the job's keywords: ``output_dir``, ``label_fields``, ...)
        since: when it started

    Returns:
        ``(adopted, partial files removed)``
    """
    from datetime import timezone

    from ..core.paths import partial_target
    from .database import SampleWriter
    from .fields import DEFAULT_ERROR_FIELD, error_values
    from .labels import media_type

    recipe = AnonymizeRecipe.from_params(params)
    dataset = view._dataset
    video = media_type(view) == "video"
    output_field = params.get("output_field") or DEFAULT_OUTPUT_FIELD
    fp_field = fingerprint_field(output_field)
    has = dataset.has_frame_field if video else dataset.has_field
    if not all(dataset.has_field(f) for f in (output_field, fp_field)) or not all(
        has(f) for f in recipe.label_fields
    ):
        return 0, 0
    assert recipe.output_dir is not None  # from_params resolved the output_dir given
    targets = copy_targets(dataset.values("filepath"), Path(recipe.output_dir), video)
    no_error = error_values(dataset, params.get("error_field") or DEFAULT_ERROR_FIELD)(None)
    images = [] if video else list(recipe.label_fields)
    ids, paths, stored, fps, modified, *columns = view.values(
        ["id", "filepath", output_field, fp_field, "last_modified_at", *images]
    )
    adopted: dict[str, dict[str, Any]] = {}
    unrecorded: dict[Path, set[str]] = {}
    for i, (sid, path) in enumerate(zip(ids, paths)):
        target = targets[path]
        if video:
            boxes: list[Any] = frame_boxes(view, sid, recipe)
        else:
            boxes = recipe.boxes([column[i] for column in columns])
        fp = recipe.fingerprint(boxes, target)
        if stored[i] == str(target) and fps[i] == fp:
            continue  # recorded by the dead run before it died
        unrecorded.setdefault(target.parent, set()).add(target.name)
        changed = (
            modified[i] is not None and modified[i].replace(tzinfo=timezone.utc).timestamp() > since
        )
        try:
            written = os.stat(target).st_mtime
            fresh = written >= since and written >= os.path.getmtime(path)
        except OSError:
            continue
        if fresh and not changed:
            adopted[sid] = {output_field: str(target), fp_field: fp, **no_error}
    with SampleWriter(view) as writer:
        for sid, values in adopted.items():
            writer.write(sid, values)

    removed = 0
    for folder, names in unrecorded.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if partial_target(entry.name) in names:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return len(adopted), removed
