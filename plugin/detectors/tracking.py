"""Tracks over per-frame detections, and the temporal fill that keeps faces hidden in every frame.

A detector run frame by frame misses a face now and then (motion blur, a turned head, a
compression artefact); in the anonymized video that face then flashes into view for a frame or
two, the most common complaint about per-frame tools. Here boxes are linked into tracks and the
tracks, not the single detections, decide what is hidden:

* **linking**: per class, each live track predicts its box in the new frame (constant velocity,
  smoothed), and predictions and detections are paired greedily by IoU (highest first, at least
  ``iou_threshold``), then what is left by centre distance (a fast face has no overlap with its
  last box); a detection left over starts a track; a track missed for more than ``max_gap``
  frames ends;
* **gap fill**: a track missed for up to ``max_gap`` frames and found again is interpolated
  through the gap (box and score linearly), the filled boxes marked ``"interpolated"``;
* **extension**: each track is extended by ``extend`` frames before its first and after its last
  detection (the box held, or moved on with the track's velocity with ``extend_mode="velocity"``,
  clipped to the frame), marked ``"extended"``: a face entering the view is hidden before the
  detector is sure of it, and one leaving stays hidden until it is gone;
* **weak detections**: detections scoring below ``start_scores`` continue tracks but start none
  (the detector runs at a lower threshold for video: a face whose score dips stays hidden, a
  lone weak blip in the background is ignored);
* **union**: each box is the union of its track's boxes over ``union_radius`` frames before and
  after, so a box that comes out small or off in one frame does not uncover half a face there;
* **dropping**: a track with fewer than ``min_length`` detections whose best score is below
  ``keep_score`` is dropped as noise (``min_length=1``, the default, keeps every detection: a
  face seen in a single frame is still a face).

Boxes are FiftyOne's relative ``[x, y, w, h]``, so nothing depends on the frame size. Frames
are pushed one at a time and come out once nothing later can change them (at most
:attr:`Tracker.max_delay` frames later): the caller holds that many frames, never the video.
Pure NumPy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import cast

import numpy as np

from ..core.boxes import FACE, PLATE, Detection, iou_matrix, xywh_to_xyxy

EXTEND_MODES = ("hold", "velocity")


@dataclass(frozen=True)
class TrackSettings:
    """How detections become tracks; JSON-safe via :meth:`to_dict` for provenance.

    The defaults were chosen with ``scripts/eval_video.py --sweep`` on the face clips of
    ``scripts/make_video_clips.py`` (810 frames, 4409 true faces), CenterFace once per frame at
    the frame's size and threshold 0.1, box-based: per frame at the photo threshold 0.2, 0.907
    of the true faces were hidden (flicker 0.0061), per frame at 0.1 0.954 (flicker 0.0043);
    with these defaults 0.981 (flicker 0.0005) for 31 % of the picture obscured instead of
    22 % (26 % at 0.1). Union radius 1: 0.974 (0.0007), 0: 0.958 (0.0034). The drop rule
    (``min_length`` 2 or 3) changed coverage and box precision by at most 0.002, so it is off.
    """

    iou_threshold: float = 0.2  # predicted box vs detection, to continue a track
    # then, for what is left: centre distance (in box sizes, sqrt(w h) of the track's box)
    # within which a detection of a similar size (within 2x) still continues a track, so a
    # fast-moving face (a box width per frame: no overlap with its last box) keeps its track
    max_distance: float = 1.0
    max_gap: int = 8  # K: frames a track may be missed and still be filled when found again
    extend: int = 5  # M: frames added before the first and after the last detection
    extend_mode: str = "hold"  # "hold" (edge box) | "velocity" (moved on, clipped to the frame)
    # Each box becomes the union of its track's boxes over this many frames before and after:
    # a box that comes out a little small or off in one frame no longer uncovers half a face
    # for that frame (0: boxes as detected). 4, not 2: on the face clips of `make eval-video`
    # flicker on the written copies fell from 0.0020 to 0.0009 (the bar is 0.001) and coverage
    # rose from 0.974 to 0.981, for 0.338 of the picture obscured instead of 0.308; a longer
    # gap fill (max_gap 16, extend 8) reached only 0.0014.
    union_radius: int = 4
    min_length: int = 1  # tracks with fewer detections than this ...
    keep_score: float = 0.5  # ... are dropped unless one of them scores at least this
    velocity_smoothing: float = 0.5  # weight of the newest motion in the velocity estimate
    # Per class, detections scoring below this only continue tracks, never start one: with the
    # detector run at lower thresholds for video, a face whose score dips for a few frames stays
    # tracked while a lone weak blip starts nothing. The defaults are the photo thresholds
    # (detectors.DEFAULT_THRESHOLDS): a track starts where a photo detection would be reported.
    # Classes not listed: every detection starts a track.
    start_scores: tuple[tuple[str, float], ...] = ((FACE, 0.2), (PLATE, 0.1))

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.max_gap < 0 or self.extend < 0 or self.union_radius < 0:
            raise ValueError(
                f"max_gap, extend and union_radius must be >= 0, got "
                f"{self.max_gap}, {self.extend}, {self.union_radius}"
            )
        if self.extend_mode not in EXTEND_MODES:
            raise ValueError(f"extend_mode must be one of {EXTEND_MODES}, got {self.extend_mode!r}")
        if self.min_length < 1:
            raise ValueError(f"min_length must be >= 1, got {self.min_length}")
        if any(not 0.0 <= float(v) <= 1.0 for _, v in self.start_scores):
            raise ValueError(f"start_scores must be in [0, 1], got {self.start_scores}")
        if not 0.0 <= self.keep_score <= 1.0:
            raise ValueError(f"keep_score must be in [0, 1], got {self.keep_score}")
        if self.max_distance < 0:
            raise ValueError(f"max_distance must be >= 0, got {self.max_distance}")
        if not 0.0 < self.velocity_smoothing <= 1.0:
            raise ValueError(f"velocity_smoothing must be in (0, 1], got {self.velocity_smoothing}")

    def start_score(self, label: str) -> float:
        """The score from which a detection of ``label`` may start a track."""
        return dict(self.start_scores).get(label, 0.0)

    def to_dict(self) -> dict:
        """JSON-safe dict of every field (``start_scores`` as a label -> score dict)."""
        d = asdict(self)
        d["start_scores"] = {label: float(v) for label, v in self.start_scores}
        return d

    @classmethod
    def from_dict(cls, values: dict) -> TrackSettings:
        """Settings from :meth:`to_dict`'s output; unknown keys are an error (a typo would
        otherwise silently fall back to a default)."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown track settings {sorted(unknown)}; known: {sorted(known)}")
        values = dict(values)
        if isinstance(values.get("start_scores"), dict):
            values["start_scores"] = tuple(
                sorted((str(k), float(v)) for k, v in values["start_scores"].items())
            )
        return cls(**values)


@dataclass(frozen=True)
class TrackedDetection:
    """A box of one frame with the track it belongs to (``fo.Detection.index``)."""

    track: int  # 0, 1, 2 ... in the order tracks are confirmed
    detection: Detection
    kind: str  # "detected" | "interpolated" (gap fill) | "extended" (before / after the track)

    @property
    def filled(self) -> bool:
        """True for boxes the tracker added (not found by the detector in this frame)."""
        return self.kind != "detected"


class _Track:
    """One object's detections (frame, box, score) and its motion estimate."""

    __slots__ = ("label", "frames", "boxes", "scores", "velocity", "index", "alive")

    def __init__(self, label: str, frame: int, box: np.ndarray, score: float) -> None:
        self.label = label
        self.frames = [frame]
        self.boxes = [box]  # xywh relative, float64
        self.scores = [score]
        self.velocity = np.zeros(4)  # per frame, of (cx, cy, w, h)
        self.index: int | None = None  # set when the track is confirmed (kept)
        self.alive = True

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]

    def add(self, frame: int, box: np.ndarray, score: float, smoothing: float) -> None:
        step = frame - self.last
        motion = (_centre_size(box) - _centre_size(self.boxes[-1])) / step
        self.velocity = (
            motion
            if len(self.frames) == 1
            else (smoothing * motion + (1 - smoothing) * self.velocity)
        )
        self.frames.append(frame)
        self.boxes.append(box)
        self.scores.append(score)

    def predict(self, frame: int) -> np.ndarray:
        """xywh at ``frame`` moved on from the last detection (size kept: a size velocity
        estimated from noisy boxes overshoots)."""
        cs = _centre_size(self.boxes[-1])
        cs[:2] += self.velocity[:2] * (frame - self.last)
        return _xywh(cs)

    def box_at(self, frame: int, settings: TrackSettings) -> tuple[np.ndarray, float, str] | None:
        """Box, score and kind at ``frame``, or None outside the track and its extension."""
        if frame < self.first - settings.extend or frame > self.last + settings.extend:
            return None
        if frame < self.first or frame > self.last:
            edge = 0 if frame < self.first else -1
            box = self.boxes[edge]
            if settings.extend_mode == "velocity":
                cs = _centre_size(box)
                cs[:2] += self.velocity[:2] * (frame - self.frames[edge])
                box = _xywh(cs)
            clipped = _clip(box)
            if clipped is None:
                return None
            return clipped, self.scores[edge], "extended"
        i = int(np.searchsorted(self.frames, frame))
        if self.frames[i] == frame:
            return self.boxes[i], self.scores[i], "detected"
        f0, f1 = self.frames[i - 1], self.frames[i]
        t = (frame - f0) / (f1 - f0)
        box = (1 - t) * self.boxes[i - 1] + t * self.boxes[i]
        score = (1 - t) * self.scores[i - 1] + t * self.scores[i]
        return box, score, "interpolated"


def _greedy_pairs(
    predicted: np.ndarray, boxes: np.ndarray, s: TrackSettings
) -> list[tuple[int, int]]:
    """(track, detection) pairs: greedily by IoU (highest first, >= ``iou_threshold``), then
    what is left by centre distance in box sizes (closest first, <= ``max_distance``)."""
    ious = iou_matrix(xywh_to_xyxy(predicted), xywh_to_xyxy(boxes))
    pc, dc = predicted[:, :2] + predicted[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2
    size_t = np.sqrt(np.maximum(predicted[:, 2] * predicted[:, 3], 1e-12))
    size_d = np.sqrt(np.maximum(boxes[:, 2] * boxes[:, 3], 1e-12))
    dist = np.linalg.norm(pc[:, None] - dc[None], axis=2) / size_t[:, None]
    ratio = size_d[None] / size_t[:, None]
    near = (dist <= s.max_distance) & (ratio >= 0.5) & (ratio <= 2.0)
    used_t: set[int] = set()
    used_d: set[int] = set()
    pairs = []
    for cost, ok in ((-ious, ious >= s.iou_threshold), (dist, near)):
        for flat in np.argsort(cost, axis=None, kind="stable"):
            ti, di = divmod(int(flat), boxes.shape[0])
            if ok[ti, di] and ti not in used_t and di not in used_d:
                used_t.add(ti)
                used_d.add(di)
                pairs.append((ti, di))
    return pairs


def _union(boxes: list[np.ndarray]) -> np.ndarray:
    """The smallest xywh box holding all of ``boxes``."""
    if len(boxes) == 1:
        return boxes[0]
    a = np.array(boxes)
    x0, y0 = a[:, 0].min(), a[:, 1].min()
    x1, y1 = (a[:, 0] + a[:, 2]).max(), (a[:, 1] + a[:, 3]).max()
    return np.array([x0, y0, x1 - x0, y1 - y0])


def _centre_size(box: np.ndarray) -> np.ndarray:
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2, w, h])


def _xywh(cs: np.ndarray) -> np.ndarray:
    cx, cy, w, h = cs
    return np.array([cx - w / 2, cy - h / 2, w, h])


def _clip(box: np.ndarray) -> np.ndarray | None:
    """The part of a relative box inside the frame, or None when nothing is left."""
    if box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= 1 and box[1] + box[3] <= 1:
        return box
    x0, y0 = max(0.0, box[0]), max(0.0, box[1])
    x1, y1 = min(1.0, box[0] + box[2]), min(1.0, box[1] + box[3])
    if x1 <= x0 or y1 <= y0:
        return None
    return np.array([x0, y0, x1 - x0, y1 - y0])


class Tracker:
    """Streaming tracker: :meth:`push` each frame's detections in order, collect the frames it
    returns (final), and :meth:`flush` at the end for the rest.

    Args:
        settings: linking, fill, extension and drop rule.
    """

    def __init__(self, settings: TrackSettings | None = None) -> None:
        self.settings = settings or TrackSettings()
        self.frames = 0  # frames pushed so far
        self._emitted = 0  # frames returned so far
        self._live: list[_Track] = []
        self._kept: list[_Track] = []  # confirmed tracks that may still reach unreturned frames
        self._next_index = 0

    @property
    def max_delay(self) -> int:
        """Most frames a frame waits between its :meth:`push` and being returned (frame ``t``
        comes out of the push of frame ``t + max_delay`` at the latest): the caller holds at
        most ``max_delay + 1`` decoded frames, whatever the video's length."""
        s = self.settings
        if s.min_length == 1:
            return max(s.extend, s.max_gap) + s.union_radius
        return max(s.max_gap, s.extend + (s.min_length - 1) * (s.max_gap + 1)) + s.union_radius

    def push(self, detections: Sequence[Detection]) -> list[tuple[int, list[TrackedDetection]]]:
        """Add the next frame's detections; returns the frames now final as
        ``(frame index, tracked boxes)``, in order (possibly none)."""
        frame = self.frames
        self.frames += 1
        self._link(frame, list(detections))
        s = self.settings
        for track in self._live:
            if track.alive and frame - track.last > s.max_gap:
                track.alive = False
        self._live = [t for t in self._live if t.alive]
        # Final: no track starting later reaches back (extension), no live track can still
        # fill or extend into it, no live unconfirmed track can still be kept over it.
        ready = frame - s.extend
        for t in self._live:
            ready = min(ready, t.last)
            if t.index is None:
                ready = min(ready, t.first - s.extend - 1)
        return self._emit(ready - s.union_radius)  # the union reaches that far ahead

    def flush(self) -> list[tuple[int, list[TrackedDetection]]]:
        """End of the video: every remaining frame, final."""
        for t in self._live:
            t.alive = False
        self._live = []
        return self._emit(self.frames - 1)

    def _link(self, frame: int, detections: list[Detection]) -> None:
        s = self.settings
        labels = sorted({d.label for d in detections})
        for label in labels:
            dets = [d for d in detections if d.label == label]
            tracks = [t for t in self._live if t.label == label]
            boxes = np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4)
            strong = np.array([d.score >= s.start_score(label) for d in dets], dtype=bool)
            used_d: set[int] = set()
            free = list(range(len(tracks)))
            # confident detections first, then the weak ones for the tracks still unmatched
            for group in (np.flatnonzero(strong), np.flatnonzero(~strong)):
                if not free or not group.size:
                    continue
                predicted = np.array([tracks[t].predict(frame) for t in free])
                matched = set()
                for ti, gi in _greedy_pairs(predicted, boxes[group], s):
                    track, di = tracks[free[ti]], int(group[gi])
                    used_d.add(di)
                    matched.add(free[ti])
                    track.add(frame, boxes[di], dets[di].score, s.velocity_smoothing)
                    self._confirm(track)
                free = [t for t in free if t not in matched]
            for di, det in enumerate(dets):
                if di not in used_d and strong[di]:
                    track = _Track(label, frame, boxes[di], det.score)
                    self._live.append(track)
                    self._confirm(track)

    def _confirm(self, track: _Track) -> None:
        s = self.settings
        if track.index is None and (
            len(track.frames) >= s.min_length or max(track.scores) >= s.keep_score
        ):
            track.index = self._next_index
            self._next_index += 1
            self._kept.append(track)

    def _emit(self, upto: int) -> list[tuple[int, list[TrackedDetection]]]:
        out = []
        s = self.settings
        for frame in range(self._emitted, upto + 1):
            boxes = []
            for track in self._kept:
                found = track.box_at(frame, s)
                if found is not None:
                    box, score, kind = found
                    if s.union_radius:
                        box = _union(
                            [box]
                            + [
                                b[0]
                                for k in range(1, s.union_radius + 1)
                                for b in (track.box_at(frame - k, s), track.box_at(frame + k, s))
                                if b is not None
                            ]
                        )
                    x, y, w, h = (float(v) for v in box)
                    det = Detection(track.label, float(score), (x, y, w, h))
                    # a kept track is confirmed, so its index is set
                    boxes.append(TrackedDetection(cast(int, track.index), det, kind))
            boxes.sort(key=lambda b: b.track)
            out.append((frame, boxes))
        self._emitted = max(self._emitted, upto + 1)
        # tracks that can no longer reach a frame still to come are forgotten
        self._kept = [t for t in self._kept if t.alive or t.last + s.extend >= self._emitted]
        return out


def track_video(
    per_frame: Iterable[Sequence[Detection]], settings: TrackSettings | None = None
) -> list[list[TrackedDetection]]:
    """Tracked boxes for every frame of a whole video's detections (one list per frame)."""
    tracker = Tracker(settings)
    out: list[list[TrackedDetection]] = []
    for dets in per_frame:
        out.extend(boxes for _, boxes in tracker.push(dets))
    out.extend(boxes for _, boxes in tracker.flush())
    return out


def detections_of(tracked: Sequence[TrackedDetection]) -> list[Detection]:
    """The plain detections of one frame (what the blur module takes)."""
    return [t.detection for t in tracked]
