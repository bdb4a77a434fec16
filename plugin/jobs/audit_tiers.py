"""Two tiers of audit residuals: "likely" leaks tag a sample for review, "possible" ones do not.

The audit searches the anonymized copies at low thresholds (face 0.1, plate 0.05, every extra
pass), so most of what it finds outside the obscured region is texture, hands, the back of a
head or the fringe of a face that *was* obscured. Tagging every such sample taught reviewers to
ignore the tag (issue #15: 22 of 40 samples flagged, 6 of 65 residuals on a true box). Here each
residual gets a tier from cheap facts about it and, only where those cannot decide, a second
opinion (:class:`CropOpinion`: the same detector again on a crop around the box):

* ``possible`` when it is shorter than ``min_height_px`` (too small to read: the privacy bar is a
  readable face or plate) or more than ``max_covered`` of it is already obscured (the fringe of
  an obscured face: the first pass found that face, the audit's box is just larger or shifted);
* else ``likely`` when its score is at least ``sure_score`` (a face the detector is fairly sure
  of, left visible);
* else ``likely`` when it is at least ``ask_height_px`` tall and the second opinion scores it at
  least ``opinion_min``; otherwise ``possible``.

How the face thresholds were chosen (``scripts/eval_audit_tiers.py`` on ../shared/data, 200
face photos; the report of issue #15 has every figure): the first pass is replayed at a weak
face threshold (0.8) so that 418 faces >= 16 px are left readable, the audit runs on the real
blurred JPEG copies, and a residual *catches* a readable miss (hand box >= 16 px tall, < 70 %
obscured) at IoU >= 0.3. Height >= 16 px, at most half obscured and ``sure_score`` 0.3 alone
catch 0.90 of those misses, and 0.98 of the samples they tag hold one. At the default first
pass (face 0.2) the faces the first pass left alone mostly score 0.1-0.2 on the copy, so the score no
longer separates them from false alarms; there the box height is the strongest signal (AUC 0.83
among residuals >= 16 px; the second opinions 0.50-0.76), hence only boxes of
``ask_height_px`` (40) or more are asked, and the second opinion then removes 11 of 29 tagged
samples for 1 of 6 caught misses. ``max_covered`` 0.5 removes the half-obscured fringes (15 of
the 33 samples still tagged at the default pass without it) for 0.003 of the weak-pass catch
rate. Of the second opinions measured on every residual (CenterFace's plain vs mirrored view,
MTCNN's O-Net on the box, CenterFace on a crop at one or two scales) the crop at two scales,
plain and mirrored, separated best; it runs only on the residuals asked (16 % of the samples
ask at the default pass), so it adds about 1.5 % to the audit's time on the face photos.

Re-measured on 2026-11-30 after the face detector's gated pass became unmirrored: after the
weak first pass the likely tier catches 0.91 of 420 readable misses and 0.95 of the 128 samples
it tags hold one; at the default pass it tags 22 of 200 samples.

Plates (chosen on every other plate photo, 101, checked on all 201): at a weak first pass
(plate 0.5) only 12 plates >= 16 px are left readable, and the audit finds 7 of them at all
(the others score under 0.05 on the original too: no tier can catch what the audit does not
see). The plate model's boxes are tight (residuals 14 px tall on hand boxes of 16+), hence
``min_height_px`` 12. The crop opinion, a close and a wide view (2 and 8 plate widths: small
plates are only found with their car around them), agreed with every residual on a readable
plate and with few others, so asked boxes need 0.3 and ``sure_score`` is 0.35: the likely tier
keeps all 7 catches and tags 16 samples instead of 65 (11 hold a readable plate). Each plate
crop is a full 640 px pass of the plate model, so on the plate photos the opinion adds about
13 % to the audit's time (16 % of the samples ask).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import metrics
from ..core.boxes import FACE, PLATE, Detection, iou_matrix, xywh_to_xyxy

LIKELY = "likely"
POSSIBLE = "possible"
#: A detection on a copy is a residual when less than this share of its box is obscured.
RESIDUAL_MIN_COVERED = metrics.MIN_COVERED
#: A crop detection agrees with a residual when their IoU is at least this (the metrics' rule).
AGREE_IOU = metrics.IOU_THRESHOLD

#: The second opinion: scores (0-1) for a list of residuals, in order (see :class:`CropOpinion`).
Opinion = Callable[[Sequence[Detection]], Sequence[float]]


@dataclass(frozen=True)
class TierRule:
    """When a residual of one class is "likely" (see the module docstring for the order).

    Args:
        min_height_px: shorter boxes are "possible": they cannot be read
        max_covered: boxes more obscured than this share are "possible" (an obscured face's fringe)
        sure_score: at least this score is "likely" without a second opinion
        ask_height_px: below ``sure_score``, only boxes at least this tall are asked
        opinion_min: a second opinion of at least this makes an asked box "likely"
    """

    min_height_px: float
    max_covered: float
    sure_score: float
    ask_height_px: float
    opinion_min: float


#: Measured rules per class (scripts/eval_audit_tiers.py; module docstring).
RULES: dict[str, TierRule] = {
    FACE: TierRule(
        min_height_px=16, max_covered=0.5, sure_score=0.3, ask_height_px=40, opinion_min=0.2
    ),
    PLATE: TierRule(
        min_height_px=12, max_covered=0.5, sure_score=0.35, ask_height_px=16, opinion_min=0.3
    ),
}


@dataclass(frozen=True)
class TieredResidual:
    """One residual: the audit's detection, the obscured share of its box, its tier, the second
    opinion when one was asked (else None) and why, in words a reviewer can read."""

    detection: Detection
    covered: float
    tier: str
    opinion: float | None
    reason: str


def _decide(
    det: Detection, covered: float, height_px: float, rule: TierRule | None
) -> tuple[str | None, str]:
    """The tier decided without a second opinion, or None (ask one), and the reason."""
    if rule is None:
        return LIKELY, f"no tier rule for '{det.label}'"
    if height_px < rule.min_height_px:
        return POSSIBLE, f"{height_px:.0f} px tall, under {rule.min_height_px:g}"
    if covered > rule.max_covered:
        return POSSIBLE, f"{covered:.0%} already obscured"
    if det.score >= rule.sure_score:
        return LIKELY, f"score {det.score:.2f} >= {rule.sure_score:g}"
    if height_px < rule.ask_height_px:
        return POSSIBLE, f"score {det.score:.2f} and {height_px:.0f} px tall"
    return None, f"score {det.score:.2f}, {height_px:.0f} px tall"


def tier_residuals(
    found: Sequence[Detection],
    obscured: np.ndarray,
    opinion: Opinion | Sequence[float | None] | None = None,
    rules: Mapping[str, TierRule] = RULES,
    min_covered: float = RESIDUAL_MIN_COVERED,
) -> list[TieredResidual]:
    """The residuals among ``found`` (less than ``min_covered`` obscured), each with its tier.

    Args:
        found: the audit's detections on the copy (relative boxes)
        obscured: HxW bool of the copy's obscured pixels (``blur.obscured_region``)
        opinion: a callable asked once with the residuals that need a second opinion (so it
            can batch them, and costs nothing when none does); or scores aligned with ``found``
            (None where unknown); or None: a residual that needs one stays "possible"
        rules: :class:`TierRule` per label; a label without one is always "likely"
        min_covered: the residual rule's share (the audit's ``RESIDUAL_MIN_COVERED``)

    Returns:
        one :class:`TieredResidual` per residual, in the order of ``found``
    """
    found = list(found)
    if opinion is not None and not callable(opinion) and len(opinion) != len(found):
        raise ValueError(f"{len(opinion)} opinion scores for {len(found)} detections")
    if not found:
        return []
    height = obscured.shape[0]
    shares = metrics.covered_fractions(found, obscured)
    kept = [i for i, s in enumerate(shares) if s < min_covered]
    decided = {
        i: _decide(found[i], float(shares[i]), found[i].box[3] * height, rules.get(found[i].label))
        for i in kept
    }
    asked = [i for i in kept if decided[i][0] is None]
    scores: dict[int, float | None] = {}
    if asked and callable(opinion):
        answers = list(opinion([found[i] for i in asked]))
        if len(answers) != len(asked):
            raise ValueError(f"the opinion gave {len(answers)} scores for {len(asked)} residuals")
        scores = {i: float(s) for i, s in zip(asked, answers)}
    elif asked and opinion is not None and not callable(opinion):
        given = {i: opinion[i] for i in asked}
        scores = {i: None if v is None else float(v) for i, v in given.items()}
    out = []
    for i in kept:
        det, (tier, reason) = found[i], decided[i]
        second = scores.get(i)
        if tier is None:
            rule = rules[det.label]
            if second is None:
                tier, reason = POSSIBLE, reason + ", no second opinion"
            else:
                tier = LIKELY if second >= rule.opinion_min else POSSIBLE
                sign = ">=" if tier == LIKELY else "<"
                reason += f", second opinion {second:.2f} {sign} {rule.opinion_min:g}"
        out.append(TieredResidual(det, float(shares[i]), tier, second, reason))
    return out


def needs_review(tiered: Sequence[TieredResidual]) -> bool:
    """Whether a sample's residuals call for the review tag: any "likely" one."""
    return any(r.tier == LIKELY for r in tiered)


# --------------------------------------------------------------------------------------------
# The second opinion: the detector again, on a crop around each residual


def _crop(image: np.ndarray, cx: float, cy: float, side: float) -> tuple[np.ndarray, int, int]:
    """A square window of ``side`` px centred on ``(cx, cy)``, clipped to the image; its
    top-left corner."""
    height, width = image.shape[:2]
    side = max(4, int(round(side)))
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    c0, r0 = max(0, x0), max(0, y0)
    c1, r1 = min(width, max(c0 + 1, x0 + side)), min(height, max(r0 + 1, y0 + side))
    return np.ascontiguousarray(image[r0:r1, c0:c1]), c0, r0


def _agreement(
    det: Detection,
    crop_dets: Sequence[Detection],
    crop_w: int,
    crop_h: int,
    ox: float,
    oy: float,
    sx: float,
    sy: float,
    mirrored: bool,
    width: int,
    height: int,
) -> float:
    """Highest score among crop detections (boxes in a crop of ``crop_w`` x ``crop_h`` px at
    ``(ox, oy)`` in the image, resized ``sx``, ``sy`` times) that overlap ``det``."""
    if not crop_dets:
        return 0.0
    boxes = []
    for d in crop_dets:
        x0, y0, x1, y1 = d.to_pixels(crop_w, crop_h)
        if mirrored:
            x0, x1 = crop_w - x1, crop_w - x0
        boxes.append((ox + x0 / sx, oy + y0 / sy, ox + x1 / sx, oy + y1 / sy))
    mine = xywh_to_xyxy(np.array([det.box])) * np.array([width, height] * 2)
    ious = iou_matrix(mine, np.array(boxes))[0]
    scores = np.array([d.score for d in crop_dets])
    hit = ious >= AGREE_IOU
    return float(scores[hit].max()) if hit.any() else 0.0


class CropOpinion:
    """Second opinion on residuals: the detector again on a crop around each box.

    Faces: CenterFace on a square crop three face-sizes wide, resized so the face (its raw box,
    before CenterFace's calibration) is ``face_targets`` px tall, plain and mirrored; the
    opinion is the best score among the crop's boxes that overlap the residual (IoU >= 0.3).
    Two scales and two views of the same face: texture that fooled one view rarely fools all
    four. Plates: the plate model on square crops ``plate_contexts`` plate-widths wide, best
    score as for faces: a close view (2 widths: a large plate fills the model's input) and a
    wide one (8 widths: a small plate, 14-20 px tall, is only found with its car around it).
    Each crop costs a small fraction of a full pass.

    Args:
        face_detector: a ``CenterFaceDetector`` run on the crops (its ``expand`` and
            ``shift_down`` are the calibration undone to find the raw face); default: built
        plate_detector: a ``YoloPlateDetector`` run on the crops; default: built
        face_targets: face heights (px) the crops are resized to
        plate_contexts: crop sides in plate widths (at least 64 px)
        floor: the crop detectors' score threshold
        device: where default detectors run
    """

    def __init__(
        self,
        face_detector=None,
        plate_detector=None,
        face_targets: Sequence[int] = (24, 48),
        plate_contexts: Sequence[float] = (2.0, 8.0),
        floor: float = 0.02,
        device: str = "auto",
    ) -> None:
        self._face, self._plate = face_detector, plate_detector
        self.face_targets = tuple(int(t) for t in face_targets)
        self.plate_contexts = tuple(float(c) for c in plate_contexts)
        self.floor = float(floor)
        self.device = device

    def face_detector(self):
        """The crop face detector: CenterFace with no resizing of its own (``min_side`` 32)."""
        if self._face is None:
            from ..detectors import build_backend

            self._face = build_backend(
                "centerface",
                self.floor,
                device=self.device,
                min_side=32,
                max_side=1 << 16,
                flip=False,
                tiled=None,
            )
        return self._face

    def plate_detector(self):
        """The crop plate detector: the plate model's single view (no tiles)."""
        if self._plate is None:
            from ..detectors import build_backend

            self._plate = build_backend("yolov8-plates", self.floor, device=self.device, tiled=None)
        return self._plate

    def face(self, image: np.ndarray, det: Detection) -> float:
        """The face opinion on ``det`` in ``image`` (RGB uint8)."""
        from ..detectors.base import resize

        detector = self.face_detector()
        height, width = image.shape[:2]
        x0, y0, x1, y1 = det.to_pixels(width, height)
        ew, eh = getattr(detector, "expand", (1.0, 1.0))
        raw_w, raw_h = (x1 - x0) / ew, (y1 - y0) / eh
        cx = (x0 + x1) / 2
        cy = (y0 + y1) / 2 - raw_h * getattr(detector, "shift_down", 0.0)
        size = max(raw_w, raw_h, 1.0)
        crop, ox, oy = _crop(image, cx, cy, 3 * size)
        ch, cw = crop.shape[:2]
        best = 0.0
        for target in self.face_targets:
            nw, nh = max(8, round(cw * target / size)), max(8, round(ch * target / size))
            small = resize(crop, nw, nh)
            for mirrored in (False, True):
                view = np.ascontiguousarray(small[:, ::-1]) if mirrored else small
                dets = detector.detect([view])[0]
                best = max(
                    best,
                    _agreement(
                        det, dets, nw, nh, ox, oy, nw / cw, nh / ch, mirrored, width, height
                    ),
                )
        return best

    def plate(self, image: np.ndarray, det: Detection) -> float:
        """The plate opinion on ``det`` in ``image`` (RGB uint8)."""
        height, width = image.shape[:2]
        x0, y0, x1, y1 = det.to_pixels(width, height)
        best = 0.0
        for context in self.plate_contexts:
            side = max(context * max(x1 - x0, 2 * (y1 - y0)), 64)
            crop, ox, oy = _crop(image, (x0 + x1) / 2, (y0 + y1) / 2, side)
            ch, cw = crop.shape[:2]
            dets = self.plate_detector().detect([crop])[0]
            best = max(best, _agreement(det, dets, cw, ch, ox, oy, 1.0, 1.0, False, width, height))
        return best

    def __call__(self, image: np.ndarray, detections: Sequence[Detection]) -> list[float]:
        """Opinions on ``detections`` in ``image``; labels other than face/plate get 1.0 (no
        second look: they stay as the first look had them)."""
        out = []
        for det in detections:
            if det.label == FACE:
                out.append(self.face(image, det))
            elif det.label == PLATE:
                out.append(self.plate(image, det))
            else:
                out.append(1.0)
        return out

    def bind(self, image: np.ndarray) -> Opinion:
        """The :data:`Opinion` for one copy, for :func:`tier_residuals`."""
        return lambda detections: self(image, detections)
