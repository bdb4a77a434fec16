"""Build 12 MP photos from the labelled face photos, each face at its own pixel size.

    python scripts/large_photos.py [--labels ../shared/data/faces/labels.json ...]
        [--out out/large-photos] [--size 4000x3000]

Phone cameras take 12 MP (4000 x 3000) photos, and a face that is 16 px tall in a crowd stays
16 px tall in them. The labelled face photos are small (about 400 x 300), so this packs them side
by side, unscaled, onto 4000 x 3000 canvases (rows filled left to right, a grey background
between them) and writes the canvases as JPEG with a ``labels.json`` in the format of
``../shared/data`` (every box moved by its photo's offset). ``scripts/evaluate.py`` and
``scripts/bench_e2e.py`` read that file like any other.

Photos are taken in the labels files' order; a canvas is written once it is full, the last one
even if it is not. Nothing is copied into the repository: the output goes under ``out/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
#: Background between the photos: a flat mid grey (no texture that could look like a face).
BACKGROUND = 114
GAP = 8  # pixels between neighbouring photos


def pack(
    sizes: list[tuple[int, int]], canvas: tuple[int, int], gap: int = GAP
) -> list[list[tuple[int, int, int]]]:
    """Shelf packing: ``(index, x, y)`` of each photo (``sizes`` are ``(width, height)``),
    grouped by canvas. Photos go tallest first (rows of similar heights waste little canvas); a
    row is as tall as its tallest photo; a photo that does not fit on the row starts the next
    one, a row that does not fit starts the next canvas. Photos larger than the canvas are left
    out."""
    width, height = canvas
    canvases: list[list[tuple[int, int, int]]] = [[]]
    x = y = row_h = 0
    for i in sorted(range(len(sizes)), key=lambda k: -sizes[k][1]):
        w, h = sizes[i]
        if w > width or h > height:
            continue
        if x + w > width:  # next row
            x, y, row_h = 0, y + row_h + gap, 0
        if y + h > height:  # next canvas
            canvases.append([])
            x = y = row_h = 0
        canvases[-1].append((i, x, y))
        x += w + gap
        row_h = max(row_h, h)
    return [c for c in canvases if c]


def build(labels: list[Path], out: Path, canvas: tuple[int, int]) -> Path:
    """Write the canvases and their ``labels.json`` under ``out``; returns the labels path."""
    entries: list[tuple[Path, dict]] = []
    for path in labels:
        entries += [(path.parent, e) for e in json.loads(path.read_text())]
    sizes = [(e["width"], e["height"]) for _, e in entries]
    (out / "images").mkdir(parents=True, exist_ok=True)
    written = []
    for n, placed in enumerate(pack(sizes, canvas)):
        pixels = np.full((canvas[1], canvas[0], 3), BACKGROUND, dtype=np.uint8)
        boxes = []
        for i, x, y in placed:
            root, entry = entries[i]
            with Image.open(root / entry["file"]) as im:
                photo = np.asarray(im.convert("RGB"))
            h, w = photo.shape[:2]
            if (w, h) != (entry["width"], entry["height"]):
                sys.exit(f"{entry['file']}: {w}x{h}, labels say {entry['width']}x{entry['height']}")
            pixels[y : y + h, x : x + w] = photo
            boxes += [{**b, "x": b["x"] + x, "y": b["y"] + y} for b in entry["boxes"]]
        name = f"images/large_{n:03d}.jpg"
        Image.fromarray(pixels).save(out / name, quality=92)
        written.append({"file": name, "width": canvas[0], "height": canvas[1], "boxes": boxes})
    target = out / "labels.json"
    target.write_text(json.dumps(written, indent=1))
    faces = sum(len(e["boxes"]) for e in written)
    print(f"{len(written)} photos of {canvas[0]}x{canvas[1]}, {faces} faces -> {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--labels",
        type=Path,
        nargs="+",
        default=[SHARED / "faces" / "labels.json", SHARED / "faces" / "more.json"],
    )
    parser.add_argument("--out", type=Path, default=REPO / "out" / "large-photos")
    parser.add_argument("--size", default="4000x3000", help="canvas WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    for path in args.labels:
        if not path.is_file():
            sys.exit(f"{path} not found (the evaluation photos live beside the checkout)")
    width, height = (int(v) for v in args.size.lower().split("x"))
    build(args.labels, args.out, (width, height))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
