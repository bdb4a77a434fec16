"""Evaluate the default detectors on a labels file: recall, coverage, precision, speed.

    python scripts/evaluate.py ../shared/data/faces/labels.json [more labels files]
        [--effort fast|balanced|thorough|all] [--out DIR] [--bench [N]]
        [--precision int8] [--face-option min_side=640] [--plate-option tiled=null]

For each label present in a file it prints one line such as
``face: recall 0.953 coverage 0.961 precision 0.742 images 200 ms/img 41`` and the recall and
coverage by box height (< 10, 10-16, 16-24, 24-48, >= 48 px; definitions in
``fiftyone_anonymizer.metrics``; every labelled box counts, those marked ``"added": true``
included), and writes ``report.json`` and ``curves.png`` (recall, coverage and precision
against the score threshold) to ``--out`` (default ``out/eval/<labels-stem>``). With several
files or effort levels it ends with a table of them side by side (``make eval``: every level
on ``labels.json``, for fitting, and ``more.json``, for checking).

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
from machine import cpu_model  # scripts/machine.py

from fiftyone_anonymizer import metrics
from fiftyone_anonymizer.core.boxes import FACE, PLATE, Detection
from fiftyone_anonymizer.detectors import (
    DEFAULT_EFFORT,
    DEFAULT_THRESHOLDS,
    EFFORTS,
    MTCNN_THRESHOLD,
    MergedDetector,
    build_backend,
    describe,
)

REPO = Path(__file__).resolve().parents[1]

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
    """Hand boxes (pixels at the stored resolution) as relative detections. Every labelled box
    counts, those marked ``"added": true`` included: they are real plates that the sources left
    out, and reading recall without them hid the small far plates.

    When the decoded image's size differs from the entry's (EXIF rotation), boxes are scaled by
    the entry's own width/height, which is the frame they were drawn in.
    """
    w0, h0 = entry.get("width") or width, entry.get("height") or height
    return [
        Detection.from_pixels(
            b["label"], 1.0, (b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]), w0, h0
        )
        for b in entry.get("boxes", [])
    ]


def tally_at(
    records: list[dict], thresholds: dict[str, float], settings, by_size: bool = False
) -> dict:
    """Counts per label at ``thresholds`` (``by_size``: per label and size class, truths only)."""
    per_image = []
    for rec in records:
        dets = [d for d in rec["dets"] if d.score >= thresholds.get(d.label, 0.0)]
        mask = metrics.obscured_mask(rec["h"], rec["w"], dets, settings)
        if by_size:
            per_image.append(
                metrics.score_by_size(rec["truths"], dets, rec["h"], rec["w"], mask=mask)
            )
        else:
            per_image.append(
                metrics.score_image(rec["truths"], dets, rec["h"], rec["w"], mask=mask)
            )
    return metrics.combine(per_image)


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs to backend keyword arguments; values are read as JSON where they
    parse (numbers, true/false, lists), else kept as strings."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"option {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def make_detector(
    faces: str | None,
    plates: str | None,
    thresholds: dict[str, float],
    effort: str,
    device: str,
    precision: str | None,
    options: dict[str, dict[str, object]],
) -> MergedDetector:
    """The merged detector of ``build_detector``, with a precision and per-class backend options
    (``build_backend`` overrides) for comparing variants."""
    backends = []
    for name, label in ((faces, FACE), (plates, PLATE)):
        if name is None:
            continue
        extra = dict(options.get(label, {}))
        if precision is not None and name != "mtcnn":
            extra.setdefault("precision", precision)
        backends.append(build_backend(name, thresholds[label], effort, device, **extra))
    return MergedDetector(backends, thresholds, effort, device)


def bench(
    images: list[np.ndarray], backends: list[str], device: str, rounds: int = 2
) -> dict[str, float]:
    """ms per photo of each ONNX backend in float32 and int8 at each effort level, on
    ``images``. The variants take turns photo by photo (after a warm-up each), so load from
    other processes weighs on all of them alike."""
    variants = {}
    for name in backends:
        if name == "mtcnn":
            continue
        label = PLATE if name == "yolov8-plates" else FACE
        for effort in EFFORTS:
            for precision in ("float32", "int8"):
                key = f"{name} {precision} {effort}"
                variants[key] = build_backend(
                    name, DEFAULT_THRESHOLDS[label], effort, device, precision=precision
                )
    seconds = dict.fromkeys(variants, 0.0)
    for det in variants.values():
        det.detect(images[:1])
    for _ in range(rounds):
        for image in images:
            for key, det in variants.items():
                t0 = time.perf_counter()
                det.detect([image])
                seconds[key] += time.perf_counter() - t0
    out = {key: sec / (rounds * len(images)) * 1000 for key, sec in seconds.items()}
    for key, ms in out.items():
        print(f"bench {key}: {ms:.1f} ms/img ({len(images)} photos x {rounds}, interleaved)")
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
    parser.add_argument(
        "labels",
        type=Path,
        nargs="+",
        help="labels.json files (lists of {file, width, height, boxes})",
    )
    parser.add_argument(
        "--out", type=Path, help="report folder (default out/eval/<labels-stem>[-<effort>])"
    )
    parser.add_argument(
        "--faces",
        default="auto",
        help="centerface | mtcnn | none | auto (centerface where the file labels faces)",
    )
    parser.add_argument(
        "--plates",
        default="auto",
        help="yolov8-plates | none | auto (yolov8-plates where the file labels plates)",
    )
    parser.add_argument(
        "--effort",
        default=DEFAULT_EFFORT,
        help=f"effort level ({', '.join(EFFORTS)}), several comma-separated, or all",
    )
    parser.add_argument("--floor", type=float, default=0.05, help="lowest threshold of the sweep")
    parser.add_argument("--limit", type=int, help="only the first N images (quick looks)")
    parser.add_argument(
        "--bench",
        type=int,
        nargs="?",
        const=20,
        default=0,
        metavar="N",
        help="also time float32 and int8 at each effort level on the first N photos (default 20)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision",
        choices=("auto", "float32", "float16", "int8"),
        help="network precision of the ONNX backends (default: the effort level's)",
    )
    parser.add_argument(
        "--face-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="face backend setting, e.g. min_side=640 (repeatable)",
    )
    parser.add_argument(
        "--plate-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="plate backend setting, e.g. tiled=null (repeatable)",
    )
    args = parser.parse_args(argv)
    efforts = list(EFFORTS) if args.effort == "all" else args.effort.split(",")
    for effort in efforts:
        if effort not in EFFORTS:
            parser.error(f"--effort: {effort!r} is not one of {', '.join(EFFORTS)} or all")
    table = []
    for labels in args.labels:
        for effort in efforts:
            several = len(efforts) > 1 or len(args.labels) > 1
            if several:
                print(f"== {labels} at effort {effort}", flush=True)
            table.append(evaluate(labels, effort, args, several))
    if len(table) > 1:
        print_table(table)
    return 0


def print_table(table: list[dict]) -> None:
    """The runs side by side: recall (coverage), by face height, precision and speed."""
    classes = metrics.size_classes()
    print("\nside by side (recall / coverage at the default thresholds; every labelled box counts)")
    head = f"{'effort':<9} {'labels':<28} {'class':<6} {'all':>11} {'>=16 px':>11} "
    print(head + " ".join(f"{c:>6}" for c in classes) + f" {'prec.':>6} {'ms/img':>7}")
    for row in table:
        for label, result in row["results"].items():
            sized = row["by_size"].get(label, {})
            large = metrics.Tally()
            for cls in classes[2:]:
                if cls in sized:
                    large.add(metrics.Tally(**{k: sized[cls][k] for k in _COUNTS}))
            cells = " ".join(
                f"{sized[c]['recall']:6.3f}" if c in sized else f"{'':>6}" for c in classes
            )
            print(
                f"{row['effort']:<9} {row['name']:<28} {label:<6} "
                f"{result['recall']:.3f}/{result['coverage']:.3f} "
                f"{large.recall:.3f}/{large.coverage:.3f} {cells} "
                f"{result['precision']:6.3f} {row['ms_per_image']:7.0f}"
            )


_COUNTS = (
    "truths",
    "detections",
    "matched_truths",
    "matched_detections",
    "covered_truths",
    "images",
)


def evaluate(labels: Path, effort: str, args: argparse.Namespace, several: bool) -> dict:
    """Run the detectors at ``effort`` on one labels file; print its lines, write its report
    (``report.json``, ``curves.png``) and return the report."""
    from fiftyone_anonymizer.blur import BlurSettings

    labels_path = labels.resolve()
    entries = load_labels(labels_path)[: args.limit]
    stem = labels_path.parent.name
    if labels_path.stem != "labels":
        stem += f"-{labels_path.stem}"
    name = f"{labels_path.parent.name}/{labels_path.name}"
    if several:  # one folder per file and level, under --out when given
        out_dir = (args.out or REPO / "out" / "eval") / f"{stem}-{effort}"
    else:
        out_dir = args.out or REPO / "out" / "eval" / stem
    out_dir.mkdir(parents=True, exist_ok=True)
    labelled = {b["label"] for e in entries for b in e.get("boxes", [])}
    auto = {"faces": "centerface" if FACE in labelled else "none"}
    auto["plates"] = "yolov8-plates" if PLATE in labelled else "none"
    chosen = {k: auto[k] if getattr(args, k) == "auto" else getattr(args, k) for k in auto}
    faces = None if chosen["faces"] == "none" else chosen["faces"]
    plates = None if chosen["plates"] == "none" else chosen["plates"]
    options = {FACE: parse_options(args.face_option), PLATE: parse_options(args.plate_option)}

    defaults = {}
    if faces is not None:
        defaults[FACE] = MTCNN_THRESHOLD if faces == "mtcnn" else DEFAULT_THRESHOLDS[FACE]
    if plates is not None:
        defaults[PLATE] = DEFAULT_THRESHOLDS[PLATE]
    floor = {k: min(args.floor, v) for k, v in defaults.items()}
    detector = make_detector(faces, plates, floor, effort, args.device, args.precision, options)

    records, seconds = [], 0.0
    for n, entry in enumerate(entries, 1):
        path = labels_path.parent / entry["file"]
        image = read_rgb(path)  # raises ImageReadError naming the file
        h, w = image.shape[:2]
        t0 = time.perf_counter()
        dets = detector.detect([image])[0]
        seconds += time.perf_counter() - t0
        records.append(
            {"file": entry["file"], "h": h, "w": w, "dets": dets, "truths": truths_of(entry, w, h)}
        )
        if n % 25 == 0:
            print(f"  {n}/{len(entries)} images", file=sys.stderr, flush=True)
    ms_per_img = seconds / max(len(records), 1) * 1000

    settings = BlurSettings()
    present = sorted({b["label"] for e in entries for b in e.get("boxes", [])})
    summary = tally_at(records, defaults, settings)
    lines, curves = [], {}
    for label in present:
        t = summary.get(label, metrics.Tally(images=len(records)))
        lines.append(
            f"{label}: recall {t.recall:.3f} coverage {t.coverage:.3f} precision "
            f"{t.precision:.3f} images {len(records)} ms/img {ms_per_img:.0f}"
        )
        curve = metrics.Curve()
        for thr in [x for x in SWEEP if x >= floor.get(label, 0.0) - 1e-9]:
            tt = tally_at(records, {**defaults, label: thr}, settings).get(label, metrics.Tally())
            curve.thresholds.append(thr)
            curve.recall.append(tt.recall)
            curve.coverage.append(tt.coverage)
            curve.precision.append(tt.precision)
            curve.detections.append(tt.detections)
        curves[label] = curve.__dict__

    sized = tally_at(records, defaults, settings, by_size=True)
    size_lines, by_size = [], {}
    for label in present:
        parts = []
        for cls in metrics.size_classes():
            t = sized.get((label, cls))
            if t is None:
                continue
            by_size.setdefault(label, {})[cls] = t.as_dict()
            parts.append(f"{cls} {t.recall:.3f}/{t.coverage:.3f} ({t.truths})")
        size_lines.append(f"  {label} recall/coverage by height (px): {'; '.join(parts)}")

    per_image = []
    for rec in records:
        dets = [d for d in rec["dets"] if d.score >= defaults.get(d.label, 0.0)]
        m = metrics.match_detections(rec["truths"], dets)
        per_image.append(
            {
                "file": rec["file"],
                "missed": {lab: int((~x.truth_matched).sum()) for lab, x in m.items()},
                "false_positives": {lab: int((~x.detection_matched).sum()) for lab, x in m.items()},
            }
        )

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
        parts = [
            f"{lab} recall {t.recall:.3f} precision {t.precision:.3f}"
            for lab, t in got.items()
            if t.truths
        ]
        if parts and len(folders) > 1:
            folder_lines.append(f"  {folder}: {'; '.join(parts)} ({len(recs)} images)")

    timings = {}
    if args.bench and entries:
        print(f"bench on {cpu_model()}")
        photos = [read_rgb(labels_path.parent / e["file"]) for e in entries[: args.bench]]
        timings = bench(photos, [b.name for b in detector.backends], args.device)
    report = {
        "labels_file": str(labels_path),
        "name": name,
        "effort": effort,
        "images": len(records),
        "ms_per_image": ms_per_img,
        "iou_threshold": metrics.IOU_THRESHOLD,
        "min_covered": metrics.MIN_COVERED,
        "matching": "one-to-one, greedy by score, per image and class",
        "blur_settings": settings.to_dict() if hasattr(settings, "to_dict") else str(settings),
        "thresholds": defaults,
        "precision": args.precision,
        "options": {label: opts for label, opts in options.items() if opts},
        "results": {lab: summary.get(lab, metrics.Tally()).as_dict() for lab in present},
        "by_size": by_size,
        "curves": curves,
        "detector": describe(detector) | {"thresholds": defaults},
        "cpu": cpu_model(),
        "bench_ms_per_image": timings,
        "per_folder": per_folder,
        "per_image": per_image,
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    if curves:
        plot(curves, defaults, out_dir / "curves.png")
    for line in lines:
        print(line)
    for line in size_lines:
        print(line)
    if folder_lines:
        print("by folder (default thresholds):")
        for line in folder_lines:
            print(line)
    print(f"report: {out_dir / 'report.json'}", file=sys.stderr)
    return report


if __name__ == "__main__":
    raise SystemExit(main())
