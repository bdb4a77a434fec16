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

import numpy as np

from .. import engine, videos
from ..core.boxes import Detection
from ..core.images import LoadedImage
from ..detectors.tracking import TrackSettings
from . import schema
from .report import JobReport, Progress, notify_progress

#: Audit every Nth frame of a copy by default (a face on screen for a third of a second at
#: 30 fps is still seen).
AUDIT_EVERY = 10


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
    schema.declare_frame_detections_field(dataset, label_field)
    errors = schema.error_values(dataset, error_field)
    with schema.SampleWriter(sample_collection) as writer:
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
            labels = {
                i + 1: schema.to_fo_frame_detections(tracked)
                for i, tracked in enumerate(result.frames)
            }
            with schema.database_guard(schema.DATABASE_TIMEOUT_S):
                sample_collection.select(sid).set_values(
                    f"frames.{label_field}", {sid: labels}, key_field="id"
                )
            writer.write(sid, errors(None))
            report.processed += 1
            report.boxes_per_class.update(result.boxes_per_class())
            notify_progress(progress, n + 1, len(todo), "detected")
    schema.record_detections(
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


def _frame_boxes(
    sample_collection, sid: str, recipe: schema.AnonymizeRecipe
) -> list[list[Detection]]:
    """One list of boxes per frame (frame 1 first) from the recipe's frame label fields."""
    return _frame_labels(sample_collection, sid, recipe)[0]


def _frame_labels(
    sample_collection, sid: str, recipe: schema.AnonymizeRecipe
) -> tuple[list[list[Detection]], dict[str, int]]:
    """:func:`_frame_boxes`, and the tracks per class among those boxes (a face on screen for
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


def anonymize_videos(
    sample_collection,
    recipe: schema.AnonymizeRecipe,
    output_field: str,
    overwrite: bool,
    error_field: str,
    progress: Progress | None,
    targets: dict[str, Path] | None = None,
) -> JobReport:
    """``anonymize_images`` on videos: an MP4 copy per video, its frames' boxes obscured, the
    audio kept unless the recipe leaves it out. ``targets``: each source's copy
    (``anonymize.copy_targets``; computed here when not given)."""
    from .anonymize import copy_is_current, copy_targets

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
        targets = copy_targets(dataset.values("filepath"), out_dir, video=True)
    fp_field = schema.fingerprint_field(output_field)
    schema.declare_copy_fields(dataset, output_field)
    errors = schema.error_values(dataset, error_field)
    ids, paths, copies, fps = sample_collection.values(["id", "filepath", output_field, fp_field])
    report = JobReport("anonymize", samples=len(ids))
    _, _, options = engine.prepare(settings=recipe.settings)
    schema.record_copies(dataset, output_field, "fiftyone-anonymizer anonymize_images", recipe)
    with schema.SampleWriter(sample_collection) as writer:
        for n, (sid, path) in enumerate(zip(ids, paths)):
            boxes, tracks = _frame_labels(sample_collection, sid, recipe)
            target = targets[path]
            fp = recipe.fingerprint(boxes, target)
            if not overwrite and copy_is_current(copies[n], target, path, fps[n], fp):
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


def audit_videos(
    sample_collection,
    recipes: dict[str, schema.AnonymizeRecipe],
    output_field: str,
    residual_field: str,
    tag: str,
    detector: Any,
    min_covered: float,
    every: int,
    progress: Progress | None,
) -> dict[str, Any]:
    """The audit on video copies: every ``every``-th frame searched; residuals stored per frame
    (``frames.<residual_field>``), samples with one tagged. Returns the counts."""
    from ..blur import obscured_region
    from ..core.video import iter_frames
    from .audit import possible_field, residual_labels, split_tiers
    from .audit_tiers import LIKELY, CropOpinion, needs_review, tier_residuals

    config, built, options = engine.prepare(detector)
    dataset = sample_collection._dataset
    schema.declare_frame_detections_field(dataset, residual_field, schema.RESIDUALS)
    schema.declare_frame_detections_field(
        dataset, possible_field(residual_field), schema.POSSIBLE_RESIDUALS
    )
    fp_field = schema.fingerprint_field(output_field)
    ids, copies, fps = sample_collection.values(["id", output_field, fp_field])
    counts: dict[str, Any] = {
        "audited": [],
        "flagged": [],
        "likely_per_class": {},
        "possible_per_class": {},
        "failed": {},
    }
    second = CropOpinion(device=getattr(config, "device", "auto"))
    for n, (sid, copy, fp) in enumerate(zip(ids, copies, fps)):
        if not copy or not Path(copy).is_file():
            continue
        own = recipes.get(schema.recipe_id_of(fp)) or recipes[""]
        boxes = _frame_boxes(sample_collection, sid, own)
        sampled = (
            engine.Item(frame, image=LoadedImage(frame.rgb, "", copy))
            for frame in iter_frames(copy)
            if frame.index % every == 0
        )
        found_frames: dict[int, Any] = {}
        possible_frames: dict[int, Any] = {}
        likely = False
        try:
            for result in engine.run(sampled, engine.Steps(detector=built), options):
                frame = result.item.key
                height, width = frame.rgb.shape[:2]
                used = boxes[frame.index] if frame.index < len(boxes) else []
                mask = np.asarray(obscured_region(height, width, used, own.settings), bool)
                found = [d for d in result.detections if not own.classes or d.label in own.classes]
                left = tier_residuals(found, mask, second.bind(frame.rgb), min_covered=min_covered)
                if left:
                    sure, maybe = split_tiers(left)
                    found_frames[frame.index + 1] = residual_labels(sure)
                    possible_frames[frame.index + 1] = residual_labels(maybe)
                    likely = likely or needs_review(left)
                    for r in left:
                        key = "likely_per_class" if r.tier == LIKELY else "possible_per_class"
                        counts[key][r.detection.label] = counts[key].get(r.detection.label, 0) + 1
        except Exception as exc:
            counts["failed"][copy] = engine.failure_reason(exc)
            continue
        counts["audited"].append(sid)
        for name, frames in (
            (residual_field, found_frames),
            (possible_field(residual_field), possible_frames),
        ):
            # every audited frame gets its value (an empty one clears an earlier audit's)
            cleared = {i + 1: residual_labels([]) for i in range(0, len(boxes), every)}
            sample_collection.select(sid).set_values(
                f"frames.{name}", {sid: {**cleared, **frames}}, key_field="id"
            )
        if likely:
            counts["flagged"].append(sid)
        notify_progress(progress, n + 1, len(ids), "audited")
    flagged = counts["flagged"]
    if flagged:
        sample_collection.select(flagged).tag_samples(tag)
    clear = [sid for sid in counts["audited"] if sid not in set(flagged)]
    if clear:
        sample_collection.select(clear).untag_samples(tag)
    counts["detector"] = schema.detection_provenance(config, built)
    return counts
