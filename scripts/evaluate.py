"""Evaluate the default detectors on a labels file: recall, coverage, precision, speed.

    python scripts/evaluate.py ../shared/data/faces/labels.json [--out DIR] [--bench]

For each label present in the file it prints one line such as
``face: recall 0.953 coverage 0.961 precision 0.742 images 200 ms/img 41`` (definitions in
``fiftyone_anonymizer.metrics``), and writes ``report.json`` and ``curves.png`` (recall, coverage
and precision against the score threshold) to ``--out`` (default ``out/eval/<labels-stem>``).

The detector is run once with every threshold lowered to ``--floor``; the default-threshold
numbers and the curves are then read off those detections. That is exact, not an approximation:
every step after scoring (peak picking, NMS, merging) keeps a box or not independently of
boxes with lower scores, so raising the threshold afterwards gives the same boxes as running
at that threshold. ``ms/img`` is the wall time of ``detect`` (decode and metrics excluded).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without the editable install
    sys.path.insert(0, str(REPO))

from fiftyone_anonymizer import metrics  # noqa: E402
from fiftyone_anonymizer.core.boxes import Detection  # noqa: E402
from fiftyone_anonymizer.detectors import (  # noqa: E402
    DEFAULT_THRESHOLDS,
    build_backend,
    build_detector,
    describe,
)

SWEEP = [0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def read_rgb(path: Path) -> np.ndarray:
    """RGB uint8 with EXIF orientation applied (the project's reader when present)."""
    try:
        from fiftyone_anonymizer.core.images import read_image
    except ImportError:  # pragma: no cover - images.py is written by another issue
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    return read_image(path)


def load_labels(path: Path) -> list[dict]:
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise SystemExit(f"{path}: expected a JSON list of {{file, width, height, boxes}} entries")
    return entries


def truths_of(entry: dict, width: int, height: int) -> list[Detection]:
    """Hand boxes (pixels at the stored resolution) as relative detections.

    When the decoded image's size differs from the entry's (EXIF rotation), boxes are scaled by
    the entry's own width/height, which is the frame they were drawn in.
    """
    w0, h0 = entry.get("width") or width, entry.get("height") or height
    return [
        Detection.from_pixels(b["label"], 1.0, (b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]), w0, h0)
        for b in entry.get("boxes", [])
    ]


def tally_at(records: list[dict], thresholds: dict[str, float], settings) -> dict[str, metrics.Tally]:
    per_image = []
    for rec in records:
        dets = [d for d in rec["dets"] if d.score >= thresholds.get(d.label, 0.0)]
        per_image.append(metrics.score_image(rec["truths"], dets, rec["h"], rec["w"], settings=settings))
    return metrics.combine(per_image)


def bench(image: np.ndarray, repeats: int = 3) -> dict[str, float]:
    """ms per 1920x1080 image for each backend, single pass and default (multiscale)."""
    from fiftyone_anonymizer.detectors.base import resize

    frame = resize(image, 1920, 1080)
    out = {}
    runs = [
        ("centerface", {}, False), ("centerface", {}, True),
        ("yolov8-plates", {"precision": "float16"}, False),
        ("yolov8-plates", {"precision": "float32"}, False),
        ("yolov8-plates", {}, True), ("mtcnn", {}, False),
    ]
    for name, extra, ms in runs:
        thr = 0.7 if name == "mtcnn" else DEFAULT_THRESHOLDS["face" if name != "yolov8-plates" else "plate"]
        try:
            det = build_backend(name, thr, multiscale=ms, device="cpu", **extra)
        except Exception as exc:  # e.g. TensorFlow missing for mtcnn
            print(f"bench {name}: not available ({exc})")
            continue
        det.detect([frame])  # warm-up (session init, TF tracing)
        t0 = time.perf_counter()
        for _ in range(repeats):
            det.detect([frame])
        key = f"{name}{' ' + extra['precision'] if extra else ''}{' multiscale' if ms else ''}"
        out[key] = (time.perf_counter() - t0) / repeats * 1000
        print(f"bench 1920x1080 {key}: {out[key]:.0f} ms/img")
    return out


def plot(curves: dict[str, dict], defaults: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5), squeeze=False)
    for ax, (label, c) in zip(axes[0], curves.items(), strict=True):
        for key in ("recall", "coverage", "precision"):
            ax.plot(c["thresholds"], c[key], marker="o", ms=3, label=key)
        ax.axvline(defaults[label], color="grey", ls="--", label=f"default {defaults[label]:g}")
        ax.set(title=label, xlabel="score threshold", ylim=(0, 1.02), xlim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", type=Path, help="labels.json (list of {file, width, height, boxes})")
    parser.add_argument("--out", type=Path, help="report folder (default out/eval/<labels-stem>)")
    parser.add_argument("--faces", default="centerface", help="centerface | mtcnn | none")
    parser.add_argument("--plates", default="yolov8-plates", help="yolov8-plates | none")
    parser.add_argument("--multiscale", choices=("default", "on", "off"), default="default")
    parser.add_argument("--floor", type=float, default=0.05, help="lowest threshold of the sweep")
    parser.add_argument("--limit", type=int, help="only the first N images (quick looks)")
    parser.add_argument("--bench", action="store_true", help="also time each backend at 1920x1080")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    from fiftyone_anonymizer.blur import BlurSettings

    labels_path = args.labels.resolve()
    entries = load_labels(labels_path)[: args.limit]
    stem = labels_path.parent.name if labels_path.stem == "labels" else labels_path.stem
    out_dir = args.out or REPO / "out" / "eval" / stem
    out_dir.mkdir(parents=True, exist_ok=True)
    faces = None if args.faces == "none" else args.faces
    plates = None if args.plates == "none" else args.plates
    multiscale = {"default": None, "on": True, "off": False}[args.multiscale]

    defaults_det = build_detector(faces, plates, multiscale=multiscale, device=args.device)
    defaults = dict(defaults_det.thresholds)
    floor = {k: min(args.floor, v) for k, v in defaults.items()}
    detector = build_detector(faces, plates, thresholds=floor, multiscale=multiscale, device=args.device)
    del defaults_det

    records, seconds = [], 0.0
    for n, entry in enumerate(entries, 1):
        path = labels_path.parent / entry["file"]
        image = read_rgb(path)  # raises ImageReadError naming the file
        h, w = image.shape[:2]
        t0 = time.perf_counter()
        dets = detector.detect([image])[0]
        seconds += time.perf_counter() - t0
        records.append({"file": entry["file"], "h": h, "w": w, "dets": dets,
                        "truths": truths_of(entry, w, h)})
        if n % 25 == 0:
            print(f"  {n}/{len(entries)} images", file=sys.stderr, flush=True)
    ms_per_img = seconds / max(len(records), 1) * 1000

    settings = BlurSettings()
    present = sorted({b["label"] for e in entries for b in e.get("boxes", [])})
    summary = tally_at(records, defaults, settings)
    lines, curves = [], {}
    for label in present:
        t = summary.get(label, metrics.Tally(images=len(records)))
        lines.append(f"{label}: recall {t.recall:.3f} coverage {t.coverage:.3f} precision "
                     f"{t.precision:.3f} images {len(records)} ms/img {ms_per_img:.0f}")
        curve = metrics.Curve()
        for thr in [x for x in SWEEP if x >= floor.get(label, 0.0) - 1e-9]:
            tt = tally_at(records, {**defaults, label: thr}, settings).get(label, metrics.Tally())
            curve.thresholds.append(thr)
            curve.recall.append(tt.recall)
            curve.coverage.append(tt.coverage)
            curve.precision.append(tt.precision)
            curve.detections.append(tt.detections)
        curves[label] = curve.__dict__

    per_image = []
    for rec in records:
        dets = [d for d in rec["dets"] if d.score >= defaults.get(d.label, 0.0)]
        m = metrics.match_detections(rec["truths"], dets)
        per_image.append({
            "file": rec["file"],
            "missed": {lab: int((~x.truth_matched).sum()) for lab, x in m.items()},
            "false_positives": {lab: int((~x.detection_matched).sum()) for lab, x in m.items()},
        })

    # The same figures per folder of the labels file (camera, site, source): a set that is
    # fine on average can hide one folder where the detector fails.
    folders: dict[str, list[dict]] = {}
    for rec in records:
        folders.setdefault(str(Path(rec["file"]).parent), []).append(rec)
    per_folder, folder_lines = {}, []
    for folder, recs in sorted(folders.items()):
        tallies = tally_at(recs, defaults, settings)
        got = {lab: tallies.get(lab, metrics.Tally(images=len(recs))) for lab in present}
        per_folder[folder] = {lab: t.as_dict() for lab, t in got.items()}
        parts = [f"{lab} recall {t.recall:.3f} precision {t.precision:.3f}"
                 for lab, t in got.items() if t.truths]
        if parts and len(folders) > 1:
            folder_lines.append(f"  {folder}: {'; '.join(parts)} ({len(recs)} images)")

    timings = bench(read_rgb(labels_path.parent / entries[0]["file"])) if args.bench and entries else {}
    report = {
        "labels_file": str(labels_path), "images": len(records), "ms_per_image": ms_per_img,
        "iou_threshold": metrics.IOU_THRESHOLD, "min_covered": metrics.MIN_COVERED,
        "matching": "one-to-one, greedy by score, per image and class",
        "blur_settings": settings.to_dict() if hasattr(settings, "to_dict") else str(settings),
        "thresholds": defaults,
        "results": {lab: summary.get(lab, metrics.Tally()).as_dict() for lab in present},
        "curves": curves, "detector": describe(detector) | {"thresholds": defaults},
        "bench_ms_1920x1080": timings, "per_folder": per_folder, "per_image": per_image,
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    if curves:
        plot(curves, defaults, out_dir / "curves.png")
    for line in lines:
        print(line)
    if folder_lines:
        print("by folder (default thresholds):")
        for line in folder_lines:
            print(line)
    print(f"report: {out_dir / 'report.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
