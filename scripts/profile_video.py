"""Where a video's time goes: each stage of the frame path timed alone on one clip, then the
whole path (``videos.process_video``) as a job runs it.

Stages, per frame: decode (PyAV, RGB), detect (the video detector, one call at a time on one
onnxruntime thread, as each of the engine's detect workers runs), track (the tracker with its
defaults), blur (the tracked boxes of each frame, default blur settings), encode (H.264 with the
source's audio). The sum is the CPU time a frame costs; the whole path spreads it over the
cores, so its ms per frame is below the sum.

It holds the decoded clip in memory: give it short clips.

Usage: ``python scripts/profile_video.py [CLIP] [--plates]`` (default: the first face clip of
``make eval-video``, ``out/video-eval/faces/faces_01.mp4``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_model

from fiftyone_anonymizer import blur, engine, videos
from fiftyone_anonymizer.core.video import VideoWriter, iter_frames, probe
from fiftyone_anonymizer.detectors import DetectorConfig
from fiftyone_anonymizer.detectors.tracking import TrackSettings, detections_of, track_video

CLIP = Path(__file__).resolve().parents[1] / "out" / "video-eval" / "faces" / "faces_01.mp4"


def timed(label: str, frames: int, start: float) -> None:
    print(f"{label:<28} {1000 * (time.perf_counter() - start) / frames:7.2f} ms/frame", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", type=Path, nargs="?", default=CLIP)
    parser.add_argument("--plates", action="store_true", help="detect plates too")
    args = parser.parse_args()
    if not args.clip.is_file():
        raise SystemExit(f"{args.clip} not found: run `make eval-video` first, or name a clip")
    info = probe(args.clip)
    config = videos.video_detector(DetectorConfig(plates="yolov8-plates" if args.plates else None))
    settings = blur.BlurSettings()
    _, detector, options = engine.prepare(config, settings)
    engine.warm_up_blur(settings)
    print(f"{cpu_model()}; {args.clip.name}: {info.frames} frames {info.width}x{info.height}")

    start = time.perf_counter()
    frames = list(iter_frames(args.clip))
    n = len(frames)
    timed("decode", n, start)
    detector.detect([frames[0].rgb])  # models warm
    start = time.perf_counter()
    found = [detector.detect([f.rgb])[0] for f in frames]
    timed("detect (one thread)", n, start)
    start = time.perf_counter()
    tracked = track_video(found, TrackSettings())
    timed("track", n, start)
    boxes = [detections_of(t) for t in tracked]
    start = time.perf_counter()
    obscured = [blur.anonymize_image(f.rgb, b, settings) for f, b in zip(frames, boxes)]
    timed("blur", n, start)
    print(f"{'':<28} {np.mean([len(b) for b in boxes]):7.2f} boxes/frame")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with VideoWriter.for_source(Path(tmp) / "encode.mp4", info) as writer:
            for frame, pixels in zip(frames, obscured):
                writer.write(pixels, frame.pts)
        timed("encode (with audio)", n, start)
        del frames, obscured
        start = time.perf_counter()
        result = videos.process_video(
            args.clip, Path(tmp) / "copy.mp4", detector, settings, options=options
        )
        if not result.ok:
            raise SystemExit(f"{args.clip}: {result.error} ({result.stage})")
        seconds = time.perf_counter() - start
        timed("whole path (process_video)", n, start)
        print(f"whole path: {n / seconds:.1f} frames/s on {options.detect_workers} detect workers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
