"""scripts/evaluate.py on a labels file made here: the printed lines keep their exact format,
any labels path works, and the report holds the curves and the per-folder figures."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.models  # every test here loads the detection models

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"^(face|plate): recall \d\.\d{3} coverage \d\.\d{3} precision \d\.\d{3} "
    r"images \d+ ms/img \d+$"
)
# The astronaut's face, forehead to chin, in pixels of the 512 x 512 sample image.
FACE_BOX = {"label": "face", "x": 179, "y": 61, "w": 92, "h": 118}


def _labels(tmp_path: Path) -> Path:
    from skimage import data

    root = tmp_path / "my set"  # a space in the path, and no labels.json name
    entries = []
    for folder, image in (("cam_a", data.astronaut()), ("cam_b", data.astronaut()[:, ::-1])):
        path = root / "images" / folder / "shot.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(image).save(path)
        box = dict(FACE_BOX)
        if folder == "cam_b":  # mirrored
            box["x"] = 512 - box["x"] - box["w"]
        entries.append(
            {"file": f"images/{folder}/shot.png", "width": 512, "height": 512, "boxes": [box]}
        )
    empty = root / "images" / "cam_b" / "coffee.png"
    Image.fromarray(data.coffee()).save(empty)
    entries.append({"file": "images/cam_b/coffee.png", "width": 600, "height": 400, "boxes": []})
    labels = root / "faces only.json"
    labels.write_text(json.dumps(entries))
    return labels


def _evaluate(labels: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    """``scripts/evaluate.py`` on ``labels``, faces only, report into ``out``; must succeed."""
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "evaluate.py"),
            str(labels),
            "--plates",
            "none",
            "--out",
            str(out),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_evaluate_prints_the_required_lines_and_writes_its_report(tmp_path):
    labels = _labels(tmp_path)
    out = tmp_path / "report"
    run = _evaluate(labels, out)
    lines = run.stdout.splitlines()
    required = [line for line in lines if LINE.match(line)]
    assert [line.split(":")[0] for line in required] == ["face"]  # only labels present
    assert "recall 1.000" in required[0] and "images 3 " in required[0]
    assert "by folder (default thresholds):" in lines
    assert any(line.startswith("  images/cam_a: face recall 1.000") for line in lines)
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 3 and set(report["per_folder"]) == {"images/cam_a", "images/cam_b"}
    assert report["per_folder"]["images/cam_b"]["face"]["truths"] == 1
    assert report["curves"]["face"]["thresholds"][0] <= 0.05
    assert (out / "curves.png").stat().st_size > 0


def test_added_boxes_count_like_any_box_and_variants_can_be_chosen(tmp_path):
    # cam_a: the face, a source box. cam_b: the mirrored face, a box marked "added" (a real
    # face the source left out). coffee: an "added" face where there is none, which nothing
    # finds. Every labelled box counts: recall 2 of 3, precision 2 of 2.
    labels = _labels(tmp_path)
    entries = json.loads(labels.read_text())
    entries[1]["boxes"][0]["added"] = True
    entries[2]["boxes"] = [{**FACE_BOX, "x": 20, "y": 20, "added": True}]
    labels.write_text(json.dumps(entries))
    out = tmp_path / "report"
    run = _evaluate(
        labels,
        out,
        "--precision",
        "int8",
        "--face-option",
        "min_side=640",
        "--face-option",
        "flip=false",
    )
    (line,) = [line for line in run.stdout.splitlines() if LINE.match(line)]
    assert line.startswith("face: recall 0.667 coverage 0.667 precision 1.000 images 3 "), line
    report = json.loads((out / "report.json").read_text())
    face = report["results"]["face"]
    assert face["truths"] == 3 and face["detections"] == 2 and face["matched_detections"] == 2
    (backend,) = report["detector"]["backends"]
    assert (
        backend["precision"] == "int8" and backend["min_side"] == 640 and backend["flip"] is False
    )
    assert report["options"] == {"face": {"min_side": 640, "flip": False}}
    # the astronaut's face is 118 px tall: the >= 48 px class
    assert report["by_size"]["face"][">=48"]["truths"] == 3


def test_several_files_and_effort_levels_end_in_a_table(tmp_path):
    labels = _labels(tmp_path)
    out = tmp_path / "report"
    run = _evaluate(labels, out, "--effort", "fast,thorough")
    lines = run.stdout.splitlines()
    assert [line for line in lines if line.startswith("== ")] == [
        f"== {labels} at effort fast",
        f"== {labels} at effort thorough",
    ]
    rows = lines[lines.index(next(x for x in lines if x.startswith("side by side"))) + 2 :]
    assert [r.split()[0] for r in rows] == ["fast", "thorough"]
    assert all(" face " in r and " 1.000/1.000 " in r for r in rows), rows
    for level in ("fast", "thorough"):
        report = json.loads((out / f"my set-faces only-{level}" / "report.json").read_text())
        assert report["effort"] == level and report["detector"]["effort"] == level
        assert report["results"]["face"]["recall"] == 1.0
