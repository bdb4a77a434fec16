"""int8 detectors: built from the committed range tables alone, cached under a hashed name, and
in agreement with the float models on real pixels."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import HAND_FACE, box_iou

pytestmark = pytest.mark.models  # every test here loads the detection models

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory) -> Path:
    """A fresh cache folder holding the int8 models built by this module's first test."""
    return tmp_path_factory.mktemp("int8-cache")


@pytest.mark.parametrize("name", ["centerface", "yolov8-plates"])
def test_int8_model_builds_from_the_table_alone(name, int8_cache):
    # A fresh process in which the evaluation photos do not exist: the table is all it needs.
    code = (
        "import sys; from pathlib import Path; "
        "from fiftyone_anonymizer.detectors import int8_model; "
        f"print(int8_model({name!r}, cache=Path(sys.argv[1])))"
    )
    env = {**os.environ, "FO_ANONYMIZER_SHARED_DATA": str(int8_cache / "no-photos-here")}
    run = subprocess.run(
        [sys.executable, "-c", code, str(int8_cache)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    path = Path(run.stdout.strip())
    assert path.parent == int8_cache and path.is_file()
    stem, digest = path.stem.rsplit("-", 1)
    assert stem == f"{name}-int8" and re.fullmatch(r"[0-9a-f]{12}", digest), path.name

    import onnx

    model = onnx.load(str(path))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 50  # every convolution's weights


def test_cached_file_is_reused_and_a_new_table_gives_a_new_file(int8_cache, tmp_path, monkeypatch):
    from fiftyone_anonymizer.core.weights import model_path
    from fiftyone_anonymizer.detectors import quantize
    from fiftyone_anonymizer.detectors.centerface import prepare_graph

    source = model_path("centerface")
    built = quantize.int8_model("centerface", source, prepare_graph, cache=int8_cache)

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although the cached file was there")

    monkeypatch.setattr(quantize, "quantize_graph", no_build)
    assert quantize.int8_model("centerface", source, prepare_graph, cache=int8_cache) == built

    # Any change of the table is a new file (and a new build).
    table = json.loads(quantize.table_path("centerface").read_text())
    first = next(iter(table["ranges"]))
    table["ranges"][first][1] *= 1.5
    changed = tmp_path / "centerface-int8.json"
    changed.write_text(json.dumps(table))
    monkeypatch.setattr(quantize, "table_path", lambda name: changed)
    with pytest.raises(AssertionError, match="rebuilt"):
        quantize.int8_model("centerface", source, prepare_graph, cache=int8_cache)


def test_a_table_for_another_file_or_graph_is_refused(tmp_path, monkeypatch):
    from fiftyone_anonymizer.core.weights import model_path
    from fiftyone_anonymizer.detectors import quantize
    from fiftyone_anonymizer.detectors.centerface import prepare_graph

    other = tmp_path / "other.onnx"
    other.write_bytes(model_path("centerface").read_bytes() + b"\0")
    with pytest.raises(quantize.QuantizeError, match="calibrated for"):
        quantize.int8_model("centerface", other, prepare_graph, cache=tmp_path)

    table = quantize.load_table("centerface")
    table["ranges"] = dict(list(table["ranges"].items())[:10])
    graph = prepare_graph(model_path("centerface"))
    with pytest.raises(quantize.QuantizeError, match="no entry"):
        quantize.quantize_graph(graph, table)


def test_int8_and_float32_find_the_same_face(astronaut):
    from fiftyone_anonymizer.detectors import build_backend

    found = {}
    for precision in ("float32", "int8"):
        det = build_backend("centerface", 0.2, device="cpu", precision=precision)
        assert det.precision == precision
        found[precision] = max(det.detect([astronaut])[0], key=lambda d: d.score)
    full, small = found["float32"], found["int8"]
    assert box_iou(small.box, full.box) > 0.8
    assert abs(small.score - full.score) < 0.1
    assert box_iou(small.box, HAND_FACE) >= 0.5


def test_int8_plate_heads_follow_the_float_ones(astronaut):
    # No plate in the built-in images; the heads' raw outputs must still agree (the scores
    # and box bins that every plate is decoded from).
    from fiftyone_anonymizer.detectors.yolo_plates import HEADS, YoloPlateDetector, make_blob

    blob = make_blob(astronaut)[0]
    outs = {}
    for precision in ("float32", "int8"):
        det = YoloPlateDetector(precision=precision, device="cpu")
        outs[precision] = det.session.run(list(HEADS), {det.input_name: blob})
    for full, small in zip(outs["float32"], outs["int8"], strict=True):
        assert full.shape == small.shape
        corr = np.corrcoef(full.ravel(), small.ravel())[0, 1]
        assert corr > 0.98, corr


def test_int8_plates_on_real_photos(shared_data):
    from fiftyone_anonymizer.core.images import read_image
    from fiftyone_anonymizer.detectors.yolo_plates import YoloPlateDetector

    entries = [
        e for e in json.loads((shared_data / "plates" / "labels.json").read_text()) if e["boxes"]
    ][::20][:8]
    dets = {
        p: YoloPlateDetector(threshold=0.25, precision=p, device="cpu") for p in ("float32", "int8")
    }
    for entry in entries:
        image = read_image(shared_data / "plates" / entry["file"])
        full, small = (dets[p].detect([image])[0] for p in ("float32", "int8"))
        for a in full:
            if a.score >= 0.4:  # clear plates: the int8 model finds each one in place
                assert max((box_iou(a.box, b.box) for b in small), default=0) > 0.7, entry["file"]


def test_auto_precision_is_decided_in_one_place_per_effort_level():
    from fiftyone_anonymizer.detectors import EFFORTS, backend_precision, build_backend
    from fiftyone_anonymizer.detectors.centerface import CenterFaceDetector

    on_cpu = {
        effort: {name: backend_precision(name, "auto", "cpu", effort) for name in PAIRS}
        for effort in EFFORTS
    }
    assert on_cpu == {
        "fast": {"centerface": "float32", "yolov8-plates": "int8"},
        "balanced": {"centerface": "float32", "yolov8-plates": "int8"},
        "thorough": {"centerface": "float32", "yolov8-plates": "float32"},
    }
    assert backend_precision("yolov8-plates", "float32", "cpu", "fast") == "float32"  # asked
    assert build_backend("yolov8-plates", 0.1, "fast", "cpu").precision == "int8"
    # the backends themselves take a concrete precision only
    for wrong in ("auto", "int4"):
        with pytest.raises(ValueError, match="precision must be one of"):
            CenterFaceDetector(precision=wrong, device="cpu")


PAIRS = ("centerface", "yolov8-plates")


def _calibrate_module():
    spec = importlib.util.spec_from_file_location(
        "calibrate_int8", REPO / "scripts" / "calibrate_int8.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_range_statistics_read_percentiles_off_the_histograms():
    module = _calibrate_module()
    stats = module.RangeStats()
    rng = np.random.default_rng(0)
    values = rng.normal(0.0, 1.0, 1_000_000).astype(np.float32)
    for part in np.array_split(values, 7):  # merged over several arrays
        stats.add(part)
    assert stats.range(100.0) == (float(values.min()), float(values.max()))
    low, high = stats.range(99.9)  # 0.05 % cut on each side: about +-3.29 sigma
    assert 3.1 < high < 3.5 and -3.5 < low < -3.1
    relu = module.RangeStats()
    relu.add(np.maximum(values, 0))  # half zeros: the range starts at 0
    # A large tensor is histogrammed on a sample; its extremes are still exact.
    assert relu.count == module.SAMPLE < values.size
    low, high = relu.range(99.9)
    assert low == 0.0 and 3.0 < high < 3.6
    assert relu.range(100.0) == (0.0, float(values.max()))
