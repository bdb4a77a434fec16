"""Measure activation ranges for the int8 detectors and write the committed range tables.

    python scripts/calibrate_int8.py --model centerface     # -> models/centerface-int8.json
    python scripts/calibrate_int8.py --model yolov8-plates  # -> models/yolov8-plates-int8.json

Run once by a maintainer (it needs the evaluation photos, ../shared/data); users never run it:
``fiftyone_anonymizer.detectors.quantize`` builds the int8 models from the tables alone.

Each calibration photo is fed exactly as the backend feeds it (same resizing, padding and
views: CenterFace at each ``--sides`` long side, the plate model's full view and tiles), through
the backend's own float graph with every intermediate tensor made an output. Per tensor the
script keeps the exact minimum and maximum and a histogram of values on log-spaced bins (20 per
octave, so a percentile is read to ~3.5 %) of a fixed random sample of 2^18 values per tensor and
view (100 photos give tens of millions per tensor: plenty for a 1e-4 tail). The range written is the ``--percentile`` of each
side (``--percentile 100``: min-max), widened to include 0. The graph input keeps its exact
range (0-255 or 0-1), which int8 represents without loss.

Only every ``--every``-th photo is used (default: the even ones), so the others stay unseen
for checking that the ranges carry over.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fiftyone_anonymizer.core.images import read_image
from fiftyone_anonymizer.core.weights import model_path, sha256_of
from fiftyone_anonymizer.detectors import backend_module
from fiftyone_anonymizer.detectors.quantize import INT8_MODELS, table_path

REPO = Path(__file__).resolve().parents[1]

DATA = REPO.parent / "shared" / "data"
DEFAULT_LABELS = {
    "centerface": DATA / "faces" / "labels.json",
    "yolov8-plates": DATA / "plates" / "labels.json",
}
#: Nodes kept in float by default: none (measured, see models/*.md).
DEFAULT_FLOAT_NODES: dict[str, list[str]] = {"centerface": [], "yolov8-plates": []}
BINS_PER_OCTAVE = 20
SAMPLE = 1 << 18  # values per tensor and view in the histograms (min and max see all)
_RNG = np.random.default_rng(0)
LOG_LOW, LOG_HIGH = -40, 40  # |values| from 2^-40 to 2^40; smaller ones count as zero


class RangeStats:
    """Exact min/max and log-binned histograms of the positive and negative values of one
    tensor, merged over any number of arrays of any shape."""

    n_bins = (LOG_HIGH - LOG_LOW) * BINS_PER_OCTAVE

    def __init__(self) -> None:
        self.low, self.high, self.count = np.inf, -np.inf, 0
        self.pos = np.zeros(self.n_bins, dtype=np.int64)
        self.neg = np.zeros(self.n_bins, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32).ravel()
        if values.size == 0:
            return
        self.low, self.high = (
            min(self.low, float(values.min())),
            max(self.high, float(values.max())),
        )
        if values.size > SAMPLE:  # a fixed random sample: the plate model's tensors hold millions
            values = values[_RNG.integers(0, values.size, SAMPLE)]
        self.count += values.size
        for sign, hist in ((1, self.pos), (-1, self.neg)):
            side = values[values * sign > 0] * sign
            if side.size:
                idx = np.floor((np.log2(side) - LOG_LOW) * BINS_PER_OCTAVE).astype(np.int64)
                hist += np.bincount(np.clip(idx, 0, self.n_bins - 1), minlength=self.n_bins)

    def bound(self, hist: np.ndarray, tail: float) -> float:
        """Lower edge of the lowest bin at and above which lie at most ``tail`` of all values
        (the magnitude to clip at); infinite when no bin qualifies."""
        above = np.cumsum(hist[::-1])[::-1]  # values in this bin or higher
        ok = np.nonzero(above <= tail * self.count)[0]
        if ok.size == 0 or ok[0] == 0:
            return float("inf")
        return float(2.0 ** (LOG_LOW + ok[0] / BINS_PER_OCTAVE))

    def range(self, percentile: float) -> tuple[float, float]:
        if percentile >= 100.0:  # min-max: exact, not read off the sampled histograms
            return min(self.low, 0.0), max(self.high, 0.0)
        tail = (100.0 - percentile) / 100.0
        high = min(self.high, self.bound(self.pos, tail)) if self.high > 0 else 0.0
        low = max(self.low, -self.bound(self.neg, tail)) if self.low < 0 else 0.0
        return min(low, 0.0), max(high, 0.0)


def instrumented_session(graph: bytes):
    """A float32 session whose outputs are every float tensor of ``graph`` (node outputs)."""
    import onnx

    from fiftyone_anonymizer.detectors.onnx_runtime import make_session

    proto = onnx.shape_inference.infer_shapes(onnx.load_from_string(graph))
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in list(proto.graph.value_info) + list(proto.graph.output)
    }
    have = {o.name for o in proto.graph.output}
    for node in proto.graph.node:
        if node.op_type in ("Constant", "Shape"):
            continue
        for name in node.output:
            if name and name not in have and types.get(name, 1) == onnx.TensorProto.FLOAT:
                proto.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                )
                have.add(name)
    return make_session(proto.SerializeToString(), "cpu")


def network_inputs(name: str, image: np.ndarray, sides: list[int]) -> list[np.ndarray]:
    """The blobs the backend would run for ``image`` (one per view)."""
    if name == "centerface":
        from fiftyone_anonymizer.detectors.centerface import make_blob, plan_factors

        blobs = []
        for side in sides:
            # side 0: native size (only photos larger than 1920 are shrunk)
            for factor in plan_factors(*image.shape[:2], (1.0,), side or 1, 1920, 4096 * 2304):
                blobs.append(make_blob(image, factor)[0])
        return blobs
    from fiftyone_anonymizer.detectors import PLATE_TILES
    from fiftyone_anonymizer.detectors.tiles import TileSpec, windows
    from fiftyone_anonymizer.detectors.yolo_plates import make_blob

    tiles = windows(*image.shape[:2], TileSpec(**PLATE_TILES))
    views = [image] + [image[y0:y1, x0:x1] for x0, y0, x1, y1 in tiles]
    return [make_blob(view)[0] for view in views]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=INT8_MODELS, required=True)
    parser.add_argument(
        "--labels",
        type=Path,
        help="labels.json of calibration photos "
        "(default: the model's evaluation set in ../shared/data)",
    )
    parser.add_argument("--every", type=int, default=2, help="use every N-th photo (default 2)")
    parser.add_argument(
        "--sides",
        default="0,640,800",
        help="CenterFace: long sides to run each photo at, 0 = native (default 0,640,800)",
    )
    parser.add_argument(
        "--percentile",
        type=float,
        default=99.999,
        help="share of each side's values kept in range (100: min-max)",
    )
    parser.add_argument(
        "--per-tensor",
        action="store_true",
        help="one weight scale per tensor, not per output channel",
    )
    parser.add_argument(
        "--float-nodes",
        help="comma-separated node names kept in float (default: the model's measured choice)",
    )
    parser.add_argument(
        "--stats",
        type=Path,
        help="cache of the measured statistics (.npz): "
        "read if it exists, else written; lets several percentiles be tried",
    )
    parser.add_argument(
        "--out", type=Path, help="table to write (default models/<model>-int8.json)"
    )
    args = parser.parse_args(argv)

    source = model_path(args.model)
    graph = backend_module(args.model).prepare_graph(source)
    labels = (args.labels or DEFAULT_LABELS[args.model]).resolve()
    entries = json.loads(labels.read_text())[:: args.every]
    sides = [int(s) for s in args.sides.split(",")]
    # What the statistics depend on; a cache made with other inputs is refused.
    inputs = {
        "model": args.model,
        "source_sha256": sha256_of(source),
        "labels": str(labels),
        "every": args.every,
        "sides": sides if args.model == "centerface" else None,
    }
    if args.stats and args.stats.is_file():
        stats, cached = load_stats(args.stats)
        if cached != inputs:
            raise SystemExit(f"{args.stats} was measured with {cached}, not {inputs}")
    else:
        stats = collect(args.model, graph, labels.parent, entries, sides)
        if args.stats:
            save_stats(stats, inputs, args.stats)
    input_name = "input.1" if args.model == "centerface" else "images"
    ranges = {name: list(s.range(args.percentile)) for name, s in sorted(stats.items())}
    ranges[input_name] = [0.0, 255.0] if args.model == "centerface" else [0.0, 1.0]
    float_nodes = (
        args.float_nodes.split(",")
        if args.float_nodes is not None
        else DEFAULT_FLOAT_NODES[args.model]
    )
    table = {
        "model": args.model,
        "source_sha256": sha256_of(source),
        "made_by": made_by(args),
        "calibration": {
            "labels": f"{labels.parent.name}/{labels.name}",
            "images": len(entries),
            "every": args.every,
            "sides": sides if args.model == "centerface" else None,
            "percentile": args.percentile,
        },
        "per_channel": not args.per_tensor,
        "float_nodes": [n for n in float_nodes if n],
        "ranges": {
            k: [float(np.float32(lo)), float(np.float32(hi))] for k, (lo, hi) in ranges.items()
        },
    }
    out = args.out or table_path(args.model)
    out.write_text(format_table(table))
    print(f"{args.model}: {len(ranges)} tensor ranges from {len(entries)} photos -> {out}")
    return 0


def format_table(table: dict) -> str:
    """JSON with one line per tensor range (a readable diff when the table is remade)."""
    head = json.dumps({k: v for k, v in table.items() if k != "ranges"}, indent=1)
    rows = ",\n".join(
        f"  {json.dumps(name)}: [{low!r}, {high!r}]"
        for name, (low, high) in table["ranges"].items()
    )
    return head[:-2] + ',\n "ranges": {\n' + rows + "\n }\n}\n"


def collect(
    name: str, graph: bytes, root: Path, entries: list[dict], sides: list[int]
) -> dict[str, RangeStats]:
    session = instrumented_session(graph)
    input_name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    stats = {o: RangeStats() for o in outputs}
    start = time.perf_counter()
    for n, entry in enumerate(entries, 1):
        image = read_image(root / entry["file"])
        for blob in network_inputs(name, image, sides):
            for out_name, value in zip(
                outputs, session.run(outputs, {input_name: blob}), strict=True
            ):
                stats[out_name].add(value)
        if n % 10 == 0:
            print(
                f"  {n}/{len(entries)} photos, {time.perf_counter() - start:.0f} s", file=sys.stderr
            )
    return stats


def made_by(args: argparse.Namespace) -> str:
    """The command that remakes the table (the options that change its content)."""
    parts = [f"--model {args.model}"]
    if args.labels:
        parts.append(f"--labels {args.labels}")
    parts += [f"--every {args.every}", f"--percentile {args.percentile:g}"]
    if args.model == "centerface":
        parts.append(f"--sides {args.sides}")
    if args.per_tensor:
        parts.append("--per-tensor")
    if args.float_nodes is not None:
        parts.append(f"--float-nodes {args.float_nodes}")
    return "python scripts/calibrate_int8.py " + " ".join(parts)


def save_stats(stats: dict[str, RangeStats], inputs: dict, path: Path) -> None:
    arrays = {"inputs": np.array(json.dumps(inputs, sort_keys=True))}
    for i, (name, s) in enumerate(stats.items()):
        arrays[f"n{i}"] = np.array(name)
        arrays[f"m{i}"] = np.array([s.low, s.high, s.count], dtype=np.float64)
        arrays[f"p{i}"], arrays[f"q{i}"] = s.pos, s.neg
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load_stats(path: Path) -> tuple[dict[str, RangeStats], dict]:
    data = np.load(path)
    inputs = json.loads(str(data["inputs"])) if "inputs" in data.files else {}
    stats = {}
    for i in range(len([k for k in data.files if k.startswith("n")])):
        s = RangeStats()
        s.low, s.high, count = data[f"m{i}"]
        s.count = int(count)
        s.pos, s.neg = data[f"p{i}"], data[f"q{i}"]
        stats[str(data[f"n{i}"])] = s
    return stats, inputs


if __name__ == "__main__":
    raise SystemExit(main())
