"""The jobs on video datasets: the same detect, anonymize and audit, frame by frame.

Each video is one item of the job (its frames stream through the engine inside
``videos.process_video``); labels are frame-level ``fo.Detections`` (``frames.<field>``) whose
``index`` is the box's track and ``filled`` says the tracker added it; the copy is an H.264
MP4 with the source's size, rate, frame count and audio, stored in the same copies field as for
images, so the App's player can switch to it. The image jobs call these when the view holds
videos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import engine, videos
from ..detectors.tracking import TrackSettings
from . import copies, database, fields, labels
from .report import JobReport, Progress, notify_progress

#: Audit every Nth frame of a copy by default (a face on screen for a third of a second at
#: 30 fps is still seen).


def _frame_progress(progress: Progress | None, done_videos: int, total_videos: int, what: str):
    def on_frame(frames: int, total: int | None) -> None:
        if progress is not None and frames % 30 == 0:
            share = (frames / total) if total else 0.0
            notify_progress(progress, done_videos, total_videos, what)
            progress(
                (done_videos + min(share, 1.0)) / max(total_videos, 1),
                f"{what} {done_videos}/{total_videos} (frame {frames}"
                + (f" of {total})" if total else ")"),
            )

    return on_frame


def detect_videos(
    sample_collection,
    label_field: str,
    detector: Any,
    overwrite: bool,
    error_field: str,
    progress: Progress | None,
    track: TrackSettings | None = None,
) -> JobReport:
    """``detect_faces_and_plates`` on videos: tracked frame labels in ``frames.<label_field>``."""
    from ..detectors import DetectorConfig

    if detector is None or isinstance(detector, DetectorConfig):
        detector = videos.video_detector(detector)
    config, built, options = engine.prepare(detector)
    track = track or TrackSettings()
    if progress is not None:  # a heartbeat: loading the models can take a while
        progress(0.0, "models loaded")

    dataset = sample_collection._dataset
    report = JobReport("detect")
    ids, paths = sample_collection.values(["id", "filepath"])
    done = (
        set(sample_collection.exists(f"frames.{label_field}").values("id"))
        if dataset.has_frame_field(label_field)
        else set()
    )
    todo = [(sid, path) for sid, path in zip(ids, paths) if overwrite or sid not in done]
    report.samples, report.skipped = len(ids), len(ids) - len(todo)
    fields.declare_frame_detections_field(dataset, label_field)
    errors = fields.error_values(dataset, error_field)
    with database.SampleWriter(sample_collection) as writer:
        for n, (sid, path) in enumerate(todo):
            result = videos.process_video(
                path,
                None,
                built,
                track=track,
                options=options,
                on_frame=_frame_progress(progress, n, len(todo), "detected"),
            )
            if result.error is not None:
                writer.write(sid, errors(report.fail(path, result.error, sid)))
                continue
            frame_values = {
                i + 1: labels.to_fo_frame_detections(tracked)
                for i, tracked in enumerate(result.frames)
            }
            with database.database_guard(database.DATABASE_TIMEOUT_S):
                sample_collection.select(sid).set_values(
                    f"frames.{label_field}", {sid: frame_values}, key_field="id"
                )
            writer.write(sid, errors(None))
            report.processed += 1
            report.boxes_per_class.update(result.boxes_per_class())
            notify_progress(progress, n + 1, len(todo), "detected")
    fields.record_detections(
        dataset,
        f"frames.{label_field}",
        "fiftyone-anonymizer detect_faces_and_plates",
        config,
        built,
    )
    fld = dataset.get_field(f"frames.{label_field}")
    info = dict(fld.info or {})
    info["tracking"] = track.to_dict()
    fld.info = info
    fld.save()
    report.extra.update(
        label_field=f"frames.{label_field}",
        tracks_per_class=dict(report.boxes_per_class),
        counted="tracks",
        media="video",
    )
    return report


def anonymize_videos(
    sample_collection,
    recipe: copies.AnonymizeRecipe,
    output_field: str,
    overwrite: bool,
    error_field: str,
    progress: Progress | None,
    targets: dict[str, Path] | None = None,
) -> JobReport:
    """``anonymize_images`` on videos: an MP4 copy per video, its frames' boxes obscured, the
    audio kept unless the recipe leaves it out. ``targets``: each source's copy
    (``anonymize.copy_targets``; computed here when not given)."""
    dataset = sample_collection._dataset
    missing = [f for f in recipe.label_fields if not dataset.has_frame_field(f)]
    if missing:
        raise ValueError(
            f"frame label field(s) not on the dataset: {missing} (videos keep "
            f"their boxes per frame, in frames.<field>)"
        )
    if recipe.output_dir is None:
        raise ValueError("the recipe has no output_dir: there is nowhere to write the copies")
    out_dir = Path(recipe.output_dir)
    if targets is None:
        targets = copies.copy_targets(dataset.values("filepath"), out_dir, video=True)
    fp_field = copies.fingerprint_field(output_field)
    copies.declare_copy_fields(dataset, output_field)
    errors = fields.error_values(dataset, error_field)
    ids, paths, stored, fps = sample_collection.values(["id", "filepath", output_field, fp_field])
    report = JobReport("anonymize", samples=len(ids))
    _, _, options = engine.prepare(settings=recipe.settings)
    copies.record_copies(dataset, output_field, "fiftyone-anonymizer anonymize_images", recipe)
    with database.SampleWriter(sample_collection) as writer:
        for n, (sid, path) in enumerate(zip(ids, paths)):
            boxes, tracks = copies.frame_labels(sample_collection, sid, recipe)
            target = targets[path]
            fp = recipe.fingerprint(boxes, target)
            if not overwrite and copies.copy_is_current(stored[n], target, path, fps[n], fp):
                report.skipped += 1
                continue
            result = videos.process_video(
                path,
                target,
                settings=recipe.settings,
                boxes_per_frame=boxes,
                audio=recipe.audio,
                options=options,
                on_frame=_frame_progress(progress, n, len(ids), "anonymized"),
            )
            if result.error is not None:
                writer.write(
                    sid, {**errors(report.fail(path, result.error, sid)), output_field: None}
                )
                continue
            writer.write(sid, {output_field: str(target), fp_field: fp, **errors(None)})
            report.processed += 1
            report.boxes_per_class.update(tracks)
            notify_progress(progress, n + 1, len(ids), "anonymized")
    report.extra.update(
        output_field=output_field, output_dir=str(out_dir), counted="tracks", media="video"
    )
    return report
