"""Overlapped file processing: decode, detect, blur, encode and write many images at once.

Each image goes through five stages. Decoding and encoding (Pillow) and inference
(onnxruntime) release the GIL, so running them in separate thread pools keeps every core
busy: while the model works on one batch, the next batch is being decoded and the previous
one blurred, encoded and written. Results come back in input order, one per file, and a file
that fails at any stage is reported with its reason without stopping the others.

The command line (``cli.py``) is a thin layer over :func:`plan_folder` and
:func:`process_files`; both are usable from Python.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .core.boxes import Detection
from .core.images import (
    ImageReadError,
    LoadedImage,
    copy_format,
    encode_image,
    load_image,
    write_bytes_atomic,
)

DEFAULT_EXTENSIONS = ("jpg", "png")  # the original tool's default
DEFAULT_JPEG_QUALITY = 95
#: Extensions worth a note when present but not asked for.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "jpe", "png", "webp", "bmp", "tif", "tiff", "gif", "heic", "heif")


# --------------------------------------------------------------------------------------------
# Planning: which files, where their copies go


@dataclass(frozen=True)
class FileJob:
    """One image to anonymize: where it is, where its copy and detections file go."""

    source: Path
    target: Path
    detections_path: Path | None = None


@dataclass
class FolderPlan:
    """The jobs for one input folder."""

    input_dir: Path
    output_dir: Path
    jobs: list[FileJob] = field(default_factory=list)
    # Image files left out because their extension was not asked for, per extension: the
    # command line mentions them so a ".jpeg" folder is not mistaken for an anonymized one.
    unmatched: dict[str, int] = field(default_factory=dict)


class PlanError(ValueError):
    """The folders cannot be processed as asked (missing input, copies would replace originals)."""


def parse_extensions(spec: str | Iterable[str]) -> tuple[str, ...]:
    """``"jpg,PNG, .jpeg"`` -> ``("jpg", "png", "jpeg")``: lower case, no dots, no blanks."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    exts = tuple(dict.fromkeys(p.strip().lstrip(".").lower() for p in parts if p.strip().lstrip(".")))
    if not exts:
        raise PlanError(f"no image extensions in {spec!r}")
    return exts


def find_images(input_dir: Path, extensions: Sequence[str],
                unmatched: dict[str, int] | None = None) -> list[Path]:
    """Files under ``input_dir`` (recursively, symlinked folders entered once) whose extension
    matches case-insensitively, sorted (hidden files too: the original processed them).
    Image files with other extensions are counted per extension into ``unmatched``.

    The original matched case-sensitively and missed ``.JPG`` from cameras: a privacy leak.
    """
    wanted = {f".{e.lower()}" for e in extensions}
    found: list[Path] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(input_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in filenames:
            ext = os.path.splitext(name)[1].lower()
            if ext in wanted:
                found.append(Path(dirpath) / name)
            elif unmatched is not None and ext[1:] in IMAGE_EXTENSIONS:
                unmatched[ext] = unmatched.get(ext, 0) + 1
    return sorted(found)


def detections_paths(targets: Sequence[Path]) -> list[Path]:
    """The original's ``<stem>.json`` beside each copy; ``<name>.json`` (e.g. ``a.jpg.json``)
    for files whose stems collide in one folder (``a.jpg`` and ``a.png``), so none is lost."""
    stems: dict[Path, int] = {}
    for t in targets:
        stems[t.with_suffix(".json")] = stems.get(t.with_suffix(".json"), 0) + 1
    return [t.with_suffix(".json") if stems[t.with_suffix(".json")] == 1
            else t.with_name(t.name + ".json") for t in targets]


def plan_folder(input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                extensions: Sequence[str] = DEFAULT_EXTENSIONS,
                write_detections: bool = True) -> FolderPlan:
    """Mirror every matching image of ``input_dir`` under ``output_dir`` (same relative path,
    same name).

    Every matching file under ``input_dir`` is an input, also inside an output folder that
    lies within it: skipping that folder could silently leave originals there unprocessed
    or overwrite them. Raises :class:`PlanError` when any copy or detections file would land
    on an input file (so re-running into an output folder inside the input is refused until
    the earlier copies are moved away).
    """
    src = Path(input_dir).expanduser().absolute()
    out = Path(output_dir).expanduser().absolute()
    if not src.is_dir():
        raise PlanError(f"input folder not found: {src}")
    if out.exists() and not out.is_dir():
        raise PlanError(f"--image-output is a file, not a folder: {out}")
    if os.path.realpath(out) == os.path.realpath(src):
        raise PlanError(f"the output folder {out} is the input folder: copies would replace the originals")
    unmatched: dict[str, int] = {}
    sources = find_images(src, extensions, unmatched)
    targets = [out / s.relative_to(src) for s in sources]
    json_paths = detections_paths(targets) if write_detections else [None] * len(targets)
    originals = {os.path.realpath(s): s for s in sources}
    for t, j in zip(targets, json_paths):
        for written in (t, j):
            hit = originals.get(os.path.realpath(written)) if written is not None else None
            if hit is not None:
                raise PlanError(
                    f"writing {written} would replace the input file {hit} (every image under "
                    f"--input is an input; if it is an earlier copy, move the old output away "
                    f"or choose an --image-output outside the input)")
    jobs = [FileJob(s, t, j) for s, t, j in zip(sources, targets, json_paths)]
    return FolderPlan(src, out, jobs, unmatched)


# --------------------------------------------------------------------------------------------
# Outputs


def seed_detections(detections: Sequence[Detection], width: int, height: int) -> list[dict]:
    """The original tool's detections file: absolute pixel floats, ``kind`` face or plate."""
    out = []
    for d in detections:
        x0, y0, x1, y1 = d.to_pixels(width, height)
        out.append({"y_min": float(y0), "x_min": float(x0), "y_max": float(y1),
                    "x_max": float(x1), "score": float(d.score), "kind": d.label})
    return out


# --------------------------------------------------------------------------------------------
# Processing


@dataclass
class FileResult:
    """What happened to one file. ``error`` is None on success; ``stage`` says where it failed."""

    job: FileJob
    detections: list[Detection] = field(default_factory=list)
    width: int = 0
    height: int = 0
    error: str | None = None
    stage: str | None = None  # "read" | "detect" | "anonymize" | "write"

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class EngineOptions:
    """Concurrency and output settings. The defaults suit a small CPU machine (see
    :func:`default_options`); on a GPU, larger batches let the model run batched."""

    batch_size: int = 4
    io_workers: int = 2  # threads decoding, and (separately) threads blurring/encoding/writing
    detect_workers: int = 2  # concurrent detector calls (onnxruntime sessions are thread-safe)
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    window: int = 0  # batches in flight (bounds memory); 0 = enough to keep every thread busy

    def __post_init__(self) -> None:
        for name in ("batch_size", "io_workers", "detect_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")


def default_options(device: str = "cpu", cpus: int | None = None, **overrides: Any) -> EngineOptions:
    """Options tuned by ``scripts/bench_e2e.py``: on CPU, one image per detector call on each
    core (single-threaded onnxruntime, see :func:`default_intra_op_threads`), and as many
    decode/encode threads; on a GPU, batches of 8 and one detector call at a time."""
    cpus = cpus or os.cpu_count() or 1
    if device not in ("cpu", "auto"):
        base = EngineOptions(batch_size=8, io_workers=max(2, cpus // 2), detect_workers=1)
    else:
        base = EngineOptions(batch_size=1, io_workers=max(1, min(cpus, 8)),
                             detect_workers=max(1, min(cpus, 8)))
    values = {k: getattr(base, k) for k in EngineOptions.__dataclass_fields__}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return EngineOptions(**values)


def default_intra_op_threads(options: EngineOptions, cpus: int | None = None) -> int:
    """onnxruntime threads per call: the cores divided among the concurrent calls. One thread
    per call avoids onnxruntime's spinning thread pool, which would starve the decoders."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // options.detect_workers)


def failure_reason(exc: BaseException) -> str:
    """One line for a sample's error field: the read error's own reason, else type and message."""
    if isinstance(exc, ImageReadError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


def _load(job: FileJob) -> LoadedImage | BaseException:
    try:
        return load_image(job.source)
    except Exception as exc:  # reported per file by the caller
        return exc


def _detect(detector: Any, loads: Sequence[Future]) -> list[list[Detection] | BaseException]:
    """Detections per image of one batch (or the exception for that image). A batch that fails
    is retried image by image, so one bad image does not take its neighbours down with it."""
    loaded = [f.result() for f in loads]
    good = [i for i, lo in enumerate(loaded) if not isinstance(lo, BaseException)]
    out: list[Any] = [lo if isinstance(lo, BaseException) else None for lo in loaded]
    if not good:
        return out
    images = [loaded[i].rgb for i in good]
    try:
        results = detector.detect(images)
        for i, dets in zip(good, results, strict=True):
            out[i] = list(dets)
    except Exception:
        for i, image in zip(good, images):
            try:
                out[i] = list(detector.detect([image])[0])
            except Exception as exc:
                out[i] = exc
    return out


_WARM_LOCK = threading.Lock()
_WARMED: set[Any] = set()


def warm_up_blur(settings: Any = None) -> None:
    """Run the blur once, alone, before the worker threads use it.

    The blur module imports TensorFlow and traces its functions on first use: seconds that
    are better spent while the models load (the command line starts this in a thread), and
    a first use from several threads at once is not safe. Later calls return at once.
    """
    from . import blur

    settings = settings if settings is not None else blur.BlurSettings()
    with _WARM_LOCK:
        if settings in _WARMED:
            return
        image = np.zeros((64, 64, 3), dtype=np.uint8)
        dets = [Detection("face", 1.0, (0.2, 0.2, 0.4, 0.4)),
                Detection("plate", 1.0, (0.1, 0.7, 0.5, 0.2))]
        # A failure here is not reported: the real call raises it again, naming its file.
        with contextlib.suppress(Exception):
            blur.anonymize_batch([image], [dets], settings)
        _WARMED.add(settings)


def _finish(job: FileJob, load: Future, detect: Future, index: int, settings: Any,
            anonymize: Callable, jpeg_quality: int) -> FileResult:
    """Blur, encode and write one image and its detections file."""
    loaded = load.result()
    if isinstance(loaded, BaseException):
        return FileResult(job, error=failure_reason(loaded), stage="read")
    height, width = loaded.pixels.shape[:2]
    result = FileResult(job, width=width, height=height)
    dets = detect.result()[index]
    if isinstance(dets, BaseException):
        result.error, result.stage = failure_reason(dets), "detect"
        return result
    result.detections = dets
    try:
        warm_up_blur(settings)
        pixels = anonymize([loaded.pixels], [dets], settings)[0]
        data = encode_image(np.asarray(pixels), copy_format(loaded), jpeg_quality)
    except Exception as exc:
        result.error, result.stage = failure_reason(exc), "anonymize"
        return result
    try:
        write_bytes_atomic(job.target, data)
        if job.detections_path is not None:
            text = json.dumps(seed_detections(dets, width, height), indent=2)
            write_bytes_atomic(job.detections_path, text.encode())
    except OSError as exc:
        result.error, result.stage = f"cannot write the copy: {exc}", "write"
    return result


def process_files(jobs: Iterable[FileJob], detector: Any, settings: Any = None,
                  options: EngineOptions | None = None) -> Iterator[FileResult]:
    """Anonymize ``jobs`` with ``detector`` (``.detect(list of RGB arrays)``) and ``settings``
    (``blur.BlurSettings``), yielding one :class:`FileResult` per job in input order.

    Three thread pools run side by side: decoders, detector calls (a batch each), and
    finishers (blur, encode, write). At most ``options.window`` batches are in flight, so
    memory stays bounded on any number of files. Stopping the iteration cancels what has not
    started; writes are atomic, so nothing half-written is left.
    """
    from . import blur

    options = options or EngineOptions()
    settings = settings if settings is not None else blur.BlurSettings()
    jobs = list(jobs)
    size = options.batch_size
    batches = iter([jobs[i:i + size] for i in range(0, len(jobs), size)])
    # Enough images in flight for every thread of every stage to have one, plus a spare batch
    # per detector call so the model never waits for the decoders.
    window = options.window or max(
        options.detect_workers + 2,
        -(-(2 * options.io_workers + 2 * options.detect_workers * size) // size))
    decoders = ThreadPoolExecutor(options.io_workers, thread_name_prefix="anon-decode")
    detectors = ThreadPoolExecutor(options.detect_workers, thread_name_prefix="anon-detect")
    finishers = ThreadPoolExecutor(options.io_workers, thread_name_prefix="anon-write")
    pending: deque[list[Future]] = deque()

    def submit(batch: list[FileJob]) -> None:
        loads = [decoders.submit(_load, job) for job in batch]
        found = detectors.submit(_detect, detector, loads)
        pending.append([finishers.submit(_finish, job, load, found, i, settings,
                                         blur.anonymize_batch, options.jpeg_quality)
                        for i, (job, load) in enumerate(zip(batch, loads))])

    try:
        for _ in range(window):
            batch = next(batches, None)
            if batch is None:
                break
            submit(batch)
        while pending:
            for future in pending.popleft():
                yield future.result()
            batch = next(batches, None)
            if batch is not None:
                submit(batch)
    finally:
        for pool in (decoders, detectors, finishers):
            pool.shutdown(wait=True, cancel_futures=True)
