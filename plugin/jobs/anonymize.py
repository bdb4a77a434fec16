"""The anonymize job: obscure the boxes of a view's label fields into copies of its images."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import engine
from ..core.images import DEFAULT_JPEG_QUALITY
from ..core.paths import (
    common_root,
    distinct_targets,
    mirrored_path,
    output_dir_problem,
    output_dir_unwritable,
    source_folders,
)
from . import schema
from .report import JobReport, Progress, with_progress


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


def check_targets(
    sample_collection,
    output_field: str = schema.DEFAULT_OUTPUT_FIELD,
    error_field: str = schema.DEFAULT_ERROR_FIELD,
) -> dict[str, str]:
    """The problems (by field name) of the fields an anonymize run writes: the copies' paths,
    their fingerprints and the errors (``schema.check_target_fields``); empty when none."""
    return schema.check_target_fields(
        sample_collection,
        [
            (output_field, schema.COPIES, False),
            (schema.fingerprint_field(output_field), schema.FINGERPRINTS, False),
            (error_field, schema.ERRORS, False),
        ],
    )


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


@schema.guarded
def anonymize_images(
    sample_collection,
    output_dir: str | os.PathLike,
    label_fields: str | Sequence[str] = schema.DEFAULT_LABEL_FIELD,
    classes: Sequence[str] | None = None,
    min_confidence: float | Mapping[str, float] | None = None,
    settings: Any = None,
    output_field: str = schema.DEFAULT_OUTPUT_FIELD,
    overwrite: bool = False,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    error_field: str = schema.DEFAULT_ERROR_FIELD,
    progress: Progress | None = None,
    audio: bool = True,
    show_copies: bool = True,
    **engine_options: Any,
) -> JobReport:
    """Write anonymized copies of the images (or videos) and store their paths in
    ``output_field``.

    The boxes of every field in ``label_fields`` (ours, ground truth, any model's; on videos
    the frames' fields) are obscured, filtered by ``classes`` and ``min_confidence``. Copies
    mirror the source tree under ``output_dir``, are written atomically with no metadata, in
    the source's format (videos: H.264 MP4). A copy that is already up to date (same place,
    boxes and settings, newer than its source) is skipped unless ``overwrite``; a new output
    folder means new copies. ``output_field`` is added to the App's media fields (and made the
    grid's and modal's media with ``show_copies``), and the recipe goes into its info (the
    audit reads it back). Refused before anything is written: an output folder that breaks
    the rule of :mod:`core.paths`, and an ``output_field`` or ``error_field`` that exists and
    was not written by this plugin for that purpose (``filepath``, a label field).

    Example usage::

        import fiftyone as fo
        import fiftyone_anonymizer as anon

        dataset = fo.load_dataset("street-photos")
        report = anon.anonymize_images(dataset, "/data/anonymized",
                                       label_fields=["anonymizer_detections", "ground_truth"],
                                       settings=anon.BlurSettings(mode="pixelate"))
        print(report.summary())

    Args:
        sample_collection: a dataset or view
        output_dir: folder for the copies (mirrors the source tree)
        label_fields: ``fo.Detections`` fields whose boxes are obscured
        classes: labels to obscure (None: all)
        min_confidence: ignore boxes scoring below this, for every class or per class
        settings: ``BlurSettings`` (default: ``BlurSettings()``)
        output_field: field that receives each copy's path
        overwrite: redo copies that are up to date
        jpeg_quality: quality of JPEG copies
        error_field: where a failed sample's reason goes
        progress: ``progress(fraction, label)`` callback
        audio: keep the source's audio in video copies
        show_copies: make the copies the App's media in the grid and the modal, so a reviewer
            sees (and a video modal plays) the copy, not the original
        **engine_options: ``engine.EngineOptions`` fields (e.g. ``io_workers``)

    Returns:
        a :class:`JobReport`

    Raises:
        ValueError: the output folder breaks the rule of :mod:`core.paths`, cannot be written,
            or its disk is full, or a field name is refused; nothing was done
        TypeError: a keyword this job does not take
        engine.FatalError: the disk filled up or turned read-only during the run; what was
            written is recorded, a rerun redoes the rest
        schema.DatabaseLost: FiftyOne's database went away; a rerun redoes what is not current
    """
    from ..blur import BlurSettings

    if isinstance(label_fields, str):
        label_fields = [label_fields]
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
    out_dir = Path(output_dir).expanduser().resolve()
    recipe = schema.AnonymizeRecipe(
        label_fields=tuple(label_fields),
        classes=tuple(classes) if classes else None,
        min_confidence=min_confidence,
        settings=settings or BlurSettings(),
        jpeg_quality=jpeg_quality,
        output_dir=str(out_dir),
        audio=audio,
    )
    steps = engine.Steps(settings=recipe.settings, jpeg_quality=jpeg_quality)
    dataset = sample_collection._dataset
    video = schema.media_type(sample_collection) == "video"
    problems = check_targets(sample_collection, output_field, error_field)
    if problems:
        raise ValueError(next(iter(problems.values())))
    all_paths = dataset.values("filepath")
    reason = check_output_dir(out_dir, all_paths, video)
    if reason:
        raise ValueError(reason)
    targets = copy_targets(all_paths, out_dir, video)
    if video:
        from .video_jobs import anonymize_videos

        unwritable = output_dir_unwritable(out_dir)
        if unwritable:
            raise ValueError(unwritable)
        report = anonymize_videos(
            sample_collection, recipe, output_field, overwrite, error_field, progress, targets
        )
        if show_copies and report.processed + report.skipped:
            schema.show_copies(dataset, output_field)
        return report
    missing = [f for f in label_fields if not sample_collection.has_field(f)]
    if missing:
        raise ValueError(f"label field(s) not on the dataset: {missing}")

    fp_field = schema.fingerprint_field(output_field)
    schema.declare_copy_fields(dataset, output_field)
    errors = schema.error_values(dataset, error_field)
    ids, paths, copies, fps, *labels = sample_collection.values(
        ["id", "filepath", output_field, fp_field, *label_fields]
    )
    report = JobReport("anonymize", samples=len(ids))
    todo = []
    nothing_obscured = 0  # samples whose detections were all filtered away
    for i, (sid, path) in enumerate(zip(ids, paths)):
        boxes = recipe.boxes([per_field[i] for per_field in labels])
        if not boxes and any(v is not None and v.detections for v in (f[i] for f in labels)):
            nothing_obscured += 1
        target = targets[path]
        fp = recipe.fingerprint(boxes, target)
        if not overwrite and copy_is_current(copies[i], target, path, fps[i], fp):
            report.skipped += 1
            continue
        todo.append(engine.Item((sid, path, fp), source=path, boxes=boxes, target=target))

    if todo:
        unwritable = output_dir_unwritable(out_dir)
        if unwritable:
            raise ValueError(unwritable)
    _, _, options = engine.prepare(settings=recipe.settings, **engine_options)
    schema.record_copies(dataset, output_field, "fiftyone-anonymizer anonymize_images", recipe)
    results = engine.run(todo, steps, options)
    with schema.SampleWriter(sample_collection) as writer:
        for result in with_progress(results, len(todo), "anonymized", progress):
            sid, path, fp = result.item.key
            if result.error is not None:
                writer.write(
                    sid, {**errors(report.fail(path, result.error, sid)), output_field: None}
                )
                continue
            writer.write(sid, {output_field: str(result.item.target), fp_field: fp, **errors(None)})
            report.processed += 1
            report.boxes_per_class.update(d.label for d in result.obscured)

    report.extra.update(output_field=output_field, output_dir=str(out_dir))
    if show_copies and report.processed + report.skipped:
        schema.show_copies(dataset, output_field)
    if nothing_obscured:
        report.extra["warnings"] = [
            f"{nothing_obscured} sample(s) have detections but none passed the class and "
            f"confidence filters: their copies obscure nothing (share leaves them out)"
        ]
    return report
