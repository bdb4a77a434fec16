"""Measure the audit's two tiers (``jobs/audit_tiers.py``) on the evaluation photos.

    python scripts/eval_audit_tiers.py [--data ../shared/data] [--out out/audit-tiers]
        [--sets faces plates] [--limit N] [--stride K] [--time N] [--refresh-opinions]

For each set the default detectors run once on the originals (the first pass). Two first
passes are then replayed: a *weak* one (face 0.8, plate 0.5: many faces and plates left
readable) and the *default* one (face 0.2, plate 0.1). Each writes a real copy (the blur with
default settings, encoded as JPEG at the default quality, decoded again), and the audit's
detector (``jobs.audit.AUDIT_THRESHOLDS``, every extra pass) runs on that copy. A true box is a
*readable miss* when it is at least 16 px tall and less than 70 % of it lies in the first
pass's obscured region (``metrics.covered_fractions`` on ``blur.obscured_region``); a residual
*catches* it at IoU >= 0.3. Boxes marked ``"added"`` (the plate model's own finds, see the
data README) are left out of the catch rates but count as real for "holds one".

Printed per set, class and first pass: the share of readable misses the "likely" tier catches,
how many tagged samples hold one, what the "possible" tier adds, and today's rule (every
residual tags) for comparison; then all classes together (what a reviewer sees); then the CPU
model and the per-image audit time with and without the second opinion (``--time`` images,
interleaved, medians). Detections and the second opinions of every residual are cached under
``--out`` per image, so changing ``RULES`` only re-reads the cache. Figures on a shared machine
are noisy; say so when quoting them.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import statistics
import time
from pathlib import Path

import numpy as np
from machine import cpu_model  # scripts/machine.py

from fiftyone_anonymizer import metrics
from fiftyone_anonymizer.core.boxes import FACE, PLATE, Detection
from fiftyone_anonymizer.detectors import DEFAULT_THRESHOLDS
from fiftyone_anonymizer.jobs.audit_tiers import (
    LIKELY,
    RULES,
    CropOpinion,
    tier_residuals,
)

REPO = Path(__file__).resolve().parents[1]

READABLE_PX = 16
PASSES = {"weak": {FACE: 0.8, PLATE: 0.5}, "default": dict(DEFAULT_THRESHOLDS)}
#: Which detectors run on each set (the plate photos are large: faces there would double the
#: run time for a handful of faces).
SET_CLASSES = {"faces": (FACE, PLATE), "plates": (PLATE,)}


def audit_thresholds() -> dict[str, float]:
    from fiftyone_anonymizer.jobs.audit import AUDIT_THRESHOLDS

    return dict(AUDIT_THRESHOLDS)


def build(classes: tuple[str, ...], thresholds: dict[str, float]):
    from fiftyone_anonymizer.detectors import build_detector

    return build_detector(
        faces="centerface" if FACE in classes else None,
        plates="yolov8-plates" if PLATE in classes else None,
        thresholds={k: v for k, v in thresholds.items() if k in classes},
    )


def make_copy(image: np.ndarray, used: list[Detection]) -> tuple[np.ndarray, np.ndarray]:
    """The anonymized copy as the audit reads it back (JPEG), and the obscured region."""
    from PIL import Image

    from fiftyone_anonymizer.blur import BlurSettings, anonymize_image, obscured_region
    from fiftyone_anonymizer.core.images import encode_image

    settings = BlurSettings()
    pixels = np.asarray(anonymize_image(image, used, settings))
    copy = np.asarray(Image.open(io.BytesIO(encode_image(pixels, "JPEG"))).convert("RGB"))
    return copy, np.asarray(obscured_region(*image.shape[:2], used, settings), dtype=bool)


def truths_of(entry: dict, width: int, height: int) -> list[tuple[Detection, bool]]:
    w0, h0 = entry.get("width") or width, entry.get("height") or height
    return [
        (
            Detection.from_pixels(
                b["label"], 1.0, (b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]), w0, h0
            ),
            bool(b.get("added")),
        )
        for b in entry.get("boxes", [])
    ]


def compute(
    data: Path, name: str, out: Path, limit: int | None, stride: int = 1, refresh: bool = False
) -> list[dict]:
    """Per image: truths, and per first pass the obscured truths' shares, the audit's
    detections, their covered shares and second opinions (cached per image). ``refresh``:
    recompute the second opinions of cached images (after a change to ``CropOpinion``)."""
    from fiftyone_anonymizer.core.images import read_image

    entries = json.loads((data / name / "labels.json").read_text())[::stride][:limit]
    cache_path = out / f"cache-{name}.pkl"
    cache = pickle.loads(cache_path.read_bytes()) if cache_path.is_file() else {}
    classes = SET_CLASSES[name]
    if refresh:
        refresh_opinions(data / name, [e["file"] for e in entries if e["file"] in cache], cache)
        cache_path.write_bytes(pickle.dumps(cache))
    todo = [e for e in entries if e["file"] not in cache]
    if todo:
        first_pass = build(classes, DEFAULT_THRESHOLDS)
        auditor = build(classes, audit_thresholds())
        opinion = CropOpinion()
        started = time.perf_counter()
        for n, entry in enumerate(todo, 1):
            image = read_image(data / name / entry["file"])
            height, width = image.shape[:2]
            truths = truths_of(entry, width, height)
            first = first_pass.detect([image])[0]
            record = {"h": height, "w": width, "truths": truths, "first": first, "passes": {}}
            for pass_name, thresholds in PASSES.items():
                used = [d for d in first if d.score >= thresholds[d.label]]
                copy, mask = make_copy(image, used)
                found = auditor.detect([copy])[0]
                covered = metrics.covered_fractions(found, mask) if found else np.zeros(0)
                opinions = _opinions(opinion, copy, found, covered)
                record["passes"][pass_name] = {
                    "truth_covered": (
                        metrics.covered_fractions([t for t, _ in truths], mask)
                        if truths
                        else np.zeros(0)
                    ),
                    "found": found,
                    "opinions": opinions,
                    "used": used,
                }
            cache[entry["file"]] = record
            if n % 10 == 0 or n == len(todo):
                cache_path.write_bytes(pickle.dumps(cache))
                print(
                    f"  {name}: {n}/{len(todo)} images, {time.perf_counter() - started:.0f} s",
                    flush=True,
                )
    return [dict(cache[e["file"]], file=e["file"]) for e in entries]


def _opinions(
    opinion: CropOpinion, copy: np.ndarray, found: list[Detection], covered: np.ndarray
) -> list[float | None]:
    """The second opinion on every residual (None for the other detections)."""
    return [
        opinion(copy, [d])[0] if c < metrics.MIN_COVERED else None for d, c in zip(found, covered)
    ]


def refresh_opinions(folder: Path, files: list[str], cache: dict) -> None:
    """Recompute the cached second opinions from the copies (rebuilt from the cached boxes)."""
    from fiftyone_anonymizer.core.images import read_image

    opinion = CropOpinion()
    for file in files:
        record = cache[file]
        image = None
        for p in record["passes"].values():
            if all(o is None for o in p["opinions"]):
                continue
            image = read_image(folder / file) if image is None else image
            copy, mask = make_copy(image, p["used"])
            p["opinions"] = _opinions(
                opinion, copy, p["found"], metrics.covered_fractions(p["found"], mask)
            )


def mask_of(rec: dict, pass_name: str) -> np.ndarray:
    """The first pass's obscured region, rebuilt from the boxes it used."""
    from fiftyone_anonymizer.blur import BlurSettings, obscured_region

    used = rec["passes"][pass_name]["used"]
    return np.asarray(obscured_region(rec["h"], rec["w"], used, BlurSettings()), dtype=bool)


def tally(records: list[dict], pass_name: str, label: str | None) -> dict:
    """Catch rates and tagged samples for one first pass; ``label`` None: every class."""
    out = {
        "misses": 0,
        "caught_likely": 0,
        "caught_any": 0,
        "samples": len(records),
        "holding": 0,
        "tagged": 0,
        "tagged_holding": 0,
        "tagged_today": 0,
        "today_holding": 0,
        "likely": 0,
        "possible": 0,
        "findable": 0,
    }
    for rec in records:
        p = rec["passes"][pass_name]
        tiered = tier_residuals(p["found"], mask_of(rec, pass_name), p["opinions"])
        if label is not None:
            tiered = [r for r in tiered if r.detection.label == label]
        likely = [r for r in tiered if r.tier == LIKELY]
        out["likely"] += len(likely)
        out["possible"] += len(tiered) - len(likely)
        misses = [
            (t, added)
            for (t, added), c in zip(rec["truths"], p["truth_covered"])
            if (label is None or t.label == label)
            and c < metrics.MIN_COVERED
            and t.box[3] * rec["h"] >= READABLE_PX
        ]
        holds = bool(misses)
        out["holding"] += holds
        out["tagged"] += bool(likely)
        out["tagged_holding"] += bool(likely) and holds
        out["tagged_today"] += bool(tiered)
        out["today_holding"] += bool(tiered) and holds
        for truth, added in misses:
            if added:
                continue
            out["misses"] += 1
            hit_likely = _catches(truth, [r.detection for r in likely])
            hit_any = _catches(truth, [r.detection for r in tiered])
            out["caught_likely"] += hit_likely
            out["caught_any"] += hit_any
    return out


def _catches(truth: Detection, found: list[Detection]) -> bool:
    same = [d for d in found if d.label == truth.label]
    if not same:
        return False
    m = metrics.match_boxes(
        np.array([truth.box]), np.array([d.box for d in same]), np.array([d.score for d in same])
    )
    return bool(m.truth_matched[0])


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def report(records: list[dict], name: str) -> None:
    for label in SET_CLASSES[name]:
        for pass_name, thresholds in PASSES.items():
            t = tally(records, pass_name, label)
            print(
                f"audit {label} on {name} ({pass_name} pass {thresholds[label]:g}): likely "
                f"catches {_ratio(t['caught_likely'], t['misses'])} of {t['misses']} readable "
                f"misses >= {READABLE_PX} px; {_ratio(t['tagged_holding'], t['tagged'])} of "
                f"{t['tagged']} tagged samples hold one; possible tier adds "
                f"{t['caught_any'] - t['caught_likely']} ({t['possible']} possible, "
                f"{t['likely']} likely residuals); today's rule tags {t['tagged_today']} "
                f"({_ratio(t['today_holding'], t['tagged_today'])} hold one)"
            )
    for pass_name in PASSES:
        t = tally(records, pass_name, None)
        print(
            f"audit all classes on {name} ({pass_name} pass): {t['tagged']} of {t['samples']} "
            f"samples tagged, {t['tagged_holding']} hold a readable miss "
            f"({t['holding']} samples hold one; {t['caught_likely']} of {t['misses']} misses "
            f"caught by likely, {t['caught_any']} by any residual); today's rule tags "
            f"{t['tagged_today']} ({t['today_holding']} hold one)"
        )


def time_audit(data: Path, name: str, records: list[dict], n: int) -> None:
    """Per-image audit time and what the second opinion adds, at the default first pass.

    Timed on the first ``n`` images that ask a second opinion (on the others it costs nothing),
    the detector and the opinion interleaved, two rounds each, medians; then averaged over the
    set with the share of samples that ask."""
    from fiftyone_anonymizer.core.images import read_image

    def asks(rec: dict) -> int:
        p = rec["passes"]["default"]
        tiered = tier_residuals(p["found"], mask_of(rec, "default"), p["opinions"])
        return sum(r.opinion is not None for r in tiered)

    counts = [asks(rec) for rec in records]
    chosen = [rec for rec, k in zip(records, counts) if k][:n]
    if not chosen:
        print(f"timing on {name}: no sample asks a second opinion at the default pass")
        return
    auditor = build(SET_CLASSES[name], audit_thresholds())
    opinion = CropOpinion()
    detect_s, opinion_s, asked = [], [], 0
    for rec in chosen:
        image = read_image(data / name / rec["file"])
        copy, mask = make_copy(image, rec["passes"]["default"]["used"])
        found = auditor.detect([copy])[0]
        tier_residuals(found, mask, opinion.bind(copy))  # warm both
        for _ in range(2):
            t0 = time.perf_counter()
            found = auditor.detect([copy])[0]
            t1 = time.perf_counter()
            tiered = tier_residuals(found, mask, opinion.bind(copy))
            t2 = time.perf_counter()
            tier_residuals(found, mask, None)
            t3 = time.perf_counter()
            detect_s.append(t1 - t0)
            opinion_s.append((t2 - t1) - (t3 - t2))
        asked += sum(r.opinion is not None for r in tiered)
    per_image = statistics.median(detect_s)
    extra = statistics.median(opinion_s)
    share = sum(1 for k in counts if k) / len(records)
    print(
        f"timing on {name} ({cpu_model()}; {len(chosen)} images that ask, {asked} residuals "
        f"asked, default pass): audit {per_image * 1000:.0f} ms/image without the second "
        f"opinion, {(per_image + extra) * 1000:.0f} ms/image with it on a sample that asks; "
        f"{share:.0%} of samples ask, so {extra * share * 1000:.0f} ms/image "
        f"(+{extra * share / per_image:.1%}) on average"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "audit-tiers")
    parser.add_argument("--sets", nargs="+", default=list(SET_CLASSES), choices=list(SET_CLASSES))
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set")
    parser.add_argument("--stride", type=int, default=1, help="every K-th image of each set")
    parser.add_argument(
        "--refresh-opinions",
        action="store_true",
        help="recompute the cached second opinions (after changing CropOpinion)",
    )
    parser.add_argument("--time", type=int, default=10, help="images timed per set (0: none)")
    args = parser.parse_args(argv)
    if not (args.data / "faces" / "labels.json").is_file():
        print(
            f"skipped: no evaluation photos at {args.data} (faces/labels.json); they are not "
            "part of the repository, see tests/conftest.py"
        )
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_model()}; rules: " + "; ".join(f"{k}: {v}" for k, v in RULES.items()))
    for name in args.sets:
        records = compute(args.data, name, args.out, args.limit, args.stride, args.refresh_opinions)
        report(records, name)
        if args.time:
            time_audit(args.data, name, records, args.time)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
