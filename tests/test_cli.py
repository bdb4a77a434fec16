"""The ``anonymize`` command line, run as a real subprocess on a folder tree made here.

One full run (faces and plates, detections files, ``--dataset``) serves most checks; two more
cover ``--no-write-detections`` and the refusals. The subprocess inherits the isolated
FiftyOne database that conftest.py sets up through environment variables.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.models  # every test here loads the detection models

CLI = [sys.executable, "-m", "fiftyone_anonymizer.cli"]
KEYS = {"y_min", "x_min", "y_max", "x_max", "score", "kind"}
# Where the astronaut's face is in skimage.data.astronaut() (512x512), generously:
# every detector's box centre falls inside, and nothing else there is a face.
FACE_CENTRE_X, FACE_CENTRE_Y = (170, 260), (70, 170)


def run_cli(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    proc.output = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    return proc


def sha256_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def make_tree(root: Path) -> Path:
    """Nested folders of astronauts in several formats, plus a text file and a broken JPEG."""
    img = Image.fromarray(astronaut())
    (root / "a" / "b").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make: metadata a copy must not carry
    img.save(root / "top.jpg", quality=95, exif=exif)
    img.save(root / "a" / "b" / "UPPER.JPG", quality=95)  # upper-case extension
    img.save(root / "a" / "astro.png")  # lossless: exact comparison away from the boxes
    img.save(root / "a" / "astro.jpg", quality=95)  # same stem as astro.png
    # Stored rotated, with EXIF orientation 6 ("rotate 90 clockwise to display")
    rotated = Image.fromarray(np.rot90(astronaut(), 1))
    exif_rot = Image.Exif()
    exif_rot[0x0112] = 6
    rotated.save(root / "a" / "b" / "rotated.jpg", quality=95, exif=exif_rot)
    (root / "notes.txt").write_text("not an image")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return root


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> SimpleNamespace:
    tree = make_tree(tmp_path_factory.mktemp("cli") / "in")
    before = sha256_tree(tree)
    out = tmp_path_factory.mktemp("cli-out") / "copies"
    name = f"cli-test-{os.getpid()}"
    proc = run_cli("--input", tree, "--image-output", out, "--dataset", name, "--quiet")
    yield SimpleNamespace(tree=tree, out=out, proc=proc, before=before, dataset=name)
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)


def read_detections(path: Path) -> list[dict]:
    rows = json.loads(path.read_text())
    assert isinstance(rows, list)
    return rows


def faces_in(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["kind"] == "face"]


def test_mirrors_the_tree_and_matches_extensions_case_insensitively(full_run):
    written = {str(p.relative_to(full_run.out)) for p in full_run.out.rglob("*") if p.is_file()}
    assert written == {
        "top.jpg",
        "top.json",
        "a/b/UPPER.JPG",
        "a/b/UPPER.json",
        "a/b/rotated.jpg",
        "a/b/rotated.json",
        "a/astro.png",
        "a/astro.png.json",  # two stems 'astro' in one folder: full names
        "a/astro.jpg",
        "a/astro.jpg.json",
        ".anonymizer-resume.jsonl",  # what a rerun needs to skip current copies
    }, full_run.proc.output


def test_broken_image_gives_non_zero_exit_and_is_named(full_run):
    assert full_run.proc.returncode == 1, full_run.proc.output
    assert "broken.jpg" in full_run.proc.stderr
    assert "anonymized 5 of 6 images" in full_run.proc.stdout


def test_detections_file_is_the_original_format_in_absolute_pixels(full_run):
    rows = read_detections(full_run.out / "top.json")
    assert rows and all(set(r) == KEYS for r in rows)
    assert all(r["kind"] in ("face", "plate") for r in rows)
    assert all(isinstance(r[k], float) for r in rows for k in KEYS - {"kind"})
    for r in rows:
        assert 0 <= r["x_min"] < r["x_max"] <= 512 and 0 <= r["y_min"] < r["y_max"] <= 512
        assert 0 < r["score"] <= 1
    face = max(faces_in(rows), key=lambda r: r["score"])
    cx, cy = (face["x_min"] + face["x_max"]) / 2, (face["y_min"] + face["y_max"]) / 2
    assert FACE_CENTRE_X[0] < cx < FACE_CENTRE_X[1] and FACE_CENTRE_Y[0] < cy < FACE_CENTRE_Y[1]
    assert 40 < face["x_max"] - face["x_min"] < 200  # pixels, not fractions


def test_exif_orientation_applied_and_no_metadata_in_copies(full_run):
    upright = max(faces_in(read_detections(full_run.out / "top.json")), key=lambda r: r["score"])
    turned = max(
        faces_in(read_detections(full_run.out / "a/b/rotated.json")), key=lambda r: r["score"]
    )
    for k in ("x_min", "y_min", "x_max", "y_max"):
        assert abs(upright[k] - turned[k]) < 12, (upright, turned)
    with Image.open(full_run.out / "a/b/rotated.jpg") as im:
        assert im.format == "JPEG" and not im.getexif()
    with Image.open(full_run.out / "top.jpg") as im:
        assert im.format == "JPEG" and not im.getexif() and "icc_profile" not in im.info
    with Image.open(full_run.out / "a/astro.png") as im:
        assert im.format == "PNG"


def _box_mask(rows: list[dict], shape: tuple[int, int], grow: float) -> np.ndarray:
    """Pixels within the boxes grown by ``grow`` times their size on every side."""
    mask = np.zeros(shape, dtype=bool)
    for r in rows:
        w, h = r["x_max"] - r["x_min"], r["y_max"] - r["y_min"]
        x0, x1 = int(max(0, r["x_min"] - grow * w)), int(min(shape[1], r["x_max"] + grow * w + 1))
        y0, y1 = int(max(0, r["y_min"] - grow * h)), int(min(shape[0], r["y_max"] + grow * h + 1))
        mask[y0:y1, x0:x1] = True
    return mask


def test_copies_are_blurred_in_the_boxes_and_unchanged_elsewhere(full_run):
    original = astronaut().astype(np.int16)
    rows = read_detections(full_run.out / "a/astro.png.json")
    face = max(faces_in(rows), key=lambda r: r["score"])
    inner = _box_mask([face], original.shape[:2], grow=-0.25)  # the middle of the face
    outside = ~_box_mask(rows, original.shape[:2], grow=0.6)  # well clear of every region

    png = np.asarray(Image.open(full_run.out / "a/astro.png")).astype(np.int16)
    assert png.shape == original.shape
    assert np.array_equal(png[outside], original[outside])  # lossless: byte for byte
    assert np.abs(png[inner] - original[inner]).mean() > 5  # the face really changed

    with Image.open(full_run.tree / "top.jpg") as im:
        source = np.asarray(im).astype(np.int16)
    jpg = np.asarray(Image.open(full_run.out / "top.jpg")).astype(np.int16)
    assert np.abs(jpg[outside] - source[outside]).mean() < 2  # only JPEG re-encoding noise
    assert np.abs(jpg[inner] - source[inner]).mean() > 5


def test_originals_are_unchanged(full_run):
    assert sha256_tree(full_run.tree) == full_run.before


def test_dataset_has_detections_copies_and_errors(full_run):
    import fiftyone as fo

    assert fo.dataset_exists(full_run.dataset), full_run.proc.output
    ds = fo.load_dataset(full_run.dataset)
    assert ds.persistent
    assert len(ds) == 6, ds.values("filepath")
    assert ds.has_field("anonymizer_detections") and ds.has_field("anonymized_filepath")
    assert "anonymized_filepath" in ds.app_config.media_fields, ds.app_config.media_fields
    # The App opens on the copies (a reviewer never sees an original there by default).
    assert ds.app_config.grid_media_field == ds.app_config.modal_media_field
    assert ds.app_config.modal_media_field == "anonymized_filepath"
    top = ds.one(fo.ViewField("filepath") == str(full_run.tree / "top.jpg"))
    assert top.anonymized_filepath == str(full_run.out / "top.jpg")
    assert any(d.label == "face" for d in top.anonymizer_detections.detections)
    broken = ds.one(fo.ViewField("filepath") == str(full_run.tree / "a/broken.jpg"))
    assert broken.anonymized_filepath is None and broken.anonymizer_error


def test_command_line_and_sdk_write_the_same_schema(full_run, make_dataset, tmp_path):
    """``anonymize --dataset`` and the SDK's detect + anonymize write the same field names,
    types, media fields and provenance (the same recipe and detector configuration)."""
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images, detect_faces_and_plates

    cli_ds = fo.load_dataset(full_run.dataset)
    sdk_ds = make_dataset([fo.Sample(filepath=p) for p in cli_ds.values("filepath")])
    detect_faces_and_plates(sdk_ds)
    anonymize_images(sdk_ds, tmp_path / "sdk-copies")

    def ours(ds):
        return {
            name: (type(f).__name__, getattr(f, "document_type", None))
            for name, f in ds.get_field_schema().items()
            if name.startswith("anonymi")
        }

    assert ours(cli_ds) == ours(sdk_ds)
    assert set(ours(cli_ds)) == {
        "anonymizer_detections",
        "anonymized_filepath",
        "anonymized_filepath_fingerprint",
        "anonymizer_error",
    }
    assert cli_ds.app_config.media_fields == sdk_ds.app_config.media_fields

    for name in ("anonymizer_detections", "anonymized_filepath"):
        cli_info, sdk_info = cli_ds.get_field(name).info, sdk_ds.get_field(name).info
        assert set(cli_info) == set(sdk_info), name
        assert cli_info["produced_by"].endswith("command line")
        for key in set(cli_info) - {"produced_by", "output_dir", "recipes"}:
            assert cli_info[key] == sdk_info[key], (name, key)
    assert sdk_ds.get_field("anonymized_filepath").info["output_dir"] == str(
        tmp_path / "sdk-copies"
    )
    assert cli_ds.get_field("anonymized_filepath").info["output_dir"] == str(full_run.out)

    # The same boxes (to float noise: thread counts differ between the two processes).
    def boxes(ds):
        return {
            p: [(d.label, *d.bounding_box) for d in v.detections]
            for p, v in zip(ds.values("filepath"), ds.values("anonymizer_detections"))
            if v
        }

    cli_boxes, sdk_boxes = boxes(cli_ds), boxes(sdk_ds)
    assert len(cli_boxes) == 5 and set(cli_boxes) == set(sdk_boxes)
    for path, found in cli_boxes.items():
        assert found == [pytest.approx(row, abs=1e-4) for row in sdk_boxes[path]], path


def test_pipeline_takes_over_the_command_line_dataset(full_run):
    # The dataset carries the copies' fingerprints where the pipeline looks for them, so the
    # pipeline sees the command line's copies as current and redoes only the failed image.
    import fiftyone as fo

    from fiftyone_anonymizer.jobs import anonymize as pipeline

    ds = fo.load_dataset(full_run.dataset)
    before = {p: Path(p).stat().st_mtime_ns for p in ds.values("anonymized_filepath") if p}
    report = pipeline.anonymize_images(ds, output_dir=full_run.out)
    assert (report.skipped, report.processed, len(report.failed)) == (5, 0, 1), report.to_dict()
    assert {p: Path(p).stat().st_mtime_ns for p in before} == before


def test_no_write_detections_and_output_inside_input_refused(tmp_path):
    tree = tmp_path / "photos"
    (tree / "sub").mkdir(parents=True)
    Image.fromarray(astronaut()).save(tree / "sub" / "one.png")
    Image.fromarray(astronaut()).save(tree / "two.jpeg")  # not in the default jpg,png
    before = sha256_tree(tree)
    # Inside the input, copies would sit among the originals and a later run would read them
    # as inputs: refused before any work, with the reason.
    inside = run_cli("--input", tree, "--image-output", tree / "anonymized", "--quiet")
    assert inside.returncode == 2 and "inside the source folder" in inside.stderr
    assert sha256_tree(tree) == before

    out = tmp_path / "anonymized"  # beside the input
    proc = run_cli(
        "--input",
        tree,
        "--image-output",
        out,
        "--no-write-detections",
        "--plates",
        "none",
        "--quiet",
    )
    assert proc.returncode == 0, proc.output
    assert "1 .jpeg" in proc.stderr  # left out, and the user is told
    # ... also in the last lines, beside "1 of 1": not taken for a complete run
    assert "NOT anonymized: 1 image file(s) whose extension is not in" in proc.stdout
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [".anonymizer-resume.jsonl", "sub/one.png"]
    again = run_cli(
        "--input", tree, "--image-output", out, "--no-write-detections", "--plates", "none", "-q"
    )
    assert "; 1 was current already (0 made now)" in again.stdout, again.stdout


def test_refuses_output_folder_that_is_the_input(tmp_path):
    Image.fromarray(astronaut()).save(tmp_path / "x.jpg")
    before = sha256_tree(tmp_path)
    proc = run_cli("--input", tmp_path, "--image-output", tmp_path / ".", "--quiet")
    assert proc.returncode == 2 and "is a source folder" in proc.stderr
    assert sha256_tree(tmp_path) == before


def test_bad_options_are_refused_before_any_work(tmp_path):
    proc = run_cli("--input", tmp_path / "missing", "--image-output", tmp_path / "out")
    assert proc.returncode == 2 and "input folder not found" in proc.stderr
    proc = run_cli("--input", tmp_path, "--image-output", tmp_path / "out", "--face-threshold", "0")
    assert proc.returncode == 2 and "threshold" in proc.stderr
