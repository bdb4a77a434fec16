"""Detectors on real pixels: the astronaut's face, box mapping across sizes, negatives, real photos."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import HAND_FACE, box_iou
from fiftyone_anonymizer import metrics
from fiftyone_anonymizer.core.boxes import FACE, PLATE, Detection

pytestmark = pytest.mark.models  # every test here loads the detection models


@pytest.fixture(scope="module")
def faces():
    from fiftyone_anonymizer.detectors import build_detector

    return build_detector(plates=None)


@pytest.fixture(scope="module")
def plates():
    from fiftyone_anonymizer.detectors import build_detector

    return build_detector(faces=None)


def resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def test_import_is_cheap():
    code = (
        "import sys, fiftyone_anonymizer.detectors as d; "
        "print(sorted(m for m in ('onnxruntime', 'onnx', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_finds_the_astronauts_face(faces, astronaut):
    found = faces.detect([astronaut])[0]
    assert all(d.label == FACE and 0.0 <= d.score <= 1.0 for d in found)
    best = max(found, key=lambda d: box_iou(d.box, HAND_FACE))
    assert box_iou(best.box, HAND_FACE) >= 0.5
    assert best.score >= 0.5
    # Nothing else in the picture is a face (flag, suit, rocket) at the default threshold.
    assert len(found) <= 2


@pytest.mark.parametrize("size", [200, 1000, 2600])
def test_same_relative_box_at_any_size(faces, astronaut, size):
    # A tiny input (upscaled for inference), a mid-size one and one larger than max_side
    # (downscaled) must all map back to the same relative face box.
    ref = max(faces.detect([astronaut])[0], key=lambda d: d.score).box
    got = max(faces.detect([resized(astronaut, size, size)])[0], key=lambda d: d.score).box
    assert np.allclose(got, ref, atol=0.03), (got, ref)


def test_negatives_give_nothing(faces, plates):
    rng = np.random.default_rng(0)
    gray = np.full((480, 640, 3), 128, dtype=np.uint8)
    ramp = np.broadcast_to(
        np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (480, 640, 3)
    ).copy()
    noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert faces.detect([gray, ramp]) == [[], []]
    assert plates.detect([gray, ramp]) == [[], []]
    assert len(faces.detect([noise])[0]) <= 1


def test_bad_input_is_refused_with_its_position(faces, astronaut):
    with pytest.raises(ValueError, match="image 1 of the batch"):
        faces.detect([astronaut, astronaut[..., 0]])
    assert faces.detect([]) == []


def test_letterbox_maps_points_back():
    from fiftyone_anonymizer.detectors.yolo_plates import letterbox

    image = np.zeros((300, 1200, 3), dtype=np.uint8)
    image[100:200, 600:900] = 255
    for stride, shape in ((32, (160, 640, 3)), (None, (640, 640, 3))):
        # 300 x 1200 at 640 / 1200 is 160 x 640: no padding needed on a stride of 32.
        boxed, factor, left, top = letterbox(image, stride=stride)
        assert boxed.shape == shape and factor == pytest.approx(640 / 1200)
        ys, xs = np.nonzero(boxed[..., 0] > 200)
        # The white block lands where x * factor + left says, within a pixel of resampling.
        assert xs.min() == pytest.approx(600 * factor + left, abs=1.5)
        assert ys.max() + 1 == pytest.approx(200 * factor + top, abs=1.5)
    assert (boxed[0, 0] == 114).all()  # grey padding
    boxed, factor, left, top = letterbox(np.zeros((301, 400, 3), np.uint8))
    assert boxed.shape == (512, 640, 3) and top == (512 - 482) // 2 and left == 0


def test_plate_box_maps_back_through_letterbox_padding(shared_data):
    # A real plate photo, then the same pixels inside a much wider, taller grey canvas: the
    # letterbox factor and padding change, the plate's pixel box must not (beyond resampling).
    from fiftyone_anonymizer.detectors.yolo_plates import YoloPlateDetector

    det = YoloPlateDetector(threshold=0.25, device="cpu")
    image, truths = next(_labelled(shared_data, "plates", 10))
    h, w = image.shape[:2]
    best = max(det.detect([image])[0], key=lambda d: d.score)
    assert box_iou(best.box, truths[0].box) >= 0.5
    padded = np.pad(image, ((0, h // 3), (w // 2, 0), (0, 0)), constant_values=114)
    moved = max(det.detect([padded])[0], key=lambda d: d.score)
    x0, y0, x1, y1 = moved.to_pixels(padded.shape[1], padded.shape[0])
    expected = np.array(best.to_pixels(w, h))
    tolerance = 0.1 * (expected[3] - expected[1])  # a tenth of the plate height
    assert np.allclose([x0 - w // 2, y0, x1 - w // 2, y1], expected, atol=tolerance)


def test_merge_suppresses_duplicates_per_class_and_takes_extra_sources(faces, astronaut):
    own = faces.detect([astronaut])[0]
    dup = [Detection(FACE, 0.99, own[0].box), Detection(PLATE, 0.5, own[0].box)]
    merged = faces.detect([astronaut], extra=[dup])[0]
    assert sum(d.label == FACE for d in merged) == len(own)  # the duplicate face went
    assert any(d.label == FACE and d.score == 0.99 for d in merged)  # the best of the two stays
    assert sum(d.label == PLATE for d in merged) == 1  # other classes never suppress


def test_describe_is_json_safe_provenance(faces):
    from fiftyone_anonymizer.detectors import DEFAULT_THRESHOLDS, describe

    info = json.loads(json.dumps(describe(faces)))
    (cf,) = info["backends"]
    assert cf["name"] == "centerface" and cf["model"]["licence"] == "MIT"
    assert len(cf["model"]["sha256"]) == 64
    assert info["thresholds"] == {FACE: DEFAULT_THRESHOLDS[FACE]}
    assert info["packages"]["onnxruntime"]


def test_build_detector_rejects_unknown_names():
    from fiftyone_anonymizer.detectors import build_detector

    with pytest.raises(ValueError, match="faces must be"):
        build_detector(faces="retinaface")
    with pytest.raises(ValueError, match="unknown labels"):
        build_detector(faces=None, plates=None, thresholds={"person": 0.5})


def test_mtcnn_backend_finds_the_face(astronaut):
    pytest.importorskip("mtcnn")
    from fiftyone_anonymizer.detectors import build_detector

    det = build_detector(faces="mtcnn", plates=None, effort="fast")
    found = det.detect([astronaut])[0]
    assert found and max(box_iou(d.box, HAND_FACE) for d in found) >= 0.4


def _labelled(shared_data, kind: str, n: int):
    entries = json.loads((shared_data / kind / "labels.json").read_text())
    entries = [e for e in entries if e["boxes"]][:: max(1, len(entries) // n)][:n]
    for e in entries:
        image = np.asarray(Image.open(shared_data / kind / e["file"]).convert("RGB"))
        h, w = image.shape[:2]
        truths = [
            Detection.from_pixels(
                b["label"], 1, (b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]), w, h
            )
            for b in e["boxes"]
        ]
        yield image, truths


def test_recall_on_real_face_photos(shared_data, faces):
    tallies = [
        metrics.score_image(t, faces.detect([im])[0], *im.shape[:2])
        for im, t in _labelled(shared_data, "faces", 10)
    ]
    total = metrics.combine(tallies)["face"]
    assert total.truths >= 20
    assert total.recall >= 0.85, total.as_dict()
    assert total.precision >= 0.5, total.as_dict()


def test_recall_on_real_plate_photos(shared_data, plates):
    tallies = [
        metrics.score_image(t, plates.detect([im])[0], *im.shape[:2])
        for im, t in _labelled(shared_data, "plates", 10)
    ]
    total = metrics.combine(tallies)["plate"]
    assert total.recall >= 0.9, total.as_dict()
    assert total.coverage >= 0.9, total.as_dict()


def test_float32_conversion_keeps_the_plate_model_s_answers(shared_data):
    from fiftyone_anonymizer.detectors.yolo_plates import YoloPlateDetector

    image, truths = next(_labelled(shared_data, "plates", 10))
    half = YoloPlateDetector(precision="float16", device="cpu").detect([image])[0]
    full = YoloPlateDetector(precision="float32", device="cpu").detect([image])[0]
    assert len(half) == len(full) >= 1
    for a, b in zip(
        sorted(half, key=lambda d: d.score), sorted(full, key=lambda d: d.score), strict=True
    ):
        assert abs(a.score - b.score) < 0.02 and box_iou(a.box, b.box) > 0.95


def test_plate_heads_decode_to_the_shipped_model_s_boxes(astronaut):
    # The graph is cut after the detection head and decoded here; on the shipped model's own
    # 640x640 input the boxes and scores must be the ones its full graph computes.
    import onnxruntime as ort

    from fiftyone_anonymizer.detectors.onnx_runtime import float16_to_float32
    from fiftyone_anonymizer.detectors.yolo_plates import (
        HEADS,
        YoloPlateDetector,
        decode_heads,
        letterbox,
    )

    cut = YoloPlateDetector(precision="float32", device="cpu")
    assert [o.name for o in cut.session.get_outputs()] == list(HEADS)
    whole = ort.InferenceSession(
        float16_to_float32(cut.model_path), providers=["CPUExecutionProvider"]
    )
    blob = letterbox(astronaut, stride=None)[0].transpose(2, 0, 1)[None].astype(np.float32) / 255
    out = whole.run(["output0"], {"images": blob})[0][0]
    floor = 0.001  # low, so that many candidates are compared
    keep = out[4] >= floor
    cx, cy, w, h = out[:4, keep]
    want = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    got, scores = decode_heads(cut.session.run(list(HEADS), {"images": blob}), 640, floor)
    assert len(scores) == keep.sum() >= 5
    a, b = np.lexsort((want[:, 0], out[4, keep])), np.lexsort((got[:, 0], scores))
    assert np.allclose(got[b], want[a], atol=1e-3) and np.allclose(
        scores[b], out[4, keep][a], atol=1e-5
    )
    # Any input size now runs (a 16:9 frame as 640x384 instead of 640x640).
    wide = letterbox(np.zeros((720, 1280, 3), np.uint8))[0]
    heads = cut.session.run(
        list(HEADS), {"images": wide.transpose(2, 0, 1)[None].astype(np.float32)}
    )
    assert [hd.shape[2:] for hd in heads] == [(48, 80), (24, 40), (12, 20)]


class _CountingSession:
    """Wraps an onnxruntime session and records the batch size of every run."""

    def __init__(self, session):
        self.session, self.batches = session, []

    def run(self, outputs, feeds):
        self.batches.append(next(iter(feeds.values())).shape[0])
        return self.session.run(outputs, feeds)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        x.label == y.label
        and abs(x.score - y.score) < 1e-5
        and np.allclose(x.box, y.box, atol=1e-5)
        for x, y in zip(a, b)
    )


def test_refine_runs_the_upscaled_mirrored_passes_only_for_small_faces(astronaut):
    from fiftyone_anonymizer.detectors.centerface import CenterFaceDetector

    common = {"threshold": 0.2, "device": "cpu", "precision": "float32", "flip": True}
    refine = CenterFaceDetector(min_side=800, refine_below=20, **common)
    counted = refine.session = _CountingSession(refine.session)
    plain = CenterFaceDetector(min_side=800, **common)
    native = CenterFaceDetector(min_side=1, **{**common, "flip": False})

    # A large face: the first look at the photo's own size is the answer (one run of one view).
    assert _same(refine.detect([astronaut])[0], native.detect([astronaut])[0])
    assert counted.batches == [1]

    # A crowd of ~15 px faces: the look finds them small, and the default passes (upscaled,
    # mirrored: one batch of 2) give the answer, exactly as without the first look.
    face = resized(astronaut[40:200, 150:300], 24, 26)
    crowd = np.tile(face, (12, 16, 1))
    counted.batches.clear()
    found = refine.detect([crowd])[0]
    assert counted.batches == [1, 2]
    assert _same(found, plain.detect([crowd])[0]) and len(found) >= 10

    # A photo already larger than max_side: both looks run at the same size, so only the
    # mirror image is added (batch of 1), and the answer is still the plain detector's.
    big = np.tile(resized(astronaut[40:200, 150:300], 32, 35), (72, 75, 1))  # 2520 x 2400
    counted.batches.clear()
    found = refine.detect([big])[0]
    assert counted.batches == [1, 1]
    assert _same(found, plain.detect([big])[0])


def test_plate_tiles_run_only_where_the_full_view_saw_a_small_candidate(shared_data):
    from fiftyone_anonymizer.detectors import PLATE_TILES
    from fiftyone_anonymizer.detectors.tiles import TiledDetector, TileSpec
    from fiftyone_anonymizer.detectors.yolo_plates import YoloPlateDetector

    common = {"threshold": 0.1, "precision": "float32", "device": "cpu"}
    gate = {"gate_score": 0.05, "gate_size": 1 / 16}
    gated = TiledDetector(YoloPlateDetector(**common), TileSpec(**PLATE_TILES, **gate))
    counted = gated.backend.session = _CountingSession(gated.backend.session)
    always = TiledDetector(YoloPlateDetector(**common), TileSpec(**PLATE_TILES))
    grey = np.full((720, 1280, 3), 128, dtype=np.uint8)
    assert gated.detect([grey]) == [[]] and len(counted.batches) == 1  # nothing seen: no tiles
    plain = always.backend.session = _CountingSession(always.backend.session)
    assert always.detect([grey]) == [[]] and len(plain.batches) == 3  # full view + 2 tiles

    # A 1280 x 720 frame with a plate: at most the tiles holding a small candidate run, and
    # every plate the ungated detector finds with some confidence is still found.
    entries = json.loads((shared_data / "plates" / "labels.json").read_text())
    entry = next(e for e in entries if (e["width"], e["height"]) == (1280, 720) and e["boxes"])
    image = np.asarray(Image.open(shared_data / "plates" / entry["file"]).convert("RGB"))
    counted.batches.clear()
    found = gated.detect([image])[0]
    assert 1 <= len(counted.batches) <= 3
    for d in always.detect([image])[0]:
        if d.score >= 0.3:
            assert max((box_iou(d.box, f.box) for f in found), default=0) > 0.7
