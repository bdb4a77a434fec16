"""The processing core: every job's images flow through here, decoded, detected, obscured, written.

An :class:`Item` is one image: a file to decode (or pixels already decoded, e.g. a video frame),
optionally the boxes already known for it, and optionally where its anonymized copy goes.
:class:`Steps` say what happens to every item: detect (with a detector), obscure (with blur
settings), write (when the item has a target) or hand the pixels back (``keep_pixels``).

The stages run side by side in bounded thread pools. Decoding and encoding (Pillow), inference
(onnxruntime) and the blur (TensorFlow) release the GIL, so while the model works on one batch
the next is being decoded and the previous one obscured and written. Results come back in input
order, one per item; an item that fails at any stage comes back with the stage and the reason,
and the others go on. A batch whose detection fails is retried item by item, so one bad image
does not take its neighbours down. Items are pulled lazily, so a folder or view of any size
holds only a window of images in memory.

Every job is a thin adapter over :func:`run`: the FiftyOne jobs (``jobs/``) make items from a
view and write the results into fields, the command line makes them from a folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .core.boxes import Detection
from .core.images import (
    DEFAULT_JPEG_QUALITY,
    LARGE_PIXELS,
    ImageReadError,
    LargeImage,
    LoadedImage,
    copy_format,
    encode_image,
    image_size,
    load_image,
    load_large,
    save_image_atomic,
    write_bytes_atomic,
)
from .detectors.onnx_runtime import THREADS_ENV, set_session_threads

#: The stages, as named in results and error messages.
READ, DETECT, OBSCURE, WRITE = "read", "detect", "anonymize", "write"

#: Write errors that every later item would meet too: the run stops instead of failing them all.
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class FatalError(RuntimeError):
    """The run stopped early: a condition every remaining item would fail on (no space left,
    a read-only output). Items finished before it came back as results."""


@dataclass(frozen=True)
class Item:
    """One image through the engine.

    Args:
        key: the caller's handle, handed back in the result (a sample id, a path, a frame)
        source: the file to decode (None when ``image`` is given)
        image: pixels already decoded (e.g. a video frame)
        boxes: boxes known beforehand (labels to obscure); obscured together with any found
        target: where the anonymized copy is written; None writes nothing
        sidecar: where a detections file is written beside the copy (see ``Steps.sidecar``)
    """

    key: Any
    source: str | os.PathLike | None = None
    image: LoadedImage | None = None
    boxes: Sequence[Detection] | None = None
    target: Path | None = None
    sidecar: Path | None = None


@dataclass(frozen=True)
class Steps:
    """What the engine does to every item.

    Args:
        detector: finds boxes (``.detect(list of RGB arrays)``); None: use the items' boxes
        settings: ``blur.BlurSettings`` to obscure with; None: nothing is obscured or written
        jpeg_quality: quality of JPEG (and WebP) copies
        keep_pixels: hand the obscured pixels back in the result (video frames go to an
            encoder) instead of, or besides, writing a file
        sidecar: ``(boxes, width, height) -> bytes`` for each item's ``sidecar`` file
    """

    detector: Any = None
    settings: Any = None
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    keep_pixels: bool = False
    sidecar: Callable[[Sequence[Detection], int, int], bytes] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")


@dataclass
class Result:
    """What happened to one item. ``error`` is None on success; ``stage`` says where it failed.

    ``detections`` are the boxes found when a detector ran, else the item's own boxes;
    ``obscured`` are the boxes actually obscured (found and known together).
    """

    item: Item
    detections: list[Detection] = field(default_factory=list)
    obscured: list[Detection] = field(default_factory=list)
    width: int = 0
    height: int = 0
    error: str | None = None
    stage: str | None = None
    pixels: np.ndarray | None = None
    fatal: bool = False  # the error stops the run (see FATAL_ERRNOS)

    @property
    def ok(self) -> bool:
        return self.error is None


def failure_reason(exc: BaseException) -> str:
    """One line for a sample's error field: the read error's own reason, else type and message."""
    if isinstance(exc, ImageReadError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------
# Concurrency settings


@dataclass(frozen=True)
class EngineOptions:
    """Concurrency settings. See :func:`default_options` for values tuned per device.

    Args:
        batch_size: images per detector call
        io_workers: threads decoding, and (separately) threads obscuring, encoding and writing
        detect_workers: concurrent detector calls (onnxruntime sessions are thread-safe)
        window: batches in flight (bounds memory); 0: enough to keep every thread busy
        max_pixels: image pixels in flight at most (bounds memory whatever the sizes); an
            image larger than this runs alone
    """

    batch_size: int = 4
    io_workers: int = 2
    detect_workers: int = 2
    window: int = 0
    max_pixels: int = 120_000_000

    def __post_init__(self) -> None:
        for name in ("batch_size", "io_workers", "detect_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @property
    def batches_in_flight(self) -> int:
        """Enough images in flight for every thread of every stage to have one, plus a spare
        batch per detector call so the model never waits for the decoders."""
        size = self.batch_size
        return self.window or max(
            self.detect_workers + 2,
            -(-(2 * self.io_workers + 2 * self.detect_workers * size) // size),
        )


def available_cpus() -> int:
    """The cores this process may use (a worker pinned with taskset or limited by a container
    gets its share, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_options(
    device: str = "cpu", cpus: int | None = None, **overrides: Any
) -> EngineOptions:
    """Options tuned by ``scripts/bench_e2e.py``: on CPU, one image per detector call on each
    core (single-threaded onnxruntime, see :func:`intra_op_threads`), and as many
    decode/encode threads; on a GPU, batches of 8 and one detector call at a time.
    ``overrides`` that are None are ignored."""
    cpus = cpus or available_cpus()
    if device not in ("cpu", "auto"):
        base = EngineOptions(batch_size=8, io_workers=max(2, cpus // 2), detect_workers=1)
    else:
        base = EngineOptions(
            batch_size=1, io_workers=max(1, min(cpus, 8)), detect_workers=max(1, min(cpus, 8))
        )
    return replace(
        base,
        **{
            k: v
            for k, v in overrides.items()
            if v is not None and k in {f.name for f in fields(EngineOptions)}
        },
    )


def intra_op_threads(options: EngineOptions, cpus: int | None = None) -> int:
    """onnxruntime threads per call: the cores divided among the concurrent calls. One thread
    per call avoids onnxruntime's spinning thread pool, which would starve the decoders."""
    cpus = cpus or available_cpus()
    return max(1, cpus // options.detect_workers)


def configure_threads(
    options: EngineOptions, threads: int | None = None, device: str = "auto"
) -> None:
    """Thread counts for onnxruntime (detectors) and TensorFlow (blur), set before either
    starts: an explicit ``threads`` wins over the environment, which wins over our tuned
    default. The engine already runs one image per core, so each library call gets a share of
    the cores rather than all of them (oversubscription slows everything)."""
    per_call = threads or intra_op_threads(options)
    if threads is not None:
        set_session_threads(threads)
    elif os.environ.get(THREADS_ENV):
        set_session_threads(int(os.environ[THREADS_ENV]))
    elif device != "cuda":
        set_session_threads(per_call)
    else:
        set_session_threads(None)  # onnxruntime's own default on a GPU
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(per_call))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def uses_gpu(detector: Any) -> bool:
    """Whether any backend's onnxruntime session runs on CUDA."""
    backends = getattr(detector, "backends", [detector])
    return any("CUDA" in str(getattr(b, "provider", "")) for b in backends)


def prepare(
    detector: Any = None, settings: Any = None, threads: int | None = None, **overrides: Any
) -> tuple[Any, Any, EngineOptions]:
    """Everything a job needs before :func:`run`: the detector built and the options tuned.

    With ``settings``, TensorFlow (the blur) starts loading in a thread first, so its seconds
    pass while the models load.

    Args:
        detector: a ``detectors.DetectorConfig`` (built, with threads configured first), a
            ready detector (``.detect``), or None for jobs that detect nothing
        settings: the blur settings the job will use, if any
        threads: onnxruntime threads per detector call (default: the cores shared out)
        **overrides: :class:`EngineOptions` fields to set (None values are ignored)

    Returns:
        ``(config or None, detector or None, options)``
    """
    from .detectors import DetectorConfig

    if settings is not None:
        threading.Thread(target=warm_up_blur, args=(settings,), daemon=True).start()
    if not isinstance(detector, DetectorConfig):
        return None, detector, default_options("cpu", **overrides)
    device = "cpu" if detector.device == "auto" else detector.device
    options = default_options(device, **overrides)
    configure_threads(options, threads, detector.device)
    built = detector.build()
    if detector.device == "auto" and uses_gpu(built):  # "auto" found a GPU: batch for it
        options = default_options("cuda", **overrides)
    return detector, built, options


# --------------------------------------------------------------------------------------------
# The blur's first use


_WARM_LOCK = threading.Lock()
_WARMED: set[Any] = set()


def warm_up_blur(settings: Any = None) -> None:
    """Run the blur once, alone, before the worker threads use it.

    The blur module imports TensorFlow and traces its functions on first use: seconds that
    are better spent while the models load or the first images decode (:func:`run` starts
    this in a thread), and a first use from several threads at once is not safe. Later calls
    return at once.
    """
    from . import blur

    settings = settings if settings is not None else blur.BlurSettings()
    with _WARM_LOCK:
        if settings in _WARMED:
            return
        image = np.zeros((64, 64, 3), dtype=np.uint8)
        dets = [
            Detection("face", 1.0, (0.2, 0.2, 0.4, 0.4)),
            Detection("plate", 1.0, (0.1, 0.7, 0.5, 0.2)),
        ]
        # A failure here is not reported: the real call raises it again, naming its item.
        with contextlib.suppress(Exception):
            blur.anonymize_batch([image], [dets], settings)
        _WARMED.add(settings)


# --------------------------------------------------------------------------------------------
# The stages


def _decode(item: Item) -> LoadedImage | LargeImage | BaseException:
    """The item's pixels: decoded in full, or for a large file (:data:`LARGE_PIXELS`) what the
    detectors need (the full decode waits for the obscure stage)."""
    if item.image is not None:
        return item.image
    try:
        if item.source is None:
            raise ValueError("the item has neither a source file nor pixels")
        size = image_size(item.source)
        if size is not None and size[0] * size[1] > LARGE_PIXELS:
            return load_large(item.source)
        return load_image(item.source)
    except Exception as exc:  # reported per item by the caller
        return exc


def _pixels(item: Item) -> int:
    """What an item weighs in memory while in flight, in pixels (header only, no decode)."""
    if item.image is not None:
        return int(np.prod(item.image.pixels.shape[:2]))
    size = image_size(item.source) if item.source is not None else None
    return size[0] * size[1] if size else 0


def detect_per_item(detector: Any, images: Sequence[np.ndarray]) -> list[Any]:
    """``detector.detect(images)``; when the batch fails, image by image, so that only the image
    that causes the failure fails (its exception takes its place in the result)."""
    try:
        return [list(found) for found in detector.detect(list(images))]
    except Exception:
        out: list[Any] = []
        for image in images:
            try:
                out.append(list(detector.detect([image])[0]))
            except Exception as exc:
                out.append(exc)
        return out


def _detect(detector: Any, decodes: Sequence[Future]) -> list[Any]:
    """Detections per item of one batch (or the exception for that item; None: no detector)."""
    loaded = [f.result() for f in decodes]
    good = [i for i, lo in enumerate(loaded) if not isinstance(lo, BaseException)]
    out: list[Any] = [lo if isinstance(lo, BaseException) else None for lo in loaded]
    if detector is None or not good:
        return out
    from .detectors.onnx_runtime import arena_free

    large = [i for i in good if isinstance(loaded[i], LargeImage)]
    small = [i for i in good if i not in large]
    for i, found in zip(small, detect_per_item(detector, [loaded[i].rgb for i in small])):
        out[i] = found
    for i in large:  # alone, and without keeping the networks' memory for its full decode
        # Tiled detectors read the full-resolution windows of a large image; others its copy.
        source = loaded[i] if getattr(detector, "windowed", False) else loaded[i].rgb
        with arena_free():
            out[i] = detect_per_item(detector, [source])[0]
    return out


def _finish(
    item: Item, decode: Future, detect: Future, index: int, steps: Steps, stop: threading.Event
) -> Result:
    """Obscure, encode and write one item (each only when asked for)."""
    loaded = decode.result()
    if isinstance(loaded, BaseException):
        return Result(item, error=failure_reason(loaded), stage=READ)
    if isinstance(loaded, LargeImage):
        width, height = loaded.size
    else:
        height, width = loaded.pixels.shape[:2]
    result = Result(item, width=width, height=height)
    found = detect.result()[index]
    if isinstance(found, BaseException):
        result.error, result.stage = failure_reason(found), DETECT
        return result
    known = list(item.boxes or [])
    result.detections = known if found is None else found
    result.obscured = known + (found or [])
    if steps.settings is None:
        return result
    if isinstance(loaded, LargeImage):
        return _finish_large(result, loaded, steps, stop)
    try:
        from . import blur

        warm_up_blur(steps.settings)
        pixels = np.asarray(blur.anonymize_image(loaded.pixels, result.obscured, steps.settings))
        data = None
        if item.target is not None:
            data = encode_image(pixels, copy_format(loaded), steps.jpeg_quality)
    except Exception as exc:
        result.error, result.stage = failure_reason(exc), OBSCURE
        return result
    if steps.keep_pixels:
        result.pixels = pixels
    return _write(
        result,
        lambda target: write_bytes_atomic(target, data) if data is not None else None,
        steps,
        stop,
    )


def _finish_large(
    result: Result, loaded: LargeImage, steps: Steps, stop: threading.Event
) -> Result:
    """Obscure a large image in place, window by window, and encode it straight to its file."""
    try:
        from . import blur

        _return_free_memory()  # what the detectors' large inputs left, before the full decode
        image = loaded.full()
    except Exception as exc:
        result.error, result.stage = failure_reason(exc), READ
        return result
    try:
        warm_up_blur(steps.settings)
        blur.anonymize_pil_in_place(image, result.obscured, steps.settings)
        fmt = copy_format(loaded)
    except Exception as exc:
        result.error, result.stage = failure_reason(exc), OBSCURE
        return result
    return _write(
        result,
        lambda target: save_image_atomic(image, target, fmt, steps.jpeg_quality),
        steps,
        stop,
    )


def _return_free_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise): before a large
    image's full decode, the peak is what the process holds plus that image."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _write(
    result: Result, write_copy: Callable[[Path], None], steps: Steps, stop: threading.Event
) -> Result:
    """Write the copy (with ``write_copy``) and the sidecar; a full or read-only disk is fatal."""
    item = result.item
    if stop.is_set():
        result.error, result.stage = "not written: the run stopped", WRITE
        return result
    try:
        if item.target is not None:
            write_copy(item.target)
        if item.sidecar is not None and steps.sidecar is not None:
            write_bytes_atomic(
                item.sidecar, steps.sidecar(result.detections, result.width, result.height)
            )
    except OSError as exc:
        result.error, result.stage = f"cannot write the copy: {exc}", WRITE
        result.fatal = exc.errno in FATAL_ERRNOS
        if result.fatal:
            stop.set()  # the items still in flight write nothing more
    return result


def _batches(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run(
    items: Iterable[Item], steps: Steps, options: EngineOptions | None = None
) -> Iterator[Result]:
    """Run ``items`` through the ``steps``, yielding one :class:`Result` per item in order.

    Three thread pools run side by side: decoders, detector calls (a batch each), and
    finishers (obscure, encode, write). Items are pulled lazily and at most
    ``options.batches_in_flight`` batches are in flight, so memory stays bounded on any number
    of items. Stopping the iteration cancels what has not started; writes are atomic, so
    nothing half-written is left. A write error that every later item would meet too (no
    space left, read-only file system) stops the run: its result comes back, the items after
    it are not reached (those in flight write nothing more), then :class:`FatalError` is
    raised.

    Args:
        items: the images, pulled as they are needed
        steps: what to do to each
        options: concurrency (default :func:`default_options`)
    """
    options = options or default_options()
    if steps.settings is not None:  # TensorFlow loads while the first images decode
        threading.Thread(target=warm_up_blur, args=(steps.settings,), daemon=True).start()
    batches = _batches(items, options.batch_size)
    decoders = ThreadPoolExecutor(options.io_workers, thread_name_prefix="anon-decode")
    detectors = ThreadPoolExecutor(options.detect_workers, thread_name_prefix="anon-detect")
    finishers = ThreadPoolExecutor(options.io_workers, thread_name_prefix="anon-finish")
    pending: deque[tuple[list[Future], int]] = deque()  # batches in flight, their pixels

    def submit(batch: list[Item], weight: int) -> None:
        decodes = [decoders.submit(_decode, item) for item in batch]
        found = detectors.submit(_detect, steps.detector, decodes)
        pending.append(
            (
                [
                    finishers.submit(_finish, item, decode, found, i, steps, stop)
                    for i, (item, decode) in enumerate(zip(batch, decodes))
                ],
                weight,
            )
        )

    fatal: Result | None = None
    stop = threading.Event()  # set by the first fatal write

    def oldest() -> Iterator[Result]:
        """The oldest batch's results; after a fatal one, the rest are not reached."""
        nonlocal fatal
        futures, _ = pending.popleft()
        for future in futures:
            result = future.result()
            if fatal is None:
                fatal = result if result.fatal else None
                yield result

    try:
        for batch in batches:
            weight = sum(_pixels(item) for item in batch)
            # Room for it: fewer batches than the window, and its pixels within the budget
            # (a batch larger than the whole budget runs alone).
            while pending and (
                len(pending) >= options.batches_in_flight
                or sum(w for _, w in pending) + weight > options.max_pixels
            ):
                yield from oldest()
            if fatal is not None:
                break
            submit(batch, weight)
        while pending:
            yield from oldest()
        if fatal is not None:
            raise FatalError(f"stopped: {fatal.error} (while writing {fatal.item.target})")
    finally:
        for pool in (decoders, detectors, finishers):
            pool.shutdown(wait=True, cancel_futures=True)
