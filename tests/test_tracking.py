"""Tracks and temporal fill over per-frame detections (synthetic boxes, no models)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fiftyone_anonymizer.core.boxes import FACE, PLATE, Detection
from fiftyone_anonymizer.detectors.tracking import (
    Tracker,
    TrackSettings,
    detections_of,
    track_video,
)

PLAIN = TrackSettings(max_gap=0, extend=0, min_length=1, union_radius=0)


def exact(**values) -> TrackSettings:
    """Settings without the temporal union, so boxes can be compared exactly."""
    return TrackSettings(union_radius=0, **values)


def det(
    x: float, y: float, w: float = 0.1, h: float = 0.1, score: float = 0.9, label: str = FACE
) -> Detection:
    return Detection(label, score, (x, y, w, h))


def moving(n: int, x0: float, dx: float, y: float = 0.4, **kw) -> list[Detection]:
    return [det(x0 + i * dx, y, **kw) for i in range(n)]


def frames_of(*tracks: list[Detection | None]) -> list[list[Detection]]:
    """Per-frame lists from per-object sequences (None = not detected in that frame)."""
    n = max(len(t) for t in tracks)
    return [[t[i] for t in tracks if i < len(t) and t[i] is not None] for i in range(n)]


def test_settings_round_trip_and_validation():
    s = TrackSettings(
        max_gap=3,
        extend=1,
        extend_mode="velocity",
        min_length=2,
        keep_score=0.6,
        start_scores=(("face", 0.3), ("plate", 0.15)),
    )
    d = s.to_dict()
    assert d["start_scores"] == {"face": 0.3, "plate": 0.15}
    assert TrackSettings.from_dict(json.loads(json.dumps(d))) == s
    assert s.start_score("face") == 0.3 and s.start_score("tattoo") == 0.0
    with pytest.raises(ValueError, match="unknown track settings"):
        TrackSettings.from_dict({"max_gapp": 3})
    with pytest.raises(ValueError, match="extend_mode"):
        TrackSettings(extend_mode="guess")
    with pytest.raises(ValueError, match=">= 0"):
        TrackSettings(max_gap=-1)
    with pytest.raises(ValueError, match="min_length"):
        TrackSettings(min_length=0)


def test_one_object_keeps_one_track_id_and_its_boxes():
    seq = moving(10, 0.1, 0.02)
    out = track_video(frames_of(seq), PLAIN)
    assert [len(f) for f in out] == [1] * 10
    assert {f[0].track for f in out} == {0}
    assert all(f[0].kind == "detected" and not f[0].filled for f in out)
    assert [f[0].detection for f in out] == seq  # detected boxes come out unchanged


def test_gap_up_to_k_is_interpolated_and_marked():
    seq: list[Detection | None] = list(moving(12, 0.1, 0.02))
    seq[4] = seq[5] = seq[6] = None  # missed three frames
    seq[3] = det(0.16, 0.4, score=0.8)
    seq[7] = det(0.24, 0.4, score=0.4)
    out = track_video(frames_of(seq), exact(max_gap=3, extend=0))
    assert all(len(f) == 1 for f in out)
    assert {f[0].track for f in out} == {0}
    assert [f[0].kind for f in out[3:8]] == ["detected"] + ["interpolated"] * 3 + ["detected"]
    mid = out[5][0].detection  # halfway: box and score halfway
    np.testing.assert_allclose(mid.box, (0.20, 0.4, 0.1, 0.1), atol=1e-9)
    assert mid.score == pytest.approx(0.6)


def test_gap_longer_than_k_is_not_filled():
    seq: list[Detection | None] = list(moving(12, 0.1, 0.02))
    for i in (4, 5, 6, 7):
        seq[i] = None
    out = track_video(frames_of(seq), exact(max_gap=3, extend=0))
    assert [len(f) for f in out] == [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]
    assert out[0][0].track != out[8][0].track  # a new track after the lost one


def test_extension_holds_edge_boxes_and_stops_at_the_video_ends():
    seq: list[Detection | None] = [None] * 4 + list(moving(4, 0.3, 0.05)) + [None] * 4
    out = track_video(frames_of(seq), exact(max_gap=0, extend=2))
    assert [len(f) for f in out] == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    assert [out[i][0].kind for i in (2, 3, 8, 9)] == ["extended"] * 4
    assert out[2][0].detection.box == pytest.approx(seq[4].box)  # held
    assert out[9][0].detection.box == pytest.approx(seq[7].box)
    # at the very start and end of the video the extension is cut, not wrapped
    edge = track_video(frames_of(moving(3, 0.3, 0.05)), exact(max_gap=0, extend=5))
    assert [len(f) for f in edge] == [1, 1, 1]


def test_velocity_extension_moves_on_and_is_clipped_to_the_frame():
    seq: list[Detection | None] = list(moving(4, 0.55, 0.1)) + [None] * 3  # last x 0.85..0.95
    assert len({d.track for f in track_video(frames_of(seq), PLAIN) for d in f}) == 1
    out = track_video(frames_of(seq), exact(max_gap=0, extend=3, extend_mode="velocity"))
    assert out[4][0].kind == "extended"
    # moved on by one step (x 0.95..1.05) and clipped at the frame's right edge
    assert out[4][0].detection.box == pytest.approx((0.95, 0.4, 0.05, 0.1))
    assert out[5] == [] and out[6] == []  # past the edge: nothing left to hide
    held = track_video(frames_of(seq), exact(max_gap=0, extend=3))
    assert [d.detection.box for f in held[4:] for d in f] == [seq[3].box] * 3


def test_short_low_score_tracks_dropped_by_the_rule():
    good = moving(10, 0.1, 0.01)
    blip_low = [None] * 5 + [det(0.7, 0.7, score=0.3)]
    blip_high = [None] * 7 + [det(0.5, 0.1, score=0.8)]
    per_frame = frames_of(good, blip_low, blip_high)
    keep_all = track_video(per_frame, exact(max_gap=2, extend=0, min_length=1))
    assert sum(len(f) for f in keep_all) == 12
    rule = exact(max_gap=2, extend=0, min_length=2, keep_score=0.5)
    dropped = track_video(per_frame, rule)
    assert sum(len(f) for f in dropped) == 11  # the low-score blip goes, the confident one stays
    assert all(d.detection.score != 0.3 for f in dropped for d in f)
    assert sorted({d.track for f in dropped for d in f}) == [0, 1]  # ids stay consecutive


def test_fast_motion_without_overlap_keeps_one_track():
    seq = moving(8, 0.05, 0.095)  # about a box width per frame: almost no overlap (IoU 0.03)
    out = track_video(frames_of(seq), PLAIN)
    assert {f[0].track for f in out} == {0}
    apart = track_video(frames_of(moving(4, 0.05, 0.25)), PLAIN)  # 2.5 box sizes: not the same
    assert len({f[0].track for f in apart}) == 4


def test_weak_detections_continue_tracks_but_start_none():
    seq = moving(10, 0.1, 0.02)
    dipping = [d if i < 3 else Detection(FACE, 0.08, d.box) for i, d in enumerate(seq)]
    blip = [None] * 4 + [det(0.7, 0.7, score=0.1)]
    settings = exact(max_gap=2, extend=0, start_scores=((FACE, 0.2),))
    out = track_video(frames_of(dipping, blip), settings)
    assert [len(f) for f in out] == [1] * 10  # the dipping face stays, the weak blip is ignored
    assert {d.track for f in out for d in f} == {0}
    assert all(d.kind == "detected" for f in out for d in f)
    # a strong detection beside a weak one: the strong one continues the track
    strong_first = [[det(0.1, 0.1)], [det(0.12, 0.1, score=0.1), det(0.11, 0.1, score=0.9)]]
    out = track_video(strong_first, settings)
    assert out[1][0].detection.score == 0.9 and len(out[1]) == 1


def test_crossing_tracks_keep_their_ids():
    a = moving(20, 0.1, 0.04, y=0.40)  # left to right
    b = moving(20, 0.86, -0.04, y=0.42)  # right to left, crossing in the middle
    out = track_video(frames_of(a, b), PLAIN)
    ids_a = {d.track for f in out for d in f if d.detection in a}
    ids_b = {d.track for f in out for d in f if d.detection in b}
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


def test_crossing_with_a_miss_during_the_crossing_keeps_ids_and_fills():
    a: list[Detection | None] = list(moving(20, 0.1, 0.04, y=0.40))
    b: list[Detection | None] = list(moving(20, 0.86, -0.04, y=0.42))
    a[9] = a[10] = None  # hidden behind b while they cross
    out = track_video(frames_of(a, b), exact(max_gap=3, extend=0))
    assert all(len(f) == 2 for f in out)
    first_a = next(d.track for d in out[0] if d.detection == a[0])
    filled = [d for f in out[9:11] for d in f if d.kind == "interpolated"]
    assert len(filled) == 2 and {d.track for d in filled} == {first_a}


def test_classes_are_tracked_separately():
    face = moving(6, 0.3, 0.0)
    plate: list[Detection | None] = [det(0.3, 0.4, label=PLATE) for _ in range(6)]
    plate[2] = None
    out = track_video(frames_of(face, plate), exact(max_gap=2, extend=0))
    # the face never takes over the plate's track while the plate is missed
    assert all({d.detection.label for d in f} == {FACE, PLATE} for f in out)
    tracks = {(d.track, d.detection.label) for f in out for d in f}
    assert len(tracks) == 2
    assert [d.kind for d in out[2] if d.detection.label == PLATE] == ["interpolated"]


def test_streaming_matches_whole_video_and_respects_max_delay():
    rng = np.random.default_rng(0)
    objects = []
    for _ in range(6):
        start, length = int(rng.integers(0, 60)), int(rng.integers(1, 40))
        x, y, dx = rng.uniform(0.1, 0.8), rng.uniform(0.1, 0.8), rng.uniform(-0.01, 0.01)
        seq: list[Detection | None] = [None] * start
        for i in range(length):
            keep = rng.random() > 0.2  # the detector misses one frame in five
            seq.append(det(x + dx * i, y, score=float(rng.uniform(0.2, 1))) if keep else None)
        objects.append(seq)
    per_frame = frames_of(*objects) + [[] for _ in range(5)]
    for settings in (
        TrackSettings(),
        TrackSettings(max_gap=4, extend=3, min_length=3, union_radius=2),
        TrackSettings(max_gap=0, extend=0),
    ):
        whole = track_video(per_frame, settings)
        tracker = Tracker(settings)
        streamed: list = []
        for i, dets in enumerate(per_frame):
            for index, boxes in tracker.push(dets):
                assert index == len(streamed)
                assert i - index <= tracker.max_delay
                streamed.append(boxes)
        streamed.extend(boxes for _, boxes in tracker.flush())
        assert streamed == whole
        assert len(whole) == len(per_frame)


def test_fill_recovers_missed_frames_of_a_flickering_detector():
    truth = moving(30, 0.05, 0.02)
    seen: list[Detection | None] = [d if i % 4 else None for i, d in enumerate(truth)]
    seen[0] = truth[0]
    plain = track_video(frames_of(seen), PLAIN)
    filled = track_video(frames_of(seen), exact(max_gap=2, extend=1))
    assert sum(1 for f in plain if not f) == 7
    assert all(len(f) == 1 for f in filled)
    assert detections_of(filled[4])[0].box == pytest.approx(truth[4].box)


def test_union_over_neighbouring_frames_hides_a_box_that_came_out_small():
    seq = moving(7, 0.3, 0.01)
    seq[3] = Detection(FACE, 0.9, (0.34, 0.42, 0.05, 0.05))  # too small and off in one frame
    out = track_video(frames_of(seq), TrackSettings(max_gap=0, extend=0, union_radius=1))
    x, y, w, h = out[3][0].detection.box
    # holds the neighbours' boxes (frames 2 and 4) and the small one
    assert x == pytest.approx(0.32) and y == pytest.approx(0.4)
    assert x + w == pytest.approx(0.44) and y + h == pytest.approx(0.5)
    assert out[3][0].kind == "detected"
    # the first and last frames only take the neighbour they have; nothing is added outside
    assert out[0][0].detection.box == pytest.approx((0.3, 0.4, 0.11, 0.1))
    assert len(out) == 7 and all(len(f) == 1 for f in out)
