"""The main job on a small built-in example: detect, anonymize, and a before/after picture.

``python -m fiftyone_anonymizer.demo --output out/demo`` (``make demo``) needs no network and
no data of yours: its photos come from packages that are installed anyway (scikit-image's
sample images), so it shows on any machine what the plugin does to a dataset. The dataset,
``fiftyone-anonymizer-demo``, is kept (replaced by the next run) in FiftyOne's database, so
``fiftyone app launch fiftyone-anonymizer-demo`` opens it in the App on the copies.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DATASET_NAME = "fiftyone-anonymizer-demo"
_COLOURS = {"face": (255, 64, 64), "plate": (64, 160, 255)}


def _crowd() -> np.ndarray:
    """A 'crowd' of small faces (scikit-image's LFW subset, 25 px each) tiled on a backdrop."""
    from skimage import data

    faces = data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    rng = np.random.default_rng(7)
    canvas = np.full((480, 720), 96, dtype=np.float64)
    canvas += rng.normal(0, 6, canvas.shape)
    for i, idx in enumerate(rng.choice(len(faces), size=12, replace=False)):
        face = Image.fromarray((faces[idx] * 255).astype(np.uint8)).resize(
            (44, 44), Image.Resampling.BICUBIC
        )
        row, col = divmod(i, 4)
        y, x = 60 + row * 140 + int(rng.integers(0, 30)), 60 + col * 165 + int(rng.integers(0, 30))
        canvas[y : y + 44, x : x + 44] = np.asarray(face, dtype=np.float64)
    gray = np.clip(canvas, 0, 255).astype(np.uint8)
    return np.dstack([gray, gray, gray])


def write_examples(folder: Path) -> list[Path]:
    """Write the example photos (JPEG, as a camera would) and return their paths."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    examples = {
        "portrait/astronaut.jpg": data.astronaut(),
        "crowd/small_faces.jpg": _crowd(),
        "negative/coffee.jpg": data.coffee(),
    }
    paths = []
    for rel, pixels in examples.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=92)
        paths.append(path)
    return paths


def _draw_boxes(img: Image.Image, detections) -> Image.Image:
    out = img.convert("RGB")
    draw = ImageDraw.Draw(out)
    w, h = out.size
    for det in detections or []:
        x, y, bw, bh = det.bounding_box
        colour = _COLOURS.get(det.label, (255, 255, 0))
        draw.rectangle([x * w, y * h, (x + bw) * w, (y + bh) * h], outline=colour, width=2)
        draw.text(
            (x * w + 2, max(0, y * h - 11)), f"{det.label} {det.confidence or 0:.2f}", fill=colour
        )
    return out


def before_after(
    samples, label_field: str, output_field: str, path: Path, row_height: int = 300
) -> Path:
    """One picture: each original with its boxes on the left, its anonymized copy on the right."""
    rows = []
    for sample in samples:
        copy = sample[output_field]
        if not copy:
            continue
        before = _draw_boxes(
            Image.open(sample.filepath),
            sample[label_field].detections if sample[label_field] else [],
        )
        after = Image.open(copy).convert("RGB")
        scale = row_height / before.height
        size = (max(1, round(before.width * scale)), row_height)
        row = Image.new("RGB", (size[0] * 2 + 10, row_height), (255, 255, 255))
        row.paste(before.resize(size), (0, 0))
        row.paste(after.resize(size), (size[0] + 10, 0))
        rows.append(row)
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height + 10 for r in rows)), (255, 255, 255))
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height + 10
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=88)
    return path


def where_it_lives() -> str:
    """Where FiftyOne keeps its datasets: the database's folder, or the server it talks to."""
    import fiftyone as fo

    if fo.config.database_uri:
        return f"the MongoDB server at {fo.config.database_uri}"
    return f"FiftyOne's database in {Path(fo.config.database_dir).expanduser()}"


def run(output: Path, persistent: bool = True) -> dict:
    import fiftyone as fo

    from .jobs.anonymize import anonymize_images
    from .jobs.detect import detect_faces_and_plates
    from .jobs.fields import DEFAULT_LABEL_FIELD, DEFAULT_OUTPUT_FIELD

    started = time.time()
    originals = write_examples(output / "originals")
    dataset = fo.Dataset(DATASET_NAME, overwrite=True, persistent=persistent)
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in originals])

    detect = detect_faces_and_plates(dataset)
    print(detect.summary())
    anonymize = anonymize_images(dataset, output_dir=output / "anonymized")
    print(anonymize.summary())
    picture = before_after(
        dataset, DEFAULT_LABEL_FIELD, DEFAULT_OUTPUT_FIELD, output / "before_after.jpg"
    )
    print(f"before/after picture: {picture}")
    print(f"originals:            {output / 'originals'}")
    print(f"anonymized copies:    {output / 'anonymized'}")
    print(
        f"FiftyOne dataset:     {dataset.name} ({len(dataset)} samples"
        f"{', persistent' if persistent else ', deleted when this process ends'}), in "
        f"{where_it_lives()}; took {time.time() - started:.1f}s"
    )
    if persistent:
        print(
            f"open it in the App:   fiftyone app launch {dataset.name}   (the grid and the "
            f"modal show the copies; 'Display options' > 'Media field' > filepath for the "
            f"originals)"
        )
    if detect.failed or anonymize.failed:
        for path, reason in {**detect.failed, **anonymize.failed}.items():
            print(f"failed: {path}: {reason}", file=sys.stderr)
    return {"detect": detect.to_dict(), "anonymize": anonymize.to_dict(), "picture": str(picture)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=Path("out/demo"), help="where to write everything"
    )
    parser.add_argument(
        "--temporary",
        action="store_true",
        help=f"do not keep the FiftyOne dataset (by default '{DATASET_NAME}' is kept, "
        f"replaced by the next run, to open it in the App)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = run(args.output.resolve(), persistent=not args.temporary)
    failed = result["detect"]["failed"] + result["anonymize"]["failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
