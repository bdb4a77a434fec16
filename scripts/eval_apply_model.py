"""The detect job and FiftyOne's ``apply_model`` with our model, scored on the same photos.

    python scripts/eval_apply_model.py [LABELS.json ...] [--limit N] [--batch-size N]

For each labels file (default: ../shared/data/faces/labels.json and plates/labels.json) the
photos become a FiftyOne dataset; ``anon.detect_faces_and_plates(dataset, label_field="job")``
and ``dataset.apply_model(anon.load_model("faces-and-plates"), label_field="m")`` each label
it, and both fields are scored with ``scripts/evaluate.py``'s own matching (``tally_at``, the
same recall / coverage / precision definitions, the boxes marked ``"added"`` counting for
precision only). It prints one evaluate-style line per method and label, how many photos got
identical boxes, and whether every figure agrees within 0.001 (exit status 1 if not).

The dataset lives in a throwaway database unless ``FIFTYONE_DATABASE_URI`` or
``FIFTYONE_DATABASE_DIR`` says where FiftyOne's database is; it is deleted at the end.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEFAULT_LABELS = [SHARED / "faces" / "labels.json", SHARED / "plates" / "labels.json"]
TOLERANCE = 0.001
FIELDS = {"job": "detect job", "m": "apply_model"}


def _throwaway_database() -> None:
    """Point FiftyOne at a temporary database folder (before it is imported), removed at exit."""
    if os.environ.get("FIFTYONE_DATABASE_URI") or os.environ.get("FIFTYONE_DATABASE_DIR"):
        return
    folder = tempfile.mkdtemp(prefix="eval-apply-model-db-")
    os.environ["FIFTYONE_DATABASE_DIR"] = folder

    # registered before FiftyOne is imported, so it runs after FiftyOne stopped its database
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def score(labels_path: Path, limit: int | None, batch_size: int | None) -> bool:
    """Print both methods' figures on one labels file; True when they agree within tolerance."""
    import evaluate  # scripts/evaluate.py: the labels, the truths, the matching
    import fiftyone as fo

    import fiftyone_anonymizer as anon
    from fiftyone_anonymizer import metrics
    from fiftyone_anonymizer.blur import BlurSettings
    from fiftyone_anonymizer.jobs.labels import from_fo_detections

    entries = evaluate.load_labels(labels_path)[:limit]
    paths = [str(labels_path.parent / entry["file"]) for entry in entries]
    dataset = fo.Dataset()
    try:
        dataset.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
        ids = dataset.values("id")  # insertion order: entry i is sample i
        anon.detect_faces_and_plates(dataset, label_field="job")
        dataset.apply_model(
            anon.load_model("faces-and-plates"), label_field="m", batch_size=batch_size
        )
        labels = {field: dict(zip(*dataset.values(["id", field]), strict=True)) for field in FIELDS}
    finally:
        dataset.delete()

    settings = BlurSettings()
    present = sorted({b["label"] for e in entries for b in e.get("boxes", [])})
    tallies = {}
    for field in FIELDS:
        records = []
        for sid, entry, path in zip(ids, entries, paths, strict=True):
            height, width = evaluate.read_rgb(Path(path)).shape[:2]
            records.append(
                {
                    "h": height,
                    "w": width,
                    "dets": from_fo_detections(labels[field][sid]),
                    "truths": evaluate.truths_of(entry, width, height),
                }
            )
        # the detectors applied their default thresholds already: keep every box
        tallies[field] = evaluate.tally_at(records, {}, settings)

    print(f"{labels_path} ({len(entries)} images)")
    agree = True
    for label in present:
        figures = {}
        for field, method in FIELDS.items():
            t = tallies[field].get(label, metrics.Tally(images=len(entries)))
            figures[field] = (t.recall, t.coverage, t.precision)
            print(
                f"  {method:<12} {label}: recall {t.recall:.3f} coverage {t.coverage:.3f} "
                f"precision {t.precision:.3f} images {len(entries)}"
            )
        gaps = [abs(a - b) for a, b in zip(figures["job"], figures["m"], strict=True)]
        agree &= max(gaps) <= TOLERANCE
        print(f"  {'difference':<12} {label}: largest {max(gaps):.4f}")

    def rows(value) -> list:
        return [(d.label, d.score, d.box) for d in from_fo_detections(value)]

    same = sum(rows(labels["job"][sid]) == rows(labels["m"][sid]) for sid in ids)
    print(f"  identical boxes, labels and confidences on {same} of {len(ids)} images")
    return agree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", type=Path, nargs="*", help="labels.json files")
    parser.add_argument("--limit", type=int, help="only the first N images of each file")
    parser.add_argument("--batch-size", type=int, help="apply_model's batch_size (default none)")
    args = parser.parse_args(argv)
    labels = args.labels or DEFAULT_LABELS
    missing = [str(p) for p in labels if not p.is_file()]
    if missing:
        sys.exit(
            f"labels file not found: {', '.join(missing)} (../shared/data beside the checkout)"
        )
    _throwaway_database()
    import fiftyone as fo

    fo.config.show_progress_bars = False
    agree = all([score(path.resolve(), args.limit, args.batch_size) for path in labels])
    print(f"detect job and apply_model agree within {TOLERANCE}: {'yes' if agree else 'NO'}")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
