"""The detect job: faces and plates of a view's images, stored as ``fo.Detections``."""

from __future__ import annotations

from typing import Any

from .. import engine
from . import database, fields, labels
from .report import JobReport, Progress, with_progress


def check_targets(
    sample_collection,
    label_field: str = fields.DEFAULT_LABEL_FIELD,
    error_field: str = fields.DEFAULT_ERROR_FIELD,
) -> dict[str, str]:
    """The problems (by field name) of the fields a detect run writes: the labels (on videos
    ``frames.<label_field>``) and the errors (``fields.check_target_fields``); empty when
    none. A field this plugin did not write for that purpose (ground truth) is refused."""
    video = sample_collection.media_type == "video"
    return fields.check_target_fields(
        sample_collection,
        [(label_field, fields.DETECTIONS, video), (error_field, fields.ERRORS, False)],
    )


@database.guarded
def detect_faces_and_plates(
    sample_collection,
    label_field: str = fields.DEFAULT_LABEL_FIELD,
    detector: Any = None,
    overwrite: bool = False,
    error_field: str = fields.DEFAULT_ERROR_FIELD,
    progress: Progress | None = None,
    **options: Any,
) -> JobReport:
    """Run the face and plate detectors and store ``fo.Detections`` in ``label_field``.

    Samples that already have ``label_field`` are skipped unless ``overwrite``; a
    ``label_field`` that exists and was not written by this job (ground truth) is refused
    before anything is written, as is an invalid name. A sample
    whose image cannot be read gets the reason in ``error_field`` and no labels. On videos,
    the labels are per frame (``frames.<label_field>``), linked into tracks (each box's
    ``index``) with the gaps filled (``filled=True``): see :mod:`jobs.video_jobs`. What
    produced the labels (configuration, models, sha256, versions) goes into the field's info.

    Example usage::

        import fiftyone as fo
        import fiftyone_anonymizer as anon

        dataset = fo.load_dataset("street-photos")
        anon.detect_faces_and_plates(dataset, effort="thorough", face_threshold=0.1)
        # or, the same: detector=anon.DetectorConfig(effort="thorough", face_threshold=0.1)

    Args:
        sample_collection: a dataset or view
        label_field: where the detections go
        detector: a ``DetectorConfig`` or a ready detector (default: ``DetectorConfig()`` with
            the detector settings among ``options``)
        overwrite: detect again on samples that already have ``label_field``
        error_field: where a failed sample's reason goes
        progress: ``progress(fraction, label)`` callback
        **options: ``DetectorConfig`` fields (``faces``, ``plates``, ``face_threshold``,
            ``plate_threshold``, ``effort``, ``device``, ``face_size``, ``precision``: the
            detect form's own names) and ``engine.EngineOptions`` fields (``batch_size``)

    Returns:
        a :class:`JobReport`

    Raises:
        ValueError: a field name is refused; nothing was written
        TypeError: a keyword this job does not take, or ``detector`` with detector settings
    """
    from ..detectors import DetectorConfig

    settings, _, engine_options = database.split_options(options)
    detector = database.detector_from_options(
        "detect_faces_and_plates", detector, settings, DetectorConfig()
    )
    kind = labels.media_type(sample_collection)
    problems = check_targets(sample_collection, label_field, error_field)
    if problems:
        raise ValueError(next(iter(problems.values())))
    if kind == "video":
        from .video_jobs import detect_videos

        return detect_videos(
            sample_collection, label_field, detector, overwrite, error_field, progress
        )
    config, built, run_options = engine.prepare(detector, **engine_options)
    if progress is not None:  # a heartbeat: loading the models can take a while
        progress(0.0, "models loaded")
    dataset = sample_collection._dataset
    report = JobReport("detect")
    ids, paths = sample_collection.values(["id", "filepath"])
    has_labels = sample_collection.has_field(label_field)
    existing = sample_collection.values(label_field) if has_labels else [None] * len(ids)
    report.samples = len(ids)
    todo = [
        engine.Item((sid, path), source=path)
        for sid, path, have in zip(ids, paths, existing)
        if have is None or overwrite
    ]
    report.skipped = len(ids) - len(todo)

    fields.declare_detections_field(dataset, label_field)
    errors = fields.error_values(dataset, error_field)
    results = engine.run(todo, engine.Steps(detector=built), run_options)
    with database.SampleWriter(sample_collection) as writer:
        for result in with_progress(results, len(todo), "detected", progress):
            sid, path = result.item.key
            if result.error is not None:
                writer.write(sid, errors(report.fail(path, result.error, sid)))
                continue
            writer.write(
                sid, {label_field: labels.to_fo_detections(result.detections), **errors(None)}
            )
            report.processed += 1
            report.boxes_per_class.update(d.label for d in result.detections)

    fields.record_detections(
        dataset, label_field, "fiftyone-anonymizer detect_faces_and_plates", config, built
    )
    report.extra["label_field"] = label_field
    return report
