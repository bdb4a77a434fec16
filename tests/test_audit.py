"""Audit: residual faces and plates on the copies, the review tag, ground-truth numbers.

The numbers the audit reports are checked against an independent computation in this file
(plain NumPy: greedy IoU matching, hard-edged obscured masks), not against the library's own
helpers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import HAND_FACE, PLUGIN_NAME, box_iou

FACE_BOX = (0.30, 0.05, 0.28, 0.36)  # the astronaut's head, relative [x, y, w, h]
N_FACE_IMAGES = 15
N_PLATE_IMAGES = 8
#: The deliberately high confidence floor of the first anonymization (so it misses faces).
HIGH = {"face": 0.8, "plate": 0.75}


# --------------------------------------------------------------------------------------------
# Independent reference (plain NumPy)


def _scaled_px(box, scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a relative box grown ``scale`` times around its centre, in whole
    pixels (floor(v + 0.5)), clipped, at least one pixel."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    rx0, ry0 = max(0.0, cx - w * scale / 2), max(0.0, cy - h * scale / 2)
    rx1, ry1 = min(1.0, cx + w * scale / 2), min(1.0, cy + h * scale / 2)
    x0 = min(max(int(np.floor(rx0 * width + 0.5)), 0), width - 1)
    y0 = min(max(int(np.floor(ry0 * height + 0.5)), 0), height - 1)
    x1 = min(max(int(np.floor(rx1 * width + 0.5)), x0 + 1), width)
    y1 = min(max(int(np.floor(ry1 * height + 0.5)), y0 + 1), height)
    return x0, y0, x1, y1


def _hard_mask(height: int, width: int, boxes, scale: float) -> np.ndarray:
    """Obscured pixels with hard edges: faces as inscribed ellipses, plates as rectangles."""
    mask = np.zeros((height, width), dtype=bool)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.int64)
    for label, box in boxes:
        if box[2] <= 0 or box[3] <= 0:
            continue
        x0, y0, x1, y1 = _scaled_px(box, scale, width, height)
        inside = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
        if label == "face":
            a, b = x1 - x0, y1 - y0
            inside &= (2 * yy + 1 - y0 - y1) ** 2 * a * a + (
                2 * xx + 1 - x0 - x1
            ) ** 2 * b * b <= a * a * b * b
        mask |= inside
    return mask


def _share_covered(mask: np.ndarray, box) -> float:
    height, width = mask.shape
    x, y, w, h = box
    c0, r0 = min(int(np.rint(x * width)), width - 1), min(int(np.rint(y * height)), height - 1)
    c1 = min(max(int(np.rint((x + w) * width)), c0 + 1), width)
    r1 = min(max(int(np.rint((y + h) * height)), r0 + 1), height)
    return float(mask[r0:r1, c0:c1].mean())


def _matched_truths(truths, preds, iou: float = 0.3) -> int:
    """Greedy one-to-one matching, highest confidence first; how many truths were found."""
    taken = [False] * len(truths)
    for _conf, pbox in sorted(preds, key=lambda p: -p[0]):
        best, best_iou = None, iou
        for j, tbox in enumerate(truths):
            v = box_iou(pbox, tbox)
            if not taken[j] and v >= best_iou:
                best, best_iou = j, v
        if best is not None:
            taken[best] = True
    return sum(taken)


# --------------------------------------------------------------------------------------------
# Helpers


def _astronaut_jpeg(path: Path) -> Path:
    """The astronaut as a JPEG in a ``src`` folder beside ``path`` (copies go beside it, never
    inside a source folder)."""
    from skimage import data

    path = path.parent / "src" / path.name
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(data.astronaut()).save(path, quality=95)
    return path


def _boxes(fo, boxes, label="face", confidence=None):
    return fo.Detections(
        detections=[
            fo.Detection(label=label, bounding_box=list(b), confidence=confidence) for b in boxes
        ]
    )


def _run(uri_name, view, params):
    import fiftyone.operators as foo

    result = foo.execute_operator(f"{PLUGIN_NAME}/{uri_name}", {"view": view, "params": params})
    result.raise_exceptions()
    return result.result


class _FixedDetector:
    """Stands in for the models: returns the same boxes for every image."""

    def __init__(self, detections):
        self.detections = list(detections)
        self.calls = 0

    def detect(self, images):
        self.calls += 1
        return [list(self.detections) for _ in images]


# --------------------------------------------------------------------------------------------
# The residual rule, without models


def test_residual_rule_is_the_70_percent_cover_rule():
    from fiftyone_anonymizer.core.boxes import Detection
    from fiftyone_anonymizer.jobs.audit import RESIDUAL_MIN_COVERED
    from fiftyone_anonymizer.jobs.audit_tiers import tier_residuals

    assert RESIDUAL_MIN_COVERED == 0.7
    mask = np.zeros((100, 100), dtype=bool)
    mask[:, :50] = True  # left half obscured
    inside = Detection("face", 0.9, (0.1, 0.1, 0.2, 0.2))
    outside = Detection("face", 0.3, (0.6, 0.1, 0.2, 0.2))
    straddling_60 = Detection("plate", 0.5, (0.38, 0.5, 0.2, 0.1))  # 12 of 20 columns obscured
    straddling_80 = Detection("plate", 0.5, (0.34, 0.5, 0.2, 0.1))  # 16 of 20 columns obscured
    found = tier_residuals([inside, outside, straddling_60, straddling_80], mask)
    assert [(r.detection, round(r.covered, 2)) for r in found] == [
        (outside, 0.0),
        (straddling_60, 0.6),
    ]


def test_stale_copy_and_residual_are_flagged_then_cleared(make_dataset, tmp_path):
    """With a stand-in detector: the rule, the tag, the stored fields and the stale check."""
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images, audit_anonymization
    from fiftyone_anonymizer.core.boxes import Detection

    src = _astronaut_jpeg(tmp_path / "astronaut.jpg")
    other = (0.70, 0.60, 0.15, 0.15)
    ds = make_dataset([fo.Sample(filepath=str(src), boxes=_boxes(fo, [FACE_BOX]))])
    anonymize_images(ds, tmp_path / "out", label_fields=["boxes"])
    detector = _FixedDetector([Detection("face", 0.9, FACE_BOX), Detection("face", 0.4, other)])

    report = audit_anonymization(ds, detector=detector)
    sample = ds.first()
    assert report.audited == 1 and report.flagged == 1 and not report.stale
    assert dict(report.residuals_per_class) == {"face": 1}
    (res,) = sample.anonymizer_residual.detections
    assert res.bounding_box == pytest.approx(list(other)) and res.covered == 0.0
    assert "needs_review" in sample.tags
    assert report.worst[0]["id"] == sample.id and report.worst[0]["residuals"] == 1

    # The reviewer adds the missed box but forgets to rerun anonymize: still flagged (stale).
    sample.boxes = _boxes(fo, [FACE_BOX, other])
    sample.save()
    report = audit_anonymization(ds, detector=detector)
    assert report.stale == [sample.id] and report.flagged == 1

    # Rerun anonymize on just that sample: no residual, the tag is removed.
    anonymize_images(ds.match_tags("needs_review"), tmp_path / "out", label_fields=["boxes"])
    report = audit_anonymization(ds, detector=detector)
    sample.reload()
    assert report.flagged == 0 and not report.stale and not report.residuals_per_class
    assert sample.anonymizer_residual.detections == []
    assert "needs_review" not in sample.tags


def test_only_the_classes_anonymize_obscured_are_audited(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images, audit_anonymization
    from fiftyone_anonymizer.core.boxes import Detection

    src = _astronaut_jpeg(tmp_path / "astronaut.jpg")
    ds = make_dataset([fo.Sample(filepath=str(src), boxes=_boxes(fo, [FACE_BOX]))])
    anonymize_images(ds, tmp_path / "out", label_fields=["boxes"], classes=["face"])
    plate = Detection("plate", 0.8, (0.05, 0.8, 0.2, 0.08))  # plates were not asked for
    report = audit_anonymization(ds, detector=_FixedDetector([plate]))
    assert report.flagged == 0 and not report.residuals_per_class


def test_audit_needs_an_anonymization_first(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import audit_anonymization

    ds = make_dataset([fo.Sample(filepath=str(_astronaut_jpeg(tmp_path / "a.jpg")))])
    with pytest.raises(ValueError, match="run anonymize_images first"):
        audit_anonymization(ds, detector=_FixedDetector([]))


# --------------------------------------------------------------------------------------------
# The astronaut, with the real models (always runs)


@pytest.mark.models
def test_astronaut_missed_face_is_flagged_then_cleared(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import (
        DetectorConfig,
        anonymize_images,
        audit_anonymization,
        detect_faces_and_plates,
    )

    src = _astronaut_jpeg(tmp_path / "astronaut.jpg")
    ds = make_dataset(
        [
            fo.Sample(
                filepath=str(src), nothing=fo.Detections(), ground_truth=_boxes(fo, [HAND_FACE])
            )
        ]
    )

    # Anonymized with no boxes at all: the copy shows her face (it scores about 0.87). The
    # default audit thresholds also flag false alarms on her suit collar next to the blurred
    # face (up to about 0.4 in the balanced level's 800 px look); stay well above them.
    strict = DetectorConfig(face_threshold=0.5, plate_threshold=0.5)
    anonymize_images(ds, tmp_path / "out", label_fields=["nothing"])
    report = audit_anonymization(ds, gt_field="ground_truth", detector=strict)
    sample = ds.first()
    assert report.residuals_per_class["face"] >= 1
    faces = [d for d in sample.anonymizer_residual.detections if d.label == "face"]
    assert max(box_iou(d.bounding_box, HAND_FACE) for d in faces) >= 0.3  # it is her face
    assert "needs_review" in sample.tags
    assert sample.anonymizer_uncovered == 1
    assert report.per_class["face"]["coverage"] == 0.0
    assert report.per_class["face"]["uncovered"] == 1

    # Detected and anonymized again: nothing left, the tag is gone.
    detect_faces_and_plates(ds)
    anonymize_images(ds, tmp_path / "out", label_fields=["anonymizer_detections"])
    report = audit_anonymization(ds, gt_field="ground_truth", detector=strict)
    sample.reload()
    assert not report.residuals_per_class, sample.anonymizer_residual
    assert sample.anonymizer_residual.detections == []
    assert "needs_review" not in sample.tags, report.to_dict()
    assert sample.anonymizer_uncovered == 0
    assert report.per_class["face"] == {
        "truths": 1,
        "recall": 1.0,
        "coverage": 1.0,
        "uncovered": 0,
        "residuals": 0,
    }
    assert report.pred_field == "anonymizer_detections"
    assert "anonymizer_eval" in ds.list_evaluations()
    assert json.loads(json.dumps(report.to_dict()))["flagged"] == 0


@pytest.mark.models
def test_operator_runs_through_fiftyone(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images

    src = _astronaut_jpeg(tmp_path / "astronaut.jpg")
    ds = make_dataset(
        [
            fo.Sample(
                filepath=str(src), nothing=fo.Detections(), ground_truth=_boxes(fo, [HAND_FACE])
            )
        ]
    )
    anonymize_images(ds, tmp_path / "out", label_fields=["nothing"])
    out = _run(
        "audit_anonymization",
        ds.view(),
        {"gt_field": "ground_truth", "tag": "check_me", "effort": "fast"},
    )
    assert out["audited"] == 1 and out["flagged"] == 1
    assert out["residuals_per_class"]["face"] >= 1
    assert out["per_class"]["face"]["uncovered"] == 1
    assert "face" in out["summary"]
    assert ds.count_sample_tags() == {"check_me": 1}


# --------------------------------------------------------------------------------------------
# Real photos with hand boxes (../shared/data)


def _subset(shared: Path) -> list[tuple[Path, int, int, list]]:
    faces = [e for e in json.loads((shared / "faces" / "labels.json").read_text()) if e["boxes"]][
        :N_FACE_IMAGES
    ]
    plates = [
        e
        for e in json.loads((shared / "plates" / "labels.json").read_text())
        if "openalpr_eu" in e["file"] or "openalpr_us" in e["file"]
    ]
    plates = plates[:: max(1, len(plates) // N_PLATE_IMAGES)][:N_PLATE_IMAGES]
    out = []
    for folder, entries in (("faces", faces), ("plates", plates)):
        for e in entries:
            w, h = e["width"], e["height"]
            boxes = [
                (b["label"], (b["x"] / w, b["y"] / h, b["w"] / w, b["h"] / h)) for b in e["boxes"]
            ]
            out.append((shared / folder / e["file"], w, h, boxes))
    return out


@pytest.fixture(scope="module")
def shared_dataset(shared_data):
    """The subset with its boxes as ground truth and our detections (one quick pass)."""
    import fiftyone as fo

    from fiftyone_anonymizer import DetectorConfig, detect_faces_and_plates

    items = _subset(shared_data)
    ds = fo.Dataset(f"audit-shared-{id(items)}", overwrite=True)
    ds.add_samples(
        [
            fo.Sample(
                filepath=str(path),
                ground_truth=fo.Detections(
                    detections=[
                        fo.Detection(label=label, bounding_box=list(box)) for label, box in boxes
                    ]
                ),
            )
            for path, _w, _h, boxes in items
        ]
    )
    detect_faces_and_plates(ds, detector=DetectorConfig(effort="fast"))
    yield ds
    fo.delete_dataset(ds.name)


@pytest.mark.models
def test_shared_data_audit_finds_the_misses_and_the_numbers_hold(shared_dataset, tmp_path):
    from fiftyone_anonymizer import anonymize_images, audit_anonymization
    from fiftyone_anonymizer.blur import BlurSettings

    ds = shared_dataset
    scale = 1.3
    settings = BlurSettings(feather=1, box_scale=scale)  # hard edges: a simple reference mask
    # Only boxes scoring at least HIGH are obscured: the first pass misses many faces.
    anonymize_images(ds, tmp_path / "high", settings=settings, min_confidence=HIGH)
    report = audit_anonymization(ds, gt_field="ground_truth")
    print("\n" + report.summary())

    # Independent numbers: recall by greedy matching, coverage from a hard-edged mask.
    truths_n, found_n, covered_n, uncovered_by_id = {}, {}, {}, {}
    leaks, leaks_flagged = 0, 0
    for s in ds.select_fields(
        [
            "ground_truth",
            "anonymizer_detections",
            "anonymizer_residual",
            "anonymizer_residual_possible",
            "anonymized_filepath",
        ]
    ):
        with Image.open(s.anonymized_filepath) as img:
            width, height = img.size
        preds = [
            (d.label, d.confidence, d.bounding_box)
            for d in s.anonymizer_detections.detections
            if d.confidence >= HIGH[d.label]
        ]
        mask = _hard_mask(height, width, [(lb, b) for lb, _c, b in preds], scale)
        uncovered = 0
        residual_boxes = [  # likely and possible misses
            d.bounding_box
            for d in s.anonymizer_residual.detections + s.anonymizer_residual_possible.detections
        ]
        for label in ("face", "plate"):
            truths = [d.bounding_box for d in s.ground_truth.detections if d.label == label]
            mine = [(c, b) for lb, c, b in preds if lb == label]
            truths_n[label] = truths_n.get(label, 0) + len(truths)
            found_n[label] = found_n.get(label, 0) + _matched_truths(truths, mine)
            for t in truths:
                if _share_covered(mask, t) >= 0.7:
                    covered_n[label] = covered_n.get(label, 0) + 1
                else:
                    uncovered += 1
                    leaks += 1
                    leaks_flagged += any(box_iou(r, t) >= 0.3 for r in residual_boxes)
        uncovered_by_id[s.id] = uncovered

    assert leaks > 0, "the high threshold should have left some true boxes clear"
    assert dict(zip(*ds.values(["id", "anonymizer_uncovered"]))) == uncovered_by_id
    for label in ("face", "plate"):
        row = report.per_class[label]
        assert row["truths"] == truths_n[label]
        assert row["recall"] == pytest.approx(found_n[label] / truths_n[label])
        assert row["coverage"] == pytest.approx(covered_n.get(label, 0) / truths_n[label])
    # The audit finds the misses: residual detections lie on the true boxes left clear.
    assert sum(report.residuals_per_class.values()) > 0
    assert leaks_flagged / leaks >= 0.5, (leaks_flagged, leaks)
    flagged = set(ds.match_tags("needs_review").values("id"))
    assert {sid for sid, n in uncovered_by_id.items() if n} <= flagged
    assert report.worst and report.worst[0]["uncovered"] == max(uncovered_by_id.values())
    print(
        f"audit: {leaks_flagged} of {leaks} uncovered true boxes have a residual detection; "
        f"per class {report.per_class}"
    )


@pytest.mark.models
def test_shared_data_anonymized_with_ground_truth_leaves_no_true_box_clear(
    shared_dataset, tmp_path
):
    """Coverage does not depend on the audit's detector (the test above runs the real one)."""
    from fiftyone_anonymizer import anonymize_images, audit_anonymization

    ds = shared_dataset
    anonymize_images(
        ds, tmp_path / "gt", label_fields=["ground_truth"], output_field="anonymized_gt"
    )
    report = audit_anonymization(
        ds,
        output_field="anonymized_gt",
        gt_field="ground_truth",
        residual_field="residual_gt",
        uncovered_field="uncovered_gt",
        tag="review_gt",
        eval_key="gt_eval",
        detector=_FixedDetector([]),
    )
    print("\n" + report.summary())
    assert report.audited == len(ds)
    assert set(report.per_class) == {"face", "plate"}
    assert all(
        row["uncovered"] == 0 and row["coverage"] == 1.0 for row in report.per_class.values()
    )
    assert set(ds.values("uncovered_gt")) == {0}
    assert report.flagged == 0 and not ds.match_tags("review_gt")
    assert report.pred_field == "anonymizer_detections"  # our detector's recall, for the record


@pytest.mark.models
def test_the_effort_level_is_recorded_and_the_audit_looks_as_hard(make_dataset, tmp_path):
    """The detect job records its effort level with the labels; the audit reads it back and
    looks with the same eyes (at its own low thresholds), and records what it used."""
    import fiftyone as fo

    from fiftyone_anonymizer import (
        DetectorConfig,
        anonymize_images,
        audit_anonymization,
        detect_faces_and_plates,
    )
    from fiftyone_anonymizer.jobs import copies
    from fiftyone_anonymizer.jobs.audit import AUDIT_THRESHOLDS, audit_detector

    ds = make_dataset([fo.Sample(filepath=str(_astronaut_jpeg(tmp_path / "astronaut.jpg")))])
    for effort in ("thorough", "fast"):
        detect_faces_and_plates(ds, detector=DetectorConfig(effort=effort), overwrite=True)
        info = ds.get_field("anonymizer_detections").info
        assert info["config"]["effort"] == effort and info["effort"] == effort
        anonymize_images(ds, tmp_path / "out", label_fields=["anonymizer_detections"])
        recipe = copies.AnonymizeRecipe.read(ds.view(), "anonymized_filepath")
        config = audit_detector(ds.view(), recipe)
        assert config.effort == effort and config.face_threshold == AUDIT_THRESHOLDS["face"]
        report = audit_anonymization(ds)
        assert report.settings["detector"]["config"]["effort"] == effort
