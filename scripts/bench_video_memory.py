"""Peak memory of a video job against the clip's length: a 10 s clip and a 5 min clip.

Both clips are made here (no shared data needed): 640x360 at 30 frames/s, H.264 with an AAC
track, scikit-image's astronaut portrait drifting across a noisy background, so the detector,
the tracker and the blur have work in every frame. Each is anonymized by the command line
(``anonymize --input <folder> --image-output <folder>``, faces and plates, our defaults) in a
process of its own; its peak RSS is read from the kernel (``wait4``). Streaming means the peak
does not depend on the length.

The last line reads ``video peak RSS 10 s <A> MB, 5 min <B> MB (<B/A>x)``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from machine import cpu_model  # scripts/machine.py
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "bench-video-memory"
RATE, WIDTH, HEIGHT = 30, 640, 360


def make_clip(path: Path, seconds: float) -> Path:
    """A clip with a face moving across it, and a sine tone."""
    from skimage import data

    face = np.asarray(Image.fromarray(data.astronaut()).resize((160, 160)))
    rng = np.random.default_rng(0)
    background = rng.integers(40, 200, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames = int(seconds * RATE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        sound = out.add_stream("aac", rate=22050)
        sound.layout = "mono"
        for i in range(frames):
            picture = background.copy()
            x = int((WIDTH - 160) * (0.5 + 0.5 * np.sin(i / 90)))
            y = int((HEIGHT - 160) * (0.5 + 0.5 * np.cos(i / 70)))
            picture[y : y + 160, x : x + 160] = face
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, RATE)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        samples = 1024
        for k in range(int(seconds * 22050 / samples)):
            t = (np.arange(samples) + k * samples) / 22050
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            chunk = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = 22050, k * samples
            out.mux(sound.encode(chunk))
        out.mux(sound.encode())
    return path


def run_peak_mb(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit code of ``command`` run as a child."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.stdout.close()  # type: ignore[union-attr]
    return time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", type=float, default=10.0, help="seconds of the short clip")
    parser.add_argument("--long", type=float, default=300.0, help="seconds of the long clip")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    peaks = {}
    for name, seconds in (("short", args.short), ("long", args.long)):
        folder = OUT / name
        shutil.rmtree(folder, ignore_errors=True)
        clip = make_clip(folder / "in" / f"{name}.mp4", seconds)
        wall, peak, code = run_peak_mb(
            [
                str(REPO / ".venv" / "bin" / "anonymize"),
                "--input",
                str(folder / "in"),
                "--image-output",
                str(folder / "out"),
                "--quiet",
            ]
        )
        if code != 0:
            sys.exit(f"the command line failed on {clip} (exit {code})")
        frames = int(seconds * RATE)
        print(
            f"{seconds:6.0f} s clip ({frames} frames {WIDTH}x{HEIGHT}): {wall:6.1f} s, "
            f"{frames / wall:5.1f} frames/s, peak RSS {peak:5.0f} MB",
            flush=True,
        )
        peaks[name] = peak
    print(
        f"video peak RSS {args.short:.0f} s {peaks['short']:.0f} MB, {args.long / 60:.0f} min "
        f"{peaks['long']:.0f} MB ({peaks['long'] / peaks['short']:.2f}x)"
    )


if __name__ == "__main__":
    main()
