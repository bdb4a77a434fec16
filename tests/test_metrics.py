"""Metric maths on hand-made cases whose answers are worked out in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from fiftyone_anonymizer import metrics
from fiftyone_anonymizer.core.boxes import Detection


def face(box, score=1.0):
    return Detection("face", score, box)


def plate(box, score=1.0):
    return Detection("plate", score, box)


def test_greedy_one_to_one_by_score():
    # Truths A and B side by side. The best detection (0.9) overlaps A with IoU 0.6 and B with
    # IoU 0 -> takes A. A duplicate on A (0.8) finds A taken and B out of reach -> unmatched.
    # The 0.7 detection covers half of B: IoU = 0.5*0.1*0.1 / (0.01 + 0.01 - 0.005) = 1/3 >= 0.3.
    a, b = (0.0, 0.0, 0.1, 0.1), (0.5, 0.0, 0.1, 0.1)
    dets = [
        face((0.0, 0.0, 0.1, 0.075), 0.9),  # IoU with A = 0.0075/0.01 = 0.75
        face((0.0, 0.0, 0.1, 0.1), 0.8),
        face((0.55, 0.0, 0.1, 0.1), 0.7),
    ]
    m = metrics.match_detections([face(a), face(b)], dets)["face"]
    assert m.truth_matched.tolist() == [True, True]
    assert m.detection_matched.tolist() == [True, False, True]
    assert m.pairs == ((0, 0), (1, 2))


def test_score_order_beats_iou_order():
    # One truth, two candidates: the 0.9 box has IoU 0.4, the 0.5 box IoU 0.9. Greedy by score
    # gives the truth to the 0.9 box (a greedy-by-IoU matcher would pick the other).
    truths = np.array([[0.0, 0.0, 1.0, 1.0]])
    dets = np.array([[0.0, 0.0, 1.0, 0.9], [0.0, 0.0, 1.0, 0.4]])
    m = metrics.match_boxes(truths, dets, np.array([0.5, 0.9]))
    assert m.pairs == ((0, 1),)
    assert m.detection_matched.tolist() == [False, True]


def test_detection_takes_its_best_unmatched_truth():
    # D (0.9) overlaps A with IoU 0.5/3 and B with IoU 1/1.5 -> B; E (0.5) then takes A (IoU 0.5).
    truths = np.array([[0.0, 0.0, 2.0, 1.0], [2.0, 0.0, 1.0, 1.0]])
    dets = np.array([[1.5, 0.0, 1.5, 1.0], [0.0, 0.0, 1.0, 1.0]])
    m = metrics.match_boxes(truths, dets, np.array([0.9, 0.5]))
    assert sorted(m.pairs) == [(0, 1), (1, 0)]


def test_iou_threshold_is_inclusive():
    # Detection = left 30 % of the truth: IoU = 0.3 exactly.
    truth = face((0.0, 0.0, 0.5, 0.5))
    det = face((0.0, 0.0, 0.15, 0.5))
    assert metrics.match_detections([truth], [det])["face"].truth_matched.tolist() == [True]
    assert metrics.match_detections([truth], [det], iou_threshold=0.31)[
        "face"
    ].truth_matched.tolist() == [False]


def test_labels_never_match_across_classes():
    m = metrics.match_detections([face((0.1, 0.1, 0.2, 0.2))], [plate((0.1, 0.1, 0.2, 0.2))])
    assert m["face"].truth_matched.tolist() == [False]
    assert m["plate"].detection_matched.tolist() == [False]


def test_covered_fractions_on_a_mask():
    mask = np.zeros((10, 20), dtype=bool)
    mask[:, :10] = True  # left half obscured
    truths = [
        face((0.0, 0.0, 0.5, 1.0)),  # exactly the left half -> 1.0
        face((0.25, 0.0, 0.5, 1.0)),  # columns 5..15 -> half inside -> 0.5
        face((0.5, 0.5, 0.5, 0.5)),
    ]  # right half -> 0.0
    assert metrics.covered_fractions(truths, mask).tolist() == [1.0, 0.5, 0.0]


def test_score_image_counts_and_rates():
    # Two faces, one found; a plate found twice (one duplicate). The mask hides the first face
    # fully and the plate 60 % (below the 70 % rule).
    h, w = 100, 100
    truths = [face((0.0, 0.0, 0.2, 0.2)), face((0.5, 0.5, 0.2, 0.2)), plate((0.0, 0.8, 0.5, 0.1))]
    dets = [
        face((0.0, 0.0, 0.2, 0.2), 0.9),
        plate((0.0, 0.8, 0.5, 0.1), 0.8),
        plate((0.0, 0.8, 0.4, 0.1), 0.7),
    ]
    mask = np.zeros((h, w), dtype=bool)
    mask[0:20, 0:20] = True
    mask[80:90, 0:30] = True
    t = metrics.score_image(truths, dets, h, w, mask=mask)
    assert (t["face"].truths, t["face"].matched_truths, t["face"].covered_truths) == (2, 1, 1)
    assert (t["plate"].detections, t["plate"].matched_detections, t["plate"].covered_truths) == (
        2,
        1,
        0,
    )
    total = metrics.combine([t, t])
    assert total["face"].recall == pytest.approx(0.5)
    assert total["plate"].precision == pytest.approx(0.5)
    assert total["plate"].coverage == 0.0
    assert total["face"].images == 2


def test_empty_cases_are_perfect_not_nan():
    t = metrics.Tally()
    assert (t.recall, t.precision, t.coverage) == (1.0, 1.0, 1.0)
    assert metrics.match_detections([], []) == {}


def test_coverage_uses_the_blur_geometry():
    # A detection equal to the truth is fully obscured once the blur grows it (box_scale > 1);
    # a truth elsewhere is not obscured at all.
    truths = [face((0.3, 0.3, 0.2, 0.2)), face((0.8, 0.0, 0.1, 0.1))]
    t = metrics.score_image(truths, [face((0.3, 0.3, 0.2, 0.2), 0.9)], 200, 200)
    assert t["face"].covered_truths == 1
    assert t["face"].coverage == 0.5


def test_count_text_reads_as_english():
    from fiftyone_anonymizer.core.boxes import count_text

    assert count_text({"plate": 1, "face": 14}) == "14 faces, 1 plate"
    assert count_text({"face": 0}) == count_text({}) == "no boxes"
