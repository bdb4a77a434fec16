"""Operators on real datasets: run through FiftyOne's operator machinery, bad inputs, delegation."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PLUGIN_NAME

FACE_BOX = (0.30, 0.05, 0.28, 0.36)  # the astronaut's head, relative [x, y, w, h]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _exif_rotated_jpeg(path: Path, pixels: np.ndarray) -> None:
    """Store the pixels rotated, with EXIF orientation 6 saying how to turn them upright."""
    stored = np.ascontiguousarray(np.rot90(pixels, k=1))  # 90 deg counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    exif[0x8825] = {2: (48.0, 51.0, 24.0)}  # a GPS latitude that must not leak into copies
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())


def _gt(fo, box=FACE_BOX, label="face"):
    return fo.Detections(detections=[fo.Detection(label=label, bounding_box=list(box))])


@pytest.fixture
def photo_tree(tmp_path):
    """Two photos with the same file name in different folders, one EXIF-rotated."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir(parents=True)
    Image.fromarray(_astronaut()).save(src / "a" / "photo.jpg", quality=95)
    _exif_rotated_jpeg(src / "b" / "photo.jpg", _astronaut())
    return src


def _run(uri_name, view, params, **kwargs):
    import fiftyone.operators as foo

    result = foo.execute_operator(
        f"{PLUGIN_NAME}/{uri_name}", {"view": view, "params": params, **kwargs}
    )
    result.raise_exceptions()
    return result.result


def test_anonymize_operator_writes_mirrored_metadata_free_copies(
    make_dataset, photo_tree, tmp_path
):
    import fiftyone as fo

    paths = sorted(photo_tree.rglob("*.jpg"))
    before = {p: _sha(p) for p in paths}
    ds = make_dataset([fo.Sample(filepath=str(p), ground_truth=_gt(fo)) for p in paths])
    out_dir = tmp_path / "out"

    result = _run(
        "anonymize_images",
        ds.view(),
        {"output_dir": str(out_dir), "label_fields": ["ground_truth"], "jpeg_quality": 95},
    )
    assert result["processed"] == 2 and result["failed"] == 0
    assert result["boxes_per_class"] == {"face": 2}

    copies = ds.values("anonymized_filepath")
    assert len(set(copies)) == 2  # equal file names did not collide
    assert sorted(Path(c).relative_to(out_dir).as_posix() for c in copies) == [
        "a/photo.jpg",
        "b/photo.jpg",
    ]
    assert "anonymized_filepath" in ds.app_config.media_fields
    assert {p: _sha(p) for p in paths} == before  # originals untouched

    upright = _astronaut().astype(np.int16)
    h, w = upright.shape[:2]
    x, y, bw, bh = FACE_BOX
    face = (
        slice(int(y * h) + 20, int((y + bh) * h) - 20),
        slice(int(x * w) + 20, int((x + bw) * w) - 20),
    )
    for copy in copies:
        with Image.open(copy) as img:
            assert img.format == "JPEG"
            assert not img.getexif() and "exif" not in img.info and "icc_profile" not in img.info
            pixels = np.asarray(img).astype(np.int16)
        # Orientation baked in: the copy is upright and matches the source away from the face.
        assert pixels.shape == upright.shape
        assert np.abs(pixels[400:, :] - upright[400:, :]).mean() < 3
        # Inside the face the detail is gone: a big difference from the original.
        assert np.abs(pixels[face] - upright[face]).mean() > 8
        assert not list(Path(copy).parent.glob(".*.part"))

    # A second run finds every copy up to date; overwrite redoes them.
    again = _run(
        "anonymize_images",
        ds.view(),
        {"output_dir": str(out_dir), "label_fields": ["ground_truth"]},
    )
    assert again["skipped"] == 2 and again["processed"] == 0
    redo = _run(
        "anonymize_images",
        ds.view(),
        {"output_dir": str(out_dir), "label_fields": ["ground_truth"], "overwrite": True},
    )
    assert redo["processed"] == 2

    # Changing the boxes makes the copy stale: only that sample is redone.
    first = ds.first()
    first.ground_truth = _gt(fo, box=(0.1, 0.1, 0.2, 0.2))
    first.save()
    changed = _run(
        "anonymize_images",
        ds.view(),
        {"output_dir": str(out_dir), "label_fields": ["ground_truth"]},
    )
    assert (changed["processed"], changed["skipped"]) == (1, 1)


def test_output_folder_over_the_sources_is_refused(make_dataset, photo_tree):
    import fiftyone as fo

    from fiftyone_anonymizer.jobs import anonymize as pipeline
    from fiftyone_anonymizer.jobs import copies

    paths = sorted(photo_tree.rglob("*.jpg"))
    ds = make_dataset([fo.Sample(filepath=str(p), ground_truth=_gt(fo)) for p in paths])
    before = {p: _sha(p) for p in paths}
    with pytest.raises(ValueError, match="overwrite|replace"):
        pipeline.anonymize_images(ds, output_dir=photo_tree, label_fields="ground_truth")
    assert copies.check_output_dir(photo_tree, [str(p) for p in paths])
    assert copies.check_output_dir(photo_tree.parent / "safe", [str(p) for p in paths]) is None
    assert {p: _sha(p) for p in paths} == before


def test_confidence_and_class_filters_choose_the_boxes(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer.jobs import anonymize as pipeline

    src = tmp_path / "src"
    src.mkdir()
    img = np.full((100, 200, 3), 128, np.uint8)
    img[:, ::2] = 0  # fine stripes: any blur changes them
    Image.fromarray(img).save(src / "stripes.png")
    dets = fo.Detections(
        detections=[
            fo.Detection(label="face", bounding_box=[0.05, 0.1, 0.2, 0.4], confidence=0.9),
            fo.Detection(label="face", bounding_box=[0.40, 0.1, 0.2, 0.4], confidence=0.1),
            fo.Detection(label="car", bounding_box=[0.75, 0.1, 0.2, 0.4], confidence=0.9),
        ]
    )
    ds = make_dataset([fo.Sample(filepath=str(src / "stripes.png"), preds=dets)])
    report = pipeline.anonymize_images(
        ds, tmp_path / "out", label_fields="preds", classes=["face"], min_confidence=0.5
    )
    assert report.boxes_per_class == {"face": 1}
    out = np.asarray(Image.open(ds.first().anonymized_filepath))
    assert out.shape == img.shape  # PNG stays PNG, RGB stays RGB
    changed_cols = np.nonzero((out != img).any(axis=(0, 2)))[0]
    # only the confident face (columns 10-50, grown by the blur's margin) changed: not the
    # unconfident face (80-120) nor the car (150-190)
    assert changed_cols.size and changed_cols.min() <= 10 and changed_cols.max() < 80


def _bad_input_tree(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True)
    files = {}
    good = _astronaut()
    Image.fromarray(good).save(root / "good.jpg", quality=90)
    files["good"] = root / "good.jpg"
    files["missing"] = root / "missing.jpg"
    data = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    files["truncated"] = root / "truncated.jpg"
    (root / "empty.jpg").write_bytes(b"")
    files["empty"] = root / "empty.jpg"
    (root / "text.jpg").write_text("this is not an image\n")
    files["text"] = root / "text.jpg"
    _exif_rotated_jpeg(root / "rotated.jpg", good)
    files["rotated"] = root / "rotated.jpg"
    Image.fromarray(good).convert("CMYK").save(root / "cmyk.jpg", quality=90)
    files["cmyk"] = root / "cmyk.jpg"
    Image.fromarray((np.mean(good, axis=2) * 257).astype(np.uint16)).save(root / "gray16.png")
    files["gray16"] = root / "gray16.png"
    rgba = np.dstack([good, np.full(good.shape[:2], 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    files["rgba"] = root / "rgba.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(root / "tiny.png")
    files["tiny"] = root / "tiny.png"
    Image.new("RGB", (12000, 8000), (90, 120, 150)).save(root / "huge.jpg", quality=80)
    files["huge"] = root / "huge.jpg"
    return files


def test_bad_inputs_fail_clearly_and_the_job_goes_on(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer.jobs import anonymize as pipeline

    files = _bad_input_tree(tmp_path / "src")
    before = {k: _sha(p) for k, p in files.items() if p.exists()}
    boxes = {k: _gt(fo) for k in files}
    ds = make_dataset([fo.Sample(filepath=str(p), ground_truth=boxes[k]) for k, p in files.items()])

    report = pipeline.anonymize_images(ds, tmp_path / "out", label_fields="ground_truth")
    bad = {"missing", "truncated", "empty", "text"}
    assert report.processed == len(files) - len(bad)
    assert {Path(p).stem for p in report.failed} == bad
    reasons = {Path(p).stem: r for p, r in report.failed.items()}
    assert "not found" in reasons["missing"]
    assert "empty" in reasons["empty"]
    assert "not a recognised image" in reasons["text"]
    assert "decoded" in reasons["truncated"]

    by_name = {Path(s.filepath).stem: s for s in ds}
    for name in bad:
        assert by_name[name].anonymized_filepath is None
        assert by_name[name].anonymizer_error.startswith("anonymize: ")
        assert not (tmp_path / "out" / files[name].name).exists()
    for name in set(files) - bad:
        assert by_name[name].anonymizer_error is None
        assert Path(by_name[name].anonymized_filepath).is_file()

    out = tmp_path / "out"
    assert not list(out.rglob("*.part")) and not list(out.rglob(".*"))  # no partial copies
    assert {k: _sha(p) for k, p in files.items() if p.exists()} == before  # originals untouched

    with Image.open(by_name["rotated"].anonymized_filepath) as img:
        assert img.size == (512, 512) and not img.getexif()
    with Image.open(by_name["rgba"].anonymized_filepath) as img:
        assert img.mode == "RGBA" and np.asarray(img)[..., 3].min() == 200  # alpha kept
    with Image.open(by_name["cmyk"].anonymized_filepath) as img:
        assert img.format == "JPEG" and img.mode == "RGB"
    with Image.open(by_name["gray16"].anonymized_filepath) as img:
        assert img.format == "PNG" and img.mode == "L"
    with Image.open(by_name["huge"].anonymized_filepath) as img:
        assert img.size == (12000, 8000)


@pytest.mark.models
def test_detect_and_anonymize_bad_inputs_with_the_real_models(make_dataset, tmp_path):
    import fiftyone as fo

    files = _bad_input_tree(tmp_path / "src")
    before = {k: _sha(p) for k, p in files.items() if p.exists()}
    ds = make_dataset([fo.Sample(filepath=str(p)) for p in files.values()])

    det = _run("detect_faces_and_plates", ds.view(), {})
    assert det["failed"] == 4 and det["processed"] == len(files) - 4
    by_name = {Path(s.filepath).stem: s for s in ds}
    for name in ("good", "rotated", "cmyk", "rgba", "gray16"):
        faces = [d for d in by_name[name].anonymizer_detections.detections if d.label == "face"]
        assert faces, f"no face found in {name}"
        x, y, w, h = faces[0].bounding_box
        cx, cy = x + w / 2, y + h / 2  # the face centre, upright (EXIF applied)
        assert 0.3 < cx < 0.6 and 0.05 < cy < 0.45, (name, faces[0].bounding_box)
    assert by_name["missing"].anonymizer_error.startswith("detect: ")

    info = ds.get_field("anonymizer_detections").info
    assert info["thresholds"] and "centerface" in str(info) and info["effort"] == "balanced"
    # The effort level reaches the detector and is recorded with the labels.
    good = ds.match({"filepath": str(files["good"])})
    _run("detect_faces_and_plates", good.view(), {"effort": "thorough", "overwrite": True})
    info = ds.get_field("anonymizer_detections").info
    assert info["effort"] == "thorough" and info["backends"][0]["flip"] is True
    assert info["config"]["effort"] == "thorough"
    assert [d.label for d in good.first().anonymizer_detections.detections].count("face") >= 1

    anon = _run("anonymize_images", ds.view(), {"output_dir": str(tmp_path / "out")})
    assert anon["failed"] == 4, anon["failures"]
    assert {k: _sha(p) for k, p in files.items() if p.exists()} == before


def test_share_clones_only_anonymized_samples_with_copies_as_media(
    make_dataset, photo_tree, tmp_path
):
    import fiftyone as fo

    from fiftyone_anonymizer.jobs import anonymize as pipeline

    paths = sorted(photo_tree.rglob("*.jpg"))
    missing = photo_tree / "gone.jpg"
    ds = make_dataset(
        [
            fo.Sample(filepath=str(p), ground_truth=_gt(fo), other=_gt(fo, label="x"))
            for p in [*paths, missing]
        ]
    )
    pipeline.anonymize_images(ds, tmp_path / "out", label_fields="ground_truth")
    name = f"{ds.name}-shared"
    result = _run(
        "share_anonymized",
        ds.view(),
        {
            "name": name,
            "label_fields": ["ground_truth"],
            "export_dir": str(tmp_path / "export"),
            "dataset_type": "COCODetectionDataset",
        },
    )
    try:
        shared = fo.load_dataset(name)
        assert result["processed"] == 2 and result["skipped"] == 1
        assert sorted(shared.values("filepath")) == sorted(
            ds.exists("anonymized_filepath").values("anonymized_filepath")
        )
        schema = shared.get_field_schema()
        assert "ground_truth" in schema and "other" not in schema
        assert "anonymized_filepath" not in schema and "anonymizer_error" not in schema
        assert not set(shared.values("filepath")) & {str(p) for p in paths}
        exported = sorted(p.name for p in (tmp_path / "export").rglob("*.jpg"))
        assert exported and len(exported) == 2
        assert (tmp_path / "export" / "labels.json").is_file()
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


@pytest.mark.slow
def test_delegated_execution_with_a_real_worker(make_dataset, photo_tree, tmp_path):
    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    paths = sorted(photo_tree.rglob("*.jpg"))
    ds = make_dataset([fo.Sample(filepath=str(p), ground_truth=_gt(fo)) for p in paths])
    ds.persistent = True  # the worker is another process: it loads the dataset by name

    op = foo.get_operator(f"{PLUGIN_NAME}/anonymize_images")
    queued = op(
        ds.view(), output_dir=str(tmp_path / "out"), label_fields=["ground_truth"], delegate=True
    )
    doc_id = queued.result["id"]
    service = DelegatedOperationService()
    assert service.get(doc_id).run_state == ExecutionRunState.QUEUED

    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 (handed to the worker process)
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "fiftyone"), "delegated", "launch"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        state = None
        while time.time() < deadline:
            state = service.get(doc_id).run_state
            if state in (ExecutionRunState.COMPLETED, ExecutionRunState.FAILED):
                break
            time.sleep(2)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
    doc = service.get(doc_id)
    assert state == ExecutionRunState.COMPLETED, (tmp_path / "worker.log").read_text()[-3000:]
    assert doc.result.result["processed"] == 2
    # The panel shows the delegated run and its report, without `fiftyone delegated info`.
    from fiftyone_anonymizer.app.panel import recent_runs

    (run,) = recent_runs(ds.name)
    assert run["operator"] == "anonymize_images" and "completed" in run["state"]
    assert "2 copies written" in run["summary"], run
    ds.reload()
    assert all(Path(p).is_file() for p in ds.values("anonymized_filepath"))
