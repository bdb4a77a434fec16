"""Video anonymization on clips with known boxes: ours (per frame and with tracks + temporal
fill) against deface, measured the same way.

Clips come from ``scripts/make_video_clips.py`` (``out/video-eval/<set>/*.mp4`` + ``.json``).
Metrics per class, over every true box of every frame:

* frame recall: share of true boxes matched by a box of that frame (IoU >= 0.3, one-to-one);
* coverage: share of true boxes with >= 70 % of their pixels inside the obscured region
  (``blur.obscured_region`` of the frame's boxes, as ``fiftyone_anonymizer.metrics`` does);
* flicker: share of true boxes left uncovered in a frame while the same object is covered in
  both the previous and the next frame (the one-frame flashes per-frame detection gives);
* fps: frames per second of the whole path, decode to written file.

Ours runs the "video" detector by default: CenterFace once per frame at the frame's own size
(what deface runs; ``--detector photo``: the image defaults, an 800 px upscale plus the mirrored
view, four times the work) at ``VIDEO_THRESHOLDS``, below the photo thresholds, with the tracker
starting tracks only from photo-threshold detections. Measurements of ours:

1. box-based, offline: the detector runs once per clip on the decoded frames (cached as JSON
   under ``out/video-eval/cache`` at a low threshold and filtered up, which is exact); per frame
   at the photo thresholds vs tracked (``--sweep``: a grid of gap fill K and extension M, the
   union radius, the drop rule);
2. pixel-based, on a real anonymized copy: :func:`anonymize_clip` (the plugin's own video path,
   ``videos.process_video``: decode -> the engine's detect stage -> tracker -> the engine's
   obscure stage -> ``video.VideoWriter``; another :data:`Pipeline` can be plugged in) writes
   the copy, scored with the same pixel rule as deface's output, right
   before deface runs on the same clip (the shared CPUs' load drifts: fps compared clip by
   clip); the copy's size, rate, frame count and audio are checked against the source.

deface writes no detections, so its coverage is read off its output frames: a true box counts as
obscured when the fine detail (the image minus a Gaussian-blurred copy of itself, sigma 1.5 px)
left in the box is at most ``DETAIL_RATIO`` (0.3) of the input frame's: a box 70 % blurred keeps
about 0.3 of its detail, compression noise keeps most of it (a plain re-encode kept >= 0.87 in
99 % of the boxes), a blur removes nearly all (median 0.02). The rule is checked on every run
against our own copies, where the obscured boxes are known (agreement printed; 0.3 agreed best
of 0.2-0.6 on faces_01, 0.980), and against a plain re-encode, where nothing is obscured. deface's
writer resizes 640x360 frames to 640x368 (multiples of 16), so its frames are resized back
before scoring (reported).

Usage: ``python scripts/eval_video.py [--sets faces,street] [--sweep] [--no-deface]``;
``make eval-video`` runs it with the defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from machine import cpu_model  # scripts/machine.py
from PIL import Image, ImageFilter

from fiftyone_anonymizer import engine, metrics, videos
from fiftyone_anonymizer.blur import BlurSettings, obscured_region
from fiftyone_anonymizer.core import video
from fiftyone_anonymizer.core.boxes import FACE, PLATE, Detection
from fiftyone_anonymizer.detectors import DEFAULT_EFFORT, EFFORTS
from fiftyone_anonymizer.detectors.tracking import (
    TrackSettings,
    detections_of,
    track_video,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from bench_e2e import DEFACE_VERSION, ensure_deface  # noqa: E402

CLIPS = REPO / "out" / "video-eval"
DETAIL_SIGMA = 1.5
DETAIL_RATIO = 0.3
SWEEP_K = (0, 2, 4, 8, 16)
#: Detections are cached at this low threshold and filtered up (``above``), so thresholds and the
#: tracker's low-score continuation can be tried without running the models again.
CACHE_THRESHOLD = 0.05
SWEEP_M = (0, 2, 5, 10)
#: Detector thresholds for video: below the photo ones (detectors.DEFAULT_THRESHOLDS); the
#: tracker starts tracks only from photo-threshold detections (TrackSettings.start_scores) and
#: lets the weaker ones continue them.
VIDEO_THRESHOLDS = {FACE: 0.1, PLATE: 0.05}

#: What the lead's engine will replace: takes (source clip, destination) and returns the boxes
#: obscured in each frame of the written copy, in order.
Pipeline = Callable[[Path, Path], list[list[Detection]]]


# --------------------------------------------------------------------------------------------
# Clips and truths
# --------------------------------------------------------------------------------------------


@dataclass
class Truth:
    id: str
    detection: Detection  # relative box
    true: bool  # counted (tall enough, mostly inside the frame)


@dataclass
class Clip:
    path: Path
    width: int
    height: int
    frames: int
    truths: list[list[Truth]]  # per frame

    @classmethod
    def load(cls, path: Path) -> Clip:
        meta = json.loads(path.with_suffix(".json").read_text())
        w, h = meta["width"], meta["height"]
        truths = [
            [
                Truth(
                    b["id"],
                    Detection.from_pixels(
                        b["label"], 1.0, (b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]), w, h
                    ),
                    b["true"],
                )
                for b in boxes
            ]
            for boxes in meta["boxes"]
        ]
        return cls(path, w, h, meta["frames"], truths)

    @property
    def labels(self) -> list[str]:
        return sorted({t.detection.label for f in self.truths for t in f if t.true})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


@dataclass
class Score:
    """Counts for one label over clips; rates as properties."""

    truths: int = 0
    matched: int = 0
    covered: int = 0
    flicker: int = 0
    frames: int = 0
    seconds: float = 0.0
    boxes: int = 0  # boxes of this label obscured
    matched_boxes: int = 0
    area_sum: float = 0.0  # share of each frame obscured (all labels), summed over frames
    clip_frames: int = 0

    def add(self, other: Score) -> None:
        for name in (
            "truths",
            "matched",
            "covered",
            "flicker",
            "frames",
            "seconds",
            "boxes",
            "matched_boxes",
            "area_sum",
            "clip_frames",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def recall(self) -> float:
        return self.matched / self.truths if self.truths else 1.0

    @property
    def coverage(self) -> float:
        return self.covered / self.truths if self.truths else 1.0

    @property
    def flicker_rate(self) -> float:
        return self.flicker / self.truths if self.truths else 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else float("nan")

    @property
    def area(self) -> float:
        """Mean share of the picture obscured per frame (the price of the margins)."""
        return self.area_sum / self.clip_frames if self.clip_frames else 0.0

    @property
    def precision(self) -> float:
        return self.matched_boxes / self.boxes if self.boxes else 1.0


def flicker_count(clip: Clip, covered: list[dict[str, bool]], label: str) -> int:
    """True boxes uncovered in a frame while the same object is covered in both neighbours."""
    n = 0
    for t in range(1, clip.frames - 1):
        for truth in clip.truths[t]:
            if not truth.true or truth.detection.label != label or covered[t][truth.id]:
                continue
            if covered[t - 1].get(truth.id) and covered[t + 1].get(truth.id):
                n += 1
    return n


def score_clip(
    clip: Clip, covered: list[dict[str, bool]], area: float, boxes: list[list[Detection]] | None
) -> dict[str, Score]:
    """Per-label scores from per-frame covered flags (by truth id), the mean share of the
    picture obscured and, when known, the boxes that were obscured (for frame recall and box
    precision)."""
    out = {}
    for label in clip.labels:
        s = Score(area_sum=area * clip.frames, clip_frames=clip.frames)
        for t, truths in enumerate(clip.truths):
            counted = [x for x in truths if x.true and x.detection.label == label]
            s.truths += len(counted)
            s.covered += sum(covered[t][x.id] for x in counted)
            if boxes is not None:
                mine = [d for d in boxes[t] if d.label == label]
                every = [x.detection for x in truths if x.detection.label == label]
                m = metrics.match_detections(every, mine).get(label)
                if m is not None:
                    flags = dict(
                        zip(
                            [x.id for x in truths if x.detection.label == label],
                            m.truth_matched,
                            strict=True,
                        )
                    )
                    s.matched += sum(bool(flags[x.id]) for x in counted)
                    s.boxes += len(mine)
                    s.matched_boxes += int(m.detection_matched.sum())
        s.flicker = flicker_count(clip, covered, label)
        out[label] = s
    return out


def box_covered(
    clip: Clip, boxes: list[list[Detection]], settings: BlurSettings | None = None
) -> tuple[list[dict[str, bool]], float]:
    """Per frame, truth id -> >= 70 % of the box inside the region the boxes obscure; and the
    mean share of the picture obscured."""
    settings = settings or BlurSettings()
    out, area = [], 0.0
    for truths, dets in zip(clip.truths, boxes, strict=True):
        mask = obscured_region(clip.height, clip.width, dets, settings)
        area += float(mask.mean())
        fractions = metrics.covered_fractions([x.detection for x in truths], mask)
        out.append({x.id: bool(f >= metrics.MIN_COVERED) for x, f in zip(truths, fractions)})
    return out, area / max(1, len(boxes))


def _detail(gray: np.ndarray) -> np.ndarray:
    """Squared fine detail per pixel: the image minus its Gaussian blur."""
    img = Image.fromarray(gray)
    smooth = np.asarray(img.filter(ImageFilter.GaussianBlur(DETAIL_SIGMA)), dtype=np.float32)
    return (gray.astype(np.float32) - smooth) ** 2


def _gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


def detail_ratios(clip: Clip, output: Path) -> list[dict[str, float]]:
    """Per frame, truth id -> fine detail left in the box (output / input). Outputs of another
    size (deface: 640x368) are resized back to the clip's."""
    out = []
    frames_out = video.iter_frames(output)
    for frame_in, truths in zip(video.iter_frames(clip.path), clip.truths, strict=False):
        frame_out = next(frames_out, None)
        if frame_out is None:
            raise RuntimeError(f"{output} has fewer frames than {clip.path}")
        rgb_out = frame_out.rgb
        if rgb_out.shape[:2] != (clip.height, clip.width):
            rgb_out = np.asarray(
                Image.fromarray(rgb_out).resize((clip.width, clip.height), Image.BILINEAR)
            )
        d_in, d_out = _detail(_gray(frame_in.rgb)), _detail(_gray(rgb_out))
        ratios = {}
        for x in truths:
            x0, y0, x1, y1 = (int(round(v)) for v in x.detection.to_pixels(clip.width, clip.height))
            e_in = float(d_in[y0:y1, x0:x1].mean()) if y1 > y0 and x1 > x0 else 0.0
            e_out = float(d_out[y0:y1, x0:x1].mean()) if y1 > y0 and x1 > x0 else 0.0
            ratios[x.id] = e_out / max(e_in, 1e-6)
        out.append(ratios)
    return out


def pixel_covered(
    ratios: list[dict[str, float]], threshold: float = DETAIL_RATIO
) -> list[dict[str, bool]]:
    return [{k: v <= threshold for k, v in r.items()} for r in ratios]


# --------------------------------------------------------------------------------------------
# Ours
# --------------------------------------------------------------------------------------------


class Lazy:
    """Builds the detector on first use (cached detections need no model)."""

    def __init__(self, build: Callable[[], object]) -> None:
        self._build, self._value = build, None

    def __call__(self):
        if self._value is None:
            self._value = self._build()
        return self._value


def above(per_frame: list[list[Detection]], thresholds: dict[str, float]) -> list[list[Detection]]:
    """Detections at higher thresholds than the cache's: exactly what the detector gives at
    those thresholds (a box is only ever suppressed by a higher-scoring one)."""
    return [[d for d in f if d.score >= thresholds.get(d.label, 0.0)] for f in per_frame]


def make_detector(kind: str, plates: bool, thresholds: dict[str, float], effort: str):
    """The merged detector: "photo" = the image defaults at ``effort``; "video" = what the
    video job runs (``videos.video_detector``: CenterFace once per frame at the frame's own
    size, tiles on frames over 1920 px, the tracker making up for the misses)."""
    from fiftyone_anonymizer.detectors import DetectorConfig
    from fiftyone_anonymizer.videos import video_detector

    config = DetectorConfig(
        plates="yolov8-plates" if plates else None,
        face_threshold=thresholds[FACE],
        plate_threshold=thresholds[PLATE],
        effort=effort,
    )
    return (video_detector(config) if kind == "video" else config).build()


def detect_cached(
    clip: Clip, detector, tag: str, cache: Path
) -> tuple[list[list[Detection]], float]:
    """Per-frame detections of the decoded clip (computed once, then read from ``cache``) and
    the seconds detection took when computed."""
    cache.mkdir(parents=True, exist_ok=True)
    file = cache / f"{clip.path.stem}.{tag}.json"
    digest = sha256(clip.path)
    if file.is_file():
        data = json.loads(file.read_text())
        if data["sha256"] == digest:
            return [
                [Detection(lab, s, tuple(b)) for lab, s, *b in f] for f in data["frames"]
            ], data["seconds"]
    per_frame, seconds = [], 0.0
    for frame in video.iter_frames(clip.path):
        start = time.perf_counter()
        per_frame.append(detector().detect([frame.rgb])[0])
        seconds += time.perf_counter() - start
    file.write_text(
        json.dumps(
            {
                "sha256": digest,
                "seconds": seconds,
                "frames": [[[d.label, d.score, *d.box] for d in f] for f in per_frame],
            }
        )
    )
    return per_frame, seconds


def anonymize_clip(
    src: Path, dst: Path, detector, track: TrackSettings, blur: BlurSettings | None = None
) -> list[list[Detection]]:
    """Our path for one clip, the one every job takes (``videos.process_video``: decode, the
    engine's detect stage, tracks with temporal fill, the engine's obscure stage, the
    encoder, audio copied); returns the obscured boxes per frame."""
    result = videos.process_video(
        src, dst, detector, blur or BlurSettings(), track, options=engine.default_options("cpu")
    )
    if not result.ok:
        raise RuntimeError(f"{src}: {result.error} ({result.stage})")
    return [detections_of(tracked) for tracked in result.frames]


# --------------------------------------------------------------------------------------------
# deface
# --------------------------------------------------------------------------------------------


def run_deface(exe: Path, src: Path, dst: Path) -> float:
    """Seconds of one ``deface src -o dst`` run with its defaults (wall clock, process start
    included)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.run([str(exe), str(src), "-o", str(dst)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or not dst.is_file():
        sys.exit(f"deface failed on {src}: {proc.stderr[-2000:]}")
    return seconds


def cut_clip(src: Path, dst: Path, frames: int) -> None:
    """The first ``frames`` frames of ``src`` (for deface's start-up time)."""
    info = video.probe(src)
    with video.VideoWriter.for_source(dst, info, audio=False) as out:
        for frame in video.iter_frames(src):
            if frame.index >= frames:
                break
            out.write(frame.rgb, frame.pts)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class Totals:
    by_label: dict[str, Score] = field(default_factory=dict)

    def add(self, scores: dict[str, Score], frames: int = 0, seconds: float = 0.0) -> None:
        for label, s in scores.items():
            s.frames, s.seconds = frames, seconds
            self.by_label.setdefault(label, Score()).add(s)


def line(
    name: str,
    label: str,
    s: Score,
    with_fps: bool = True,
    extra: str = "",
    with_recall: bool = True,
) -> str:
    fps = f" fps {s.fps:.1f}" if with_fps else ""
    recall = f"{s.recall:.3f}" if with_recall else "n/a"
    return (
        f"video {label}: frame recall {recall} coverage {s.coverage:.3f} flicker "
        f"{s.flicker_rate:.4f}{fps}  [{name}; {s.truths} true boxes{extra}]"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=Path, default=CLIPS)
    parser.add_argument("--sets", default="faces,street")
    parser.add_argument("--sweep", action="store_true", help="box-based sweep of the tracker")
    parser.add_argument("--no-deface", action="store_true")
    parser.add_argument(
        "--no-pixel",
        action="store_true",
        help="write no copies, ours or deface's (box-based numbers only)",
    )
    parser.add_argument("--track", default="{}", help="TrackSettings overrides as JSON")
    parser.add_argument(
        "--detector",
        choices=("video", "photo"),
        default="video",
        help="video: one pass at the frame size; photo: the image defaults",
    )
    parser.add_argument(
        "--effort", choices=EFFORTS, default=DEFAULT_EFFORT, help="the detectors' effort level"
    )
    parser.add_argument(
        "--thresholds",
        default="{}",
        help='video score thresholds per class as JSON, e.g. {"face": 0.1}',
    )
    args = parser.parse_args()
    # The thread counts every job sets before its models load (``engine.prepare``): one
    # onnxruntime and one TensorFlow thread per call, the engine running a call per core.
    # Without them both libraries take every core from each of the engine's threads.
    engine.configure_threads(engine.default_options("cpu"))
    track = TrackSettings.from_dict({**TrackSettings().to_dict(), **json.loads(args.track)})
    from fiftyone_anonymizer.detectors import DEFAULT_THRESHOLDS

    thresholds = {**VIDEO_THRESHOLDS, **json.loads(args.thresholds)}
    print(
        f"{cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
        f"detector {args.detector} ({args.effort}) at {thresholds}; tracker {json.dumps(track.to_dict())}",
        flush=True,
    )
    out_dir = args.clips / "runs"
    deface_exe = None if args.no_deface else ensure_deface(args.clips / "deface-venv")
    for set_name in args.sets.split(","):
        paths = sorted((args.clips / set_name).glob("*.mp4"))
        if not paths:
            sys.exit(f"no clips in {args.clips / set_name}; run scripts/make_video_clips.py")
        clips = [Clip.load(p) for p in paths]
        plates = set_name == "street"
        tag = (
            f"centerface{'+plates' if plates else ''}-{args.detector}-{args.effort}"
            f"@{CACHE_THRESHOLD}"
        )
        detector = Lazy(
            lambda plates=plates: make_detector(
                args.detector,
                plates,
                {FACE: CACHE_THRESHOLD, PLATE: CACHE_THRESHOLD},
                args.effort,
            )
        )
        print(
            f"\n== {set_name}: {len(clips)} clips, {sum(c.frames for c in clips)} frames "
            f"{clips[0].width}x{clips[0].height}, detections cached as {tag}",
            flush=True,
        )
        cached = {c.path: detect_cached(c, detector, tag, args.clips / "cache")[0] for c in clips}

        # box-based: per frame at the photo thresholds vs tracked at the video thresholds
        raw, tracked = Totals(), Totals()
        for c in clips:
            per_frame = above(cached[c.path], DEFAULT_THRESHOLDS)
            raw.add(score_clip(c, *box_covered(c, per_frame), per_frame))
            boxes = [
                detections_of(f) for f in track_video(above(cached[c.path], thresholds), track)
            ]
            tracked.add(score_clip(c, *box_covered(c, boxes), boxes))
        for label in raw.by_label:
            for name, totals in (
                ("ours per frame (photo thresholds)", raw),
                ("ours tracked + temporal fill", tracked),
            ):
                s = totals.by_label[label]
                print(
                    line(
                        f"{name}, box-based",
                        label,
                        s,
                        with_fps=False,
                        extra=f"; box precision {s.precision:.3f}, {s.area:.4f} of the "
                        "picture obscured",
                    )
                )

        if args.sweep:
            sweep(clips, cached, thresholds, track, DEFAULT_THRESHOLDS)

        if not args.no_pixel:
            pixel_runs(
                clips,
                out_dir / set_name,
                make_detector(args.detector, plates, thresholds, args.effort),
                track,
                deface_exe,
            )
    return 0


def pixel_runs(
    clips: Sequence[Clip],
    out_dir: Path,
    detector,
    track: TrackSettings,
    deface_exe: Path | None,
    pipeline: Pipeline | None = None,
) -> None:
    """Our copy and deface's of each clip, one after the other (the shared CPUs' load changes
    over minutes), both scored with the pixel rule; ours also checked against its known boxes.
    ``pipeline`` replaces :func:`anonymize_clip`."""
    # Models loaded and TensorFlow imported (the blur traced) before the clock, as deface's
    # start-up is taken out of its figure: a job overlaps both with its first frames.
    detector.detect([np.zeros((360, 640, 3), np.uint8)])
    engine.warm_up_blur(BlurSettings())
    run = pipeline or (lambda src, dst: anonymize_clip(src, dst, detector, track))
    ours, theirs = Totals(), Totals()
    agree = total = false_cover = 0
    sizes, ratios = set(), []
    startup = None
    if deface_exe is not None:
        short = out_dir / "startup.mp4"
        cut_clip(clips[0].path, short, 2)
        startup = run_deface(deface_exe, short, out_dir / "startup.deface.mp4")
    for c in clips:
        dst = out_dir / f"{c.path.stem}.ours.mp4"
        start = time.perf_counter()
        boxes = run(c.path, dst)
        seconds = time.perf_counter() - start
        pix = pixel_covered(detail_ratios(c, dst))
        ours.add(score_clip(c, pix, 0.0, boxes), c.frames, seconds)
        by_box, _ = box_covered(c, boxes)
        plain = out_dir / f"{c.path.stem}.plain.mp4"
        cut_clip(c.path, plain, c.frames)
        unblurred = pixel_covered(detail_ratios(c, plain))
        for t, truths in enumerate(c.truths):
            for x in truths:
                if x.true:
                    total += 1
                    agree += pix[t][x.id] == by_box[t][x.id]
                    false_cover += unblurred[t][x.id]
        check_copy(c, dst)
        if deface_exe is None:
            continue
        theirs_dst = out_dir / f"{c.path.stem}.deface.mp4"
        theirs_seconds = run_deface(deface_exe, c.path, theirs_dst)
        info = video.probe(theirs_dst)
        sizes.add((info.width, info.height, info.frames, info.has_audio))
        theirs.add(
            score_clip(c, pixel_covered(detail_ratios(c, theirs_dst)), 0.0, None),
            c.frames,
            theirs_seconds,
        )
        ratios.append((theirs_seconds - startup) / seconds)
        print(
            f"{c.path.stem}: ours {c.frames / seconds:.1f} fps, deface "
            f"{c.frames / theirs_seconds:.1f} fps ({c.frames / (theirs_seconds - startup):.1f} "
            f"without its start-up)",
            flush=True,
        )
    for label, s in ours.by_label.items():
        print(line("ours tracked, pixel-based on the written copy", label, s))
    print(
        f"pixel rule (detail ratio <= {DETAIL_RATIO}): agrees with the known obscured "
        f"boxes on {agree / max(total, 1):.3f} of our {total} true boxes; calls "
        f"{false_cover / max(total, 1):.4f} of them obscured in a plain re-encode",
        flush=True,
    )
    if deface_exe is None:
        return
    for label, s in theirs.by_label.items():
        steady = s.frames / max(1e-9, s.seconds - startup * len(clips))
        print(
            line(
                f"deface {DEFACE_VERSION} defaults, pixel-based",
                label,
                s,
                extra=f"; {steady:.1f} fps without its {startup:.1f} s start-up",
                with_recall=False,
            )
        )
    print(
        f"deface output (width, height, frames, audio): {sorted(sizes)}; input "
        f"{clips[0].width}x{clips[0].height}, {clips[0].frames} frames, with audio"
    )
    what = "faces + plates" if "plate" in clips[0].labels else "faces"
    print(
        f"throughput ours ({what}) / deface (faces) without its start-up, median over clips "
        f"run back to back: {float(np.median(ratios)):.2f}x",
        flush=True,
    )


def check_copy(clip: Clip, copy: Path) -> None:
    """Our copy keeps size, rate, frame count and audio (the targets); print any difference."""
    a, b = video.probe(clip.path), video.probe(copy)
    kept = {
        k: (getattr(a, k), getattr(b, k)) for k in ("width", "height", "fps", "frames", "has_audio")
    }
    bad = {k: v for k, v in kept.items() if v[0] != v[1]}
    print(
        f"{copy.name}: "
        + ("size, rate, frame count and audio kept" if not bad else f"CHANGED {bad}"),
        flush=True,
    )


def sweep(
    clips: Sequence[Clip],
    cached: dict,
    thresholds: dict[str, float],
    base: TrackSettings,
    photo: dict[str, float],
) -> None:
    """Box-based coverage / flicker / precision / obscured area over gap fill K and extension
    M (the other settings as given), then over the union radius and the drop rule."""
    labels = clips[0].labels

    def row(name: str, settings: TrackSettings | None) -> None:
        totals = Totals()
        for c in clips:
            if settings is None:
                boxes = above(cached[c.path], photo)
            else:
                boxes = [
                    detections_of(f)
                    for f in track_video(above(cached[c.path], thresholds), settings)
                ]
            totals.add(score_clip(c, *box_covered(c, boxes), boxes))
        print(
            f"{name:<28} | "
            + " | ".join(
                f"{s.coverage:.3f} {s.flicker_rate:.4f} {s.precision:.3f} {s.area:.4f}"
                for s in (totals.by_label[lab] for lab in labels)
            ),
            flush=True,
        )

    print(
        "sweep, box-based: "
        + " | ".join(f"{lab}: coverage flicker precision area" for lab in labels)
    )
    row("per frame, photo thresholds", None)
    for k in SWEEP_K:
        for m in SWEEP_M:
            row(
                f"K={k} M={m}",
                TrackSettings.from_dict({**base.to_dict(), "max_gap": k, "extend": m}),
            )
    for r in (0, 1, 2):
        row(f"union_radius={r}", TrackSettings.from_dict({**base.to_dict(), "union_radius": r}))
    for n in (2, 3):
        row(
            f"min_length={n} keep_score=0.5",
            TrackSettings.from_dict({**base.to_dict(), "min_length": n, "keep_score": 0.5}),
        )
    row(
        "start_scores=thresholds",
        TrackSettings.from_dict({**base.to_dict(), "start_scores": dict(thresholds)}),
    )


if __name__ == "__main__":
    sys.exit(main())
