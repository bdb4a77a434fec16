"""The anonymize job: obscure the boxes of a view's label fields into copies of its images."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import engine
from ..core.images import DEFAULT_JPEG_QUALITY
from ..core.paths import (
    output_dir_unwritable,
)
from . import copies, database, fields, labels
from .report import JobReport, Progress, with_progress


def check_targets(
    sample_collection,
    output_field: str = fields.DEFAULT_OUTPUT_FIELD,
    error_field: str = fields.DEFAULT_ERROR_FIELD,
) -> dict[str, str]:
    """The problems (by field name) of the fields an anonymize run writes: the copies' paths,
    their fingerprints and the errors (``fields.check_target_fields``); empty when none."""
    return fields.check_target_fields(
        sample_collection,
        [
            (output_field, fields.COPIES, False),
            (copies.fingerprint_field(output_field), fields.FINGERPRINTS, False),
            (error_field, fields.ERRORS, False),
        ],
    )


def _blur_and_engine(options: Mapping[str, Any], settings: Any) -> tuple[dict, dict]:
    """The blur settings and engine options among a job's ``**options``."""
    detector_settings, blur_settings, engine_options = database.split_options(options)
    if detector_settings:  # check_keywords let them through for no job that takes settings
        raise TypeError(f"not a setting of the copies: {sorted(detector_settings)}")
    if blur_settings and settings is not None:
        raise TypeError(
            f"anonymize_images() got settings= and blur settings ({', '.join(blur_settings)}): "
            f"put them in settings=BlurSettings(...), or leave settings out"
        )
    return blur_settings, engine_options


@database.guarded
def anonymize_images(
    sample_collection,
    output_dir: str | os.PathLike,
    label_fields: str | Sequence[str] = fields.DEFAULT_LABEL_FIELD,
    classes: Sequence[str] | None = None,
    min_confidence: float | Mapping[str, float] | None = None,
    settings: Any = None,
    output_field: str = fields.DEFAULT_OUTPUT_FIELD,
    overwrite: bool = False,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    error_field: str = fields.DEFAULT_ERROR_FIELD,
    progress: Progress | None = None,
    audio: bool = True,
    show_copies: bool = True,
    **options: Any,
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
        settings: ``BlurSettings`` (default: the one the blur settings among ``options``
            describe, ``BlurSettings.from_params``)
        output_field: field that receives each copy's path
        overwrite: redo copies that are up to date
        jpeg_quality: quality of JPEG copies
        error_field: where a failed sample's reason goes
        progress: ``progress(fraction, label)`` callback
        audio: keep the source's audio in video copies
        show_copies: make the copies the App's media in the grid and the modal, so a reviewer
            sees (and a video modal plays) the copy, not the original
        **options: blur settings by the anonymize form's names (``mode``, ``shape``,
            ``box_scale``, ``strength``, ``feather``, ``seed_kernel``) and
            ``engine.EngineOptions`` fields (e.g. ``io_workers``)

    Returns:
        a :class:`JobReport`

    Raises:
        ValueError: the output folder breaks the rule of :mod:`core.paths`, cannot be written,
            or its disk is full, or a field name is refused; nothing was done
        TypeError: a keyword this job does not take
        engine.FatalError: the disk filled up or turned read-only during the run; what was
            written is recorded, a rerun redoes the rest
        database.DatabaseLost: FiftyOne's database went away; a rerun redoes what is not current
    """
    blur_settings, engine_options = _blur_and_engine(options, settings)
    recipe = copies.AnonymizeRecipe.from_params(
        {
            "label_fields": label_fields,
            "classes": classes,
            "min_confidence": min_confidence,
            "settings": settings,
            "jpeg_quality": jpeg_quality,
            "output_dir": output_dir,
            "audio": audio,
            **blur_settings,
        }
    )
    label_fields = list(recipe.label_fields)
    out_dir = Path(str(recipe.output_dir))
    steps = engine.Steps(settings=recipe.settings, jpeg_quality=jpeg_quality)
    dataset = sample_collection._dataset
    video = labels.media_type(sample_collection) == "video"
    problems = check_targets(sample_collection, output_field, error_field)
    if problems:
        raise ValueError(next(iter(problems.values())))
    all_paths = dataset.values("filepath")
    reason = copies.check_output_dir(out_dir, all_paths, video)
    if reason:
        raise ValueError(reason)
    targets = copies.copy_targets(all_paths, out_dir, video)
    if video:
        from .video_jobs import anonymize_videos

        unwritable = output_dir_unwritable(out_dir)
        if unwritable:
            raise ValueError(unwritable)
        report = anonymize_videos(
            sample_collection, recipe, output_field, overwrite, error_field, progress, targets
        )
        if show_copies and report.processed + report.skipped:
            fields.show_copies(dataset, output_field)
        return report
    missing = [f for f in label_fields if not sample_collection.has_field(f)]
    if missing:
        raise ValueError(f"label field(s) not on the dataset: {missing}")

    copies.declare_copy_fields(dataset, output_field)
    report = JobReport("anonymize")
    todo, nothing_obscured = _copies_to_make(
        sample_collection, recipe, label_fields, output_field, targets, overwrite, report
    )
    if todo:
        unwritable = output_dir_unwritable(out_dir)
        if unwritable:
            raise ValueError(unwritable)
    _, _, run_options = engine.prepare(settings=recipe.settings, **engine_options)
    copies.record_copies(dataset, output_field, "fiftyone-anonymizer anonymize_images", recipe)
    _write_copies(
        sample_collection,
        engine.run(todo, steps, run_options),
        len(todo),
        output_field,
        error_field,
        progress,
        report,
    )

    report.extra.update(output_field=output_field, output_dir=str(out_dir))
    if show_copies and report.processed + report.skipped:
        fields.show_copies(dataset, output_field)
    if nothing_obscured:
        report.extra["warnings"] = [
            f"{nothing_obscured} sample(s) have detections but none passed the class and "
            f"confidence filters: their copies obscure nothing (share leaves them out)"
        ]
    return report


def _copies_to_make(
    sample_collection,
    recipe: copies.AnonymizeRecipe,
    label_fields: list[str],
    output_field: str,
    targets: dict[str, Path],
    overwrite: bool,
    report: JobReport,
) -> tuple[list[engine.Item], int]:
    """One engine item per sample whose copy is missing or not current (the samples counted
    in ``report.samples``, the current ones in ``report.skipped``), and how many samples have
    detections that the recipe's class and confidence filters all drop."""
    fp_field = copies.fingerprint_field(output_field)
    ids, paths, stored, fps, *columns = sample_collection.values(
        ["id", "filepath", output_field, fp_field, *label_fields]
    )
    report.samples = len(ids)
    todo = []
    nothing_obscured = 0
    for i, (sid, path) in enumerate(zip(ids, paths)):
        boxes = recipe.boxes([per_field[i] for per_field in columns])
        if not boxes and any(v is not None and v.detections for v in (f[i] for f in columns)):
            nothing_obscured += 1
        target = targets[path]
        fp = recipe.fingerprint(boxes, target)
        if not overwrite and copies.copy_is_current(stored[i], target, path, fps[i], fp):
            report.skipped += 1
            continue
        todo.append(engine.Item((sid, path, fp), source=path, boxes=boxes, target=target))
    return todo, nothing_obscured


def _write_copies(
    sample_collection,
    results: Any,
    total: int,
    output_field: str,
    error_field: str,
    progress: Progress | None,
    report: JobReport,
) -> None:
    """Records each finished copy (its path and fingerprint) or each failure (its reason, no
    path) as the engine hands them over."""
    fp_field = copies.fingerprint_field(output_field)
    errors = fields.error_values(sample_collection._dataset, error_field)
    with database.SampleWriter(sample_collection) as writer:
        for result in with_progress(results, total, "anonymized", progress):
            sid, path, fp = result.item.key
            if result.error is not None:
                writer.write(
                    sid, {**errors(report.fail(path, result.error, sid)), output_field: None}
                )
                continue
            writer.write(sid, {output_field: str(result.item.target), fp_field: fp, **errors(None)})
            report.processed += 1
            report.boxes_per_class.update(d.label for d in result.obscured)
