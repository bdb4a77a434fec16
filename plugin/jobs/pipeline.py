"""The view-level jobs: detect, anonymize and share, as plain functions on a sample collection.

The operators and the command line are thin layers over these. Each job keeps going when a
sample fails: the reason is stored in the sample's error field and counted in the report,
and no copy is written for it. Originals are only ever opened for reading.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.boxes import Detection, count_text
from ..core.images import (
    LoadedImage,
    copy_format,
    encode_image,
    load_image,
    write_bytes_atomic,
)
from ..engine import failure_reason

DEFAULT_LABEL_FIELD = "anonymizer_detections"
DEFAULT_OUTPUT_FIELD = "anonymized_filepath"
DEFAULT_ERROR_FIELD = "anonymizer_error"
DEFAULT_JPEG_QUALITY = 95
_SAVE_EVERY = 32  # samples per database write: a killed job loses at most this much work

Progress = Callable[[float, str], None]


@dataclass
class JobReport:
    """What a job did, for the operator's output, the command line and Python callers."""

    job: str
    samples: int = 0
    processed: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # filepath -> reason
    boxes_per_class: Counter = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "samples": self.samples,
            "processed": self.processed,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "failures": [{"filepath": k, "reason": v} for k, v in self.failed.items()],
            "boxes_per_class": dict(self.boxes_per_class),
            **self.extra,
        }

    def summary(self) -> str:
        return (f"{self.job}: {self.processed} processed, {self.skipped} skipped, "
                f"{len(self.failed)} failed; {count_text(self.boxes_per_class)}")


def notify_progress(progress: Progress | None, done: int, total: int, what: str) -> None:
    if progress is not None:
        progress(done / total if total else 1.0, f"{what} {done}/{total}")


def prefetch(items: Iterable[Any], load: Callable[[Any], Any], workers: int = 2,
             depth: int = 8) -> Iterator[tuple[Any, Any]]:
    """Yield ``(item, load(item) or the exception it raised)`` in order, loading ahead in threads.

    Decoding JPEGs releases the GIL, so reading the next images overlaps with model inference.
    """

    def safe(item):
        try:
            return load(item)
        except Exception as exc:  # handed to the caller, who records it per sample
            return exc

    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(safe, it) for it in items[:depth]]
        for i, item in enumerate(items):
            if i + depth < len(items):
                futures.append(pool.submit(safe, items[i + depth]))
            yield item, futures[i].result()
            futures[i] = None  # free the decoded image


def batched(iterator: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in iterator:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _per_item_on_failure(batch_fn: Callable[..., list], *columns: list) -> list:
    """``batch_fn(*columns)``; when the batch fails, run item by item so that only the item
    that causes the failure fails (its exception takes its place in the result)."""
    try:
        return list(batch_fn(*columns))
    except Exception:
        out: list = []
        for row in zip(*columns):
            try:
                out.append(batch_fn(*([value] for value in row))[0])
            except Exception as exc:
                out.append(exc)
        return out


# --------------------------------------------------------------------------------------------
# Conversions between our boxes and FiftyOne labels


def to_fo_detections(detections: Sequence[Detection]):
    import fiftyone as fo

    return fo.Detections(detections=[
        fo.Detection(label=d.label, confidence=float(d.score), bounding_box=list(d.box))
        for d in detections
    ])


def from_fo_detections(labels, classes: Sequence[str] | None = None,
                       min_confidence: float | dict[str, float] | None = None) -> list[Detection]:
    """Our boxes from an ``fo.Detections`` (or None), filtered by class and confidence.

    A label without a confidence (ground truth, hand-drawn fixes) always passes the
    confidence filter: someone decided it must be obscured.
    """
    if labels is None:
        return []
    out = []
    for det in labels.detections:
        if classes and det.label not in classes:
            continue
        conf = det.confidence
        floor = min_confidence.get(det.label) if isinstance(min_confidence, dict) else min_confidence
        if conf is not None and floor is not None and conf < floor:
            continue
        if det.bounding_box is None:
            continue
        out.append(Detection(det.label or "", 1.0 if conf is None else float(conf),
                             tuple(float(v) for v in det.bounding_box)))
    return out


def record_field_provenance(dataset, field_name: str, description: str, info: dict) -> None:
    """Describe a field the FiftyOne way (field description and info), visible in the App."""
    fld = dataset.get_field(field_name)
    if fld is None:
        return
    fld.description = description
    fld.info = json.loads(json.dumps(info, default=str))
    fld.save()


def _ensure_string_field(dataset, name: str) -> None:
    import fiftyone as fo

    if not dataset.has_field(name):
        dataset.add_sample_field(name, fo.StringField)


def _write_values(collection, field_name: str, values: dict[str, Any]) -> None:
    if values:
        collection.set_values(field_name, values, key_field="id")


# --------------------------------------------------------------------------------------------
# Detect


def detect_faces_and_plates(
    sample_collection,
    label_field: str = DEFAULT_LABEL_FIELD,
    faces: str | None = "centerface",
    plates: str | None = "yolov8-plates",
    thresholds: dict[str, float] | None = None,
    multiscale: bool | None = None,
    overwrite: bool = False,
    batch_size: int = 4,
    error_field: str = DEFAULT_ERROR_FIELD,
    detector=None,
    progress: Progress | None = None,
) -> JobReport:
    """Run the face and plate detectors and store ``fo.Detections`` in ``label_field``.

    Samples that already have ``label_field`` are skipped unless ``overwrite``. A sample
    whose image cannot be read gets the reason in ``error_field`` and no labels.
    """
    import fiftyone as fo

    from .. import detectors as det_mod

    if detector is None:
        detector = det_mod.build_detector(
            faces=faces, plates=plates, thresholds=thresholds, multiscale=multiscale)
    dataset = sample_collection._dataset
    report = JobReport("detect")
    ids, paths = sample_collection.values(["id", "filepath"])
    has_labels = sample_collection.has_field(label_field)
    existing = sample_collection.values(label_field) if has_labels else [None] * len(ids)
    report.samples = len(ids)
    todo = []
    for sid, path, have in zip(ids, paths, existing):
        if have is not None and not overwrite:
            report.skipped += 1
        else:
            todo.append((sid, path))

    if not dataset.has_field(label_field):
        dataset.add_sample_field(label_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    _ensure_string_field(dataset, error_field)

    done = 0
    pending_labels: dict[str, Any] = {}
    pending_errors: dict[str, Any] = {}
    stream = prefetch(todo, lambda item: load_image(item[1]).rgb)
    for batch in batched(stream, max(1, batch_size)):
        good = [(item, img) for item, img in batch if not isinstance(img, BaseException)]
        for (sid, path), img in batch:
            if isinstance(img, BaseException):
                report.failed[path] = failure_reason(img)
                pending_errors[sid] = f"detect: {failure_reason(img)}"
        if good:
            results = _per_item_on_failure(detector.detect, [img for _, img in good])
            for i, ((sid, path), _) in enumerate(good):
                if isinstance(results[i], BaseException):
                    report.failed[path] = failure_reason(results[i])
                    pending_errors[sid] = f"detect: {failure_reason(results[i])}"
                    continue
                pending_labels[sid] = to_fo_detections(results[i])
                pending_errors[sid] = None
                report.processed += 1
                report.boxes_per_class.update(d.label for d in results[i])
        done += len(batch)
        if len(pending_errors) >= _SAVE_EVERY:
            _write_values(sample_collection, label_field, pending_labels)
            _write_values(sample_collection, error_field, pending_errors)
            pending_labels, pending_errors = {}, {}
        notify_progress(progress, done, len(todo), "detected")
    _write_values(sample_collection, label_field, pending_labels)
    _write_values(sample_collection, error_field, pending_errors)

    provenance = det_mod.describe(detector)
    record_field_provenance(
        dataset, label_field,
        "Faces and licence plates found by fiftyone-anonymizer",
        {"produced_by": "fiftyone-anonymizer detect_faces_and_plates", **provenance},
    )
    report.extra["label_field"] = label_field
    return report


# --------------------------------------------------------------------------------------------
# Anonymize


def _common_root(paths: Sequence[str]) -> Path:
    dirs = {os.path.dirname(os.path.abspath(p)) for p in paths}
    return Path(os.path.commonpath(list(dirs))) if dirs else Path("/")


def output_path_for(source: str, source_root: Path, output_dir: Path) -> Path:
    """Mirror ``source`` under ``output_dir`` relative to ``source_root`` (no name collisions)."""
    rel = os.path.relpath(os.path.abspath(source), source_root)
    if rel.startswith(".."):
        rel = os.path.abspath(source).lstrip(os.sep)
    return output_dir / rel


def check_output_dir(output_dir: str | os.PathLike, source_paths: Sequence[str],
                     source_root: Path | None = None) -> str | None:
    """The reason ``output_dir`` is unsafe (a copy would replace an original), or None."""
    out = Path(output_dir).expanduser().resolve()
    root = source_root or _common_root(source_paths)
    sources = {os.path.realpath(p) for p in source_paths}
    if out == root.resolve():
        return f"the output folder {out} is the source folder: copies would replace the originals"
    for path in source_paths:
        if os.path.realpath(output_path_for(path, root, out)) in sources:
            return f"the output folder {out} would overwrite source media ({path})"
    return None


def fingerprint_field(output_field: str) -> str:
    """The field holding each copy's fingerprint beside ``output_field`` (the copy's path)."""
    return f"{output_field}_fingerprint"


def copy_fingerprint(detections: Sequence[Detection], settings_dict: dict, quality: int) -> str:
    payload = json.dumps(
        {"boxes": [[d.label, round(d.score, 4), [round(v, 6) for v in d.box]] for d in detections],
         "settings": settings_dict, "quality": quality},
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def _copy_is_current(copy_path: str | None, source: str, stored_fp: str | None, fp: str) -> bool:
    if not copy_path or stored_fp != fp or not os.path.isfile(copy_path):
        return False
    try:
        return os.path.getmtime(copy_path) >= os.path.getmtime(source)
    except OSError:
        return False


def anonymize_images(
    sample_collection,
    output_dir: str | os.PathLike,
    label_fields: str | Sequence[str] = DEFAULT_LABEL_FIELD,
    classes: Sequence[str] | None = None,
    min_confidence: float | dict[str, float] | None = None,
    settings=None,
    output_field: str = DEFAULT_OUTPUT_FIELD,
    overwrite: bool = False,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    batch_size: int = 8,
    error_field: str = DEFAULT_ERROR_FIELD,
    progress: Progress | None = None,
) -> JobReport:
    """Write anonymized copies of the images and store their paths in ``output_field``.

    The boxes of every field in ``label_fields`` (ours, ground truth, any model's) are
    obscured, filtered by ``classes`` and ``min_confidence``. Copies mirror the source tree
    under ``output_dir``, are written atomically with no metadata, in the source's format.
    A copy that is already up to date (same boxes, same settings, newer than its source) is
    skipped unless ``overwrite``. ``output_field`` is added to the App's media fields.
    """
    from .. import blur

    settings = settings or blur.BlurSettings()
    if isinstance(label_fields, str):
        label_fields = [label_fields]
    dataset = sample_collection._dataset
    missing = [f for f in label_fields if not sample_collection.has_field(f)]
    if missing:
        raise ValueError(f"label field(s) not on the dataset: {missing}")
    output_dir = Path(output_dir).expanduser().resolve()
    fp_field = fingerprint_field(output_field)
    all_paths = dataset.values("filepath")
    source_root = _common_root(all_paths)
    reason = check_output_dir(output_dir, all_paths, source_root)
    if reason:
        raise ValueError(reason)

    for name in (output_field, fp_field, error_field):
        _ensure_string_field(dataset, name)
    ids, paths, copies, fps, *labels = sample_collection.values(
        ["id", "filepath", output_field, fp_field, *label_fields])
    settings_dict = settings.to_dict()
    report = JobReport("anonymize", samples=len(ids))

    todo = []
    for i, (sid, path) in enumerate(zip(ids, paths)):
        dets = [d for per_field in labels for d in from_fo_detections(per_field[i], classes, min_confidence)]
        fp = copy_fingerprint(dets, settings_dict, jpeg_quality)
        if not overwrite and _copy_is_current(copies[i], path, fps[i], fp):
            report.skipped += 1
            continue
        todo.append((sid, path, dets, fp))

    def load(item) -> LoadedImage:
        return load_image(item[1])

    def encode_and_write(args) -> None:
        pixels, loaded, target = args
        write_bytes_atomic(target, encode_image(pixels, copy_format(loaded), jpeg_quality))

    pending: dict[str, dict[str, Any]] = {output_field: {}, fp_field: {}, error_field: {}}

    def flush() -> None:
        for name, values in pending.items():
            _write_values(sample_collection, name, values)
            values.clear()

    done = 0
    with ThreadPoolExecutor(max_workers=2) as writer:
        for batch in batched(prefetch(todo, load), max(1, batch_size)):
            good = []
            for item, loaded in batch:
                sid, path, dets, fp = item
                if isinstance(loaded, BaseException):
                    report.failed[path] = failure_reason(loaded)
                    pending[error_field][sid] = f"anonymize: {failure_reason(loaded)}"
                    pending[output_field][sid] = None
                else:
                    good.append((item, loaded))
            outputs = _per_item_on_failure(
                lambda imgs, dets: blur.anonymize_batch(imgs, dets, settings),
                [lo.pixels for _, lo in good], [it[2] for it, _ in good])
            writes = []
            for ((sid, path, dets, fp), loaded), pixels in zip(good, outputs):
                target = output_path_for(path, source_root, output_dir)
                if isinstance(pixels, BaseException):
                    writes.append(((sid, path, dets, fp, target), None, pixels))
                    continue
                writes.append(((sid, path, dets, fp, target),
                               writer.submit(encode_and_write, (pixels, loaded, target)), None))
            for (sid, path, dets, fp, target), future, error in writes:
                try:
                    if error is not None:
                        raise error
                    future.result()
                except Exception as exc:
                    report.failed[path] = failure_reason(exc)
                    pending[error_field][sid] = f"anonymize: {failure_reason(exc)}"
                    pending[output_field][sid] = None
                    continue
                pending[output_field][sid] = str(target)
                pending[fp_field][sid] = fp
                pending[error_field][sid] = None
                report.processed += 1
                report.boxes_per_class.update(d.label for d in dets)
            done += len(batch)
            if len(pending[error_field]) >= _SAVE_EVERY:
                flush()
            notify_progress(progress, done, len(todo), "anonymized")
    flush()

    if output_field not in dataset.app_config.media_fields:
        dataset.app_config.media_fields = [*dataset.app_config.media_fields, output_field]
        dataset.save()
    record_field_provenance(
        dataset, output_field, "Path of the anonymized copy written by fiftyone-anonymizer",
        {"produced_by": "fiftyone-anonymizer anonymize_images", "label_fields": list(label_fields),
         "classes": list(classes) if classes else None, "min_confidence": min_confidence,
         "settings": settings_dict, "output_dir": str(output_dir), "jpeg_quality": jpeg_quality},
    )
    report.extra.update(output_field=output_field, output_dir=str(output_dir))
    return report


# --------------------------------------------------------------------------------------------
# Share


def anonymized_view(sample_collection, output_field: str = DEFAULT_OUTPUT_FIELD,
                    error_field: str = DEFAULT_ERROR_FIELD):
    """The samples whose anonymized copy was written successfully and still exists."""
    from fiftyone import ViewField as F

    if not sample_collection.has_field(output_field):
        raise ValueError(f"no field '{output_field}': run anonymize_images first")
    view = sample_collection.exists(output_field)
    if sample_collection.has_field(error_field):
        view = view.match(F(error_field) == None)  # noqa: E711 (a MongoDB expression)
    ids, copies = view.values(["id", output_field])
    present = [sid for sid, copy in zip(ids, copies) if copy and os.path.isfile(copy)]
    return view.select(present, ordered=True)


def share_anonymized(
    sample_collection,
    name: str | None = None,
    label_fields: Sequence[str] | None = None,
    export_dir: str | os.PathLike | None = None,
    dataset_type: str = "FiftyOneDataset",
    output_field: str = DEFAULT_OUTPUT_FIELD,
    error_field: str = DEFAULT_ERROR_FIELD,
    persistent: bool = True,
    overwrite: bool = False,
):
    """Clone the anonymized samples into a new dataset whose ``filepath`` is the copy.

    Only the label fields in ``label_fields`` are kept (default: every label field), and no
    field that points at an original survives. With ``export_dir`` the clone is also exported
    in a FiftyOne export format (e.g. ``"FiftyOneDataset"``, ``"COCODetectionDataset"``).
    Returns ``(dataset, report)``.
    """
    import fiftyone as fo
    import fiftyone.core.labels as fol

    view = anonymized_view(sample_collection, output_field, error_field)
    report = JobReport("share", samples=len(sample_collection), processed=len(view))
    report.skipped = report.samples - report.processed
    if name is None:
        name = f"{sample_collection._dataset.name}-anonymized"
    if fo.dataset_exists(name):
        if not overwrite:
            raise ValueError(f"a dataset named '{name}' already exists (set overwrite to replace it)")
        fo.delete_dataset(name)
    shared = view.clone(name, persistent=persistent)
    shared.set_values("filepath", shared.values(output_field))

    schema = shared.get_field_schema()
    label_schema = {k for k, v in schema.items()
                    if isinstance(v, fo.EmbeddedDocumentField) and issubclass(v.document_type, fol.Label)}
    keep = set(label_fields) if label_fields is not None else label_schema
    unknown = keep - label_schema
    if unknown:
        raise ValueError(f"label field(s) not on the dataset: {sorted(unknown)}")
    ours = {output_field, fingerprint_field(output_field), error_field}
    drop = (label_schema - keep) | {f for f in ours if f in schema}
    for fld in sorted(drop):
        shared.delete_sample_field(fld)
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
