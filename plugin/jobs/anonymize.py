"""The anonymize job: obscure the boxes of a view's label fields into copies of its images."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import engine
from ..core.images import DEFAULT_JPEG_QUALITY
from . import schema
from .report import JobReport, Progress, with_progress


def common_root(paths: Sequence[str]) -> Path:
    """The deepest folder holding every one of ``paths``."""
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
    root = source_root or common_root(source_paths)
    sources = {os.path.realpath(p) for p in source_paths}
    if out == root.resolve():
        return f"the output folder {out} is the source folder: copies would replace the originals"
    for path in source_paths:
        if os.path.realpath(output_path_for(path, root, out)) in sources:
            return f"the output folder {out} would overwrite source media ({path})"
    return None


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
    label_fields: str | Sequence[str] = schema.DEFAULT_LABEL_FIELD,
    classes: Sequence[str] | None = None,
    min_confidence: float | Mapping[str, float] | None = None,
    settings: Any = None,
    output_field: str = schema.DEFAULT_OUTPUT_FIELD,
    overwrite: bool = False,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    error_field: str = schema.DEFAULT_ERROR_FIELD,
    progress: Progress | None = None,
    **engine_options: Any,
) -> JobReport:
    """Write anonymized copies of the images and store their paths in ``output_field``.

    The boxes of every field in ``label_fields`` (ours, ground truth, any model's) are
    obscured, filtered by ``classes`` and ``min_confidence``. Copies mirror the source tree
    under ``output_dir``, are written atomically with no metadata, in the source's format.
    A copy that is already up to date (same boxes, same settings, newer than its source) is
    skipped unless ``overwrite``. ``output_field`` is added to the App's media fields, and the
    recipe goes into its info (the audit reads it back).

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
        **engine_options: ``engine.EngineOptions`` fields (e.g. ``io_workers``)

    Returns:
        a :class:`JobReport`
    """
    from ..blur import BlurSettings

    if isinstance(label_fields, str):
        label_fields = [label_fields]
    recipe = schema.AnonymizeRecipe(
        label_fields=tuple(label_fields), classes=tuple(classes) if classes else None,
        min_confidence=min_confidence, settings=settings or BlurSettings(),
        jpeg_quality=jpeg_quality, output_dir=str(Path(output_dir).expanduser().resolve()))
    steps = engine.Steps(settings=recipe.settings, jpeg_quality=jpeg_quality)
    dataset = sample_collection._dataset
    missing = [f for f in label_fields if not sample_collection.has_field(f)]
    if missing:
        raise ValueError(f"label field(s) not on the dataset: {missing}")
    out_dir = Path(recipe.output_dir)
    all_paths = dataset.values("filepath")
    source_root = common_root(all_paths)
    reason = check_output_dir(out_dir, all_paths, source_root)
    if reason:
        raise ValueError(reason)

    fp_field = schema.fingerprint_field(output_field)
    schema.declare_copy_fields(dataset, output_field, error_field)
    ids, paths, copies, fps, *labels = sample_collection.values(
        ["id", "filepath", output_field, fp_field, *label_fields])
    report = JobReport("anonymize", samples=len(ids))
    todo = []
    for i, (sid, path) in enumerate(zip(ids, paths)):
        boxes = recipe.boxes([per_field[i] for per_field in labels])
        fp = recipe.fingerprint(boxes)
        if not overwrite and _copy_is_current(copies[i], path, fps[i], fp):
            report.skipped += 1
            continue
        target = output_path_for(path, source_root, out_dir)
        todo.append(engine.Item((sid, path, fp), source=path, boxes=boxes, target=target))

    _, _, options = engine.prepare(settings=recipe.settings, **engine_options)
    results = engine.run(todo, steps, options)
    with schema.SampleWriter(sample_collection) as writer:
        for result in with_progress(results, len(todo), "anonymized", progress):
            sid, path, fp = result.item.key
            if not result.ok:
                writer.write(sid, {error_field: report.fail(path, result.error),
                                   output_field: None})
                continue
            writer.write(sid, {output_field: str(result.item.target), fp_field: fp,
                               error_field: None})
            report.processed += 1
            report.boxes_per_class.update(d.label for d in result.obscured)

    schema.record_copies(dataset, output_field, "fiftyone-anonymizer anonymize_images", recipe)
    report.extra.update(output_field=output_field, output_dir=str(out_dir))
    return report
