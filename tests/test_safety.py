"""No path overwrites an original, destroys a field or leaks a face (issue 22), without models:
field names and folders are checked in one place for every front end, videos work in the
forms, share is all or nothing, and unknown keywords are refused.

The command line's probes (an output folder above the input, two videos with one name, a rerun
with ``--no-audio``) load the models: they are in ``test_faults.py``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import build_form
from conftest import make_clip as clip

FACE_BOX = (0.30, 0.05, 0.28, 0.36)
FRAMES = 8


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _photos(folder: Path, count: int = 2) -> list[Path]:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"p{i}.jpg"
        Image.fromarray(np.roll(data.astronaut(), 11 * i, axis=1)).save(path, quality=90)
        paths.append(path)
    return paths


def _dets(fo, boxes=(FACE_BOX,), label="face", confidence=0.9, **attrs):
    return fo.Detections(
        detections=[
            fo.Detection(label=label, bounding_box=list(b), confidence=confidence, **attrs)
            for b in boxes
        ]
    )


def _photo_dataset(make_dataset, root: Path, count: int = 2):
    import fiftyone as fo

    hand = _dets(fo, confidence=None)
    return make_dataset(
        [
            fo.Sample(filepath=str(p), ground_truth=hand.copy(), boxes=_dets(fo))
            for p in _photos(root / "src", count)
        ]
    )


def _video_dataset(make_dataset, paths: list[Path]):
    """Videos with a tracked face on every frame (as the detect job leaves them), and a
    hand-drawn frame field the user owns."""
    import fiftyone as fo

    from fiftyone_anonymizer.jobs import fields

    ds = make_dataset([fo.Sample(filepath=str(p)) for p in paths])
    fields.declare_frame_detections_field(ds, fields.DEFAULT_LABEL_FIELD)
    for sample in ds:
        for n in range(1, FRAMES + 1):
            sample.frames[n][fields.DEFAULT_LABEL_FIELD] = _dets(fo, index=1)
            sample.frames[n]["hand"] = _dets(fo, confidence=None)
        sample.save()
    return ds


def _invalid(props) -> dict[str, str]:
    return {
        name: getattr(p, "error_message", None) or getattr(p.view, "label", "")
        for name, p in props.items()
        if getattr(p, "invalid", False)
    }


class _FixedDetector:
    """Stands in for the models: the same boxes for every image."""

    def __init__(self, detections):
        self.detections = list(detections)

    def detect(self, images):
        return [list(self.detections) for _ in images]


# --------------------------------------------------------------------------------------------
# 1. Video datasets in the forms, the panel's counts and share


def test_the_forms_work_on_a_video_dataset(make_dataset, tmp_path):
    from fiftyone_anonymizer.app.anonymize import _anonymize_inputs
    from fiftyone_anonymizer.app.detect import _detect_inputs
    from fiftyone_anonymizer.app.share import _share_inputs
    from fiftyone_anonymizer.detectors import DEFAULT_THRESHOLDS
    from fiftyone_anonymizer.videos import VIDEO_THRESHOLDS

    ds = _video_dataset(make_dataset, [clip(tmp_path / "src" / "pan.mp4")])
    ok, props = build_form(_anonymize_inputs, ds, {"output_dir": str(tmp_path / "copies")})
    assert ok and not _invalid(props), _invalid(props)
    labels = {c.value: c.label for c in props["label_fields"].view.choices}
    assert labels == {
        "anonymizer_detections": "frames.anonymizer_detections",
        "hand": "frames.hand",
    }
    assert "audio" in props  # the copy's audio can be left out from the App too

    _, props = build_form(_detect_inputs, ds, {})
    assert props["face_threshold"].default == VIDEO_THRESHOLDS["face"] != DEFAULT_THRESHOLDS["face"]
    # the effort level applies to videos too, explained for frames
    assert props["effort"].default == "balanced" and "frame" in props["effort"].view.description

    from fiftyone_anonymizer import anonymize_images

    anonymize_images(ds, tmp_path / "copies")
    ok, props = build_form(_share_inputs, ds, {})
    assert ok and not _invalid(props), _invalid(props)
    assert "frames.anonymizer_detections" in props["label_fields"].default


def test_the_anonymize_operator_runs_on_a_video_dataset(make_dataset, tmp_path):
    """Through FiftyOne's operator machinery (which validates the form first): before, it
    raised "Validation error. Path: no_fields"."""
    import fiftyone.operators as foo

    from conftest import PLUGIN_NAME
    from fiftyone_anonymizer.core import video

    src = clip(tmp_path / "src" / "pan.mp4")
    ds = _video_dataset(make_dataset, [src])
    result = foo.execute_operator(
        f"{PLUGIN_NAME}/anonymize_images",
        {"view": ds.view(), "params": {"output_dir": str(tmp_path / "copies")}},
    )
    result.raise_exceptions()
    assert result.result["processed"] == 1, result.result
    copy = Path(ds.first().anonymized_filepath)
    assert video.probe(copy).frames == FRAMES
    assert ds.app_config.modal_media_field == "anonymized_filepath"  # the modal plays the copy


def test_status_counts_video_detections_as_tracks(make_dataset, tmp_path):
    from fiftyone_anonymizer import anonymization_status, anonymize_images

    ds = _video_dataset(make_dataset, [clip(tmp_path / "src" / "pan.mp4")])
    status = anonymization_status(ds)
    assert status.counts()["detected"] == 1  # it said "Detected 0" on videos
    assert dict(status.boxes_per_class) == {"face": 1}  # one face on 8 frames: one track
    report = anonymize_images(ds, tmp_path / "copies")
    assert dict(report.boxes_per_class) == {"face": 1}  # counted the same way (tracks)
    assert report.extra["counted"] == "tracks"


# --------------------------------------------------------------------------------------------
# 2, 9. Folders: one rule for copies and exports


def test_an_output_folder_that_holds_the_sources_is_refused(make_dataset, tmp_path):
    """The parent of the data (copies mirrored there would land on the files around it), a
    folder inside the tree the sources share, and system trees: refused before any work."""
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images
    from fiftyone_anonymizer.core.paths import output_dir_problem

    top = tmp_path / "P"
    _photos(top)  # P/p0.jpg, P/p1.jpg: someone's photos
    inner = _photos(top / "sub")  # the dataset's: P/sub/p0.jpg ...
    before = {p: _sha(p) for p in top.rglob("*.jpg")}
    ds = make_dataset([fo.Sample(filepath=str(p), boxes=_dets(fo)) for p in inner])
    with pytest.raises(ValueError, match="holds the source folder"):
        anonymize_images(ds, top, label_fields="boxes")
    assert {p: _sha(p) for p in top.rglob("*.jpg")} == before

    # Media one level deeper than the folder asked for: <source>/images/{a,b}/*.jpg
    deeper = tmp_path / "source" / "images"
    media = _photos(deeper / "a") + _photos(deeper / "b")
    ds2 = make_dataset([fo.Sample(filepath=str(p), boxes=_dets(fo)) for p in media])
    with pytest.raises(ValueError, match="inside the source folder"):
        anonymize_images(ds2, deeper / "out", label_fields="boxes")
    assert not (deeper / "out").exists()
    for system in ("/etc/anon", "/usr/anon", "/root/anon-out", "/var/lib/anon"):
        assert "system folder" in (output_dir_problem(system, []) or ""), system
    assert output_dir_problem("/var/tmp/anon", []) is None
    assert output_dir_problem(tmp_path / "beside", [deeper / "a", deeper / "b"]) is None


def test_the_export_folder_follows_the_same_rule(make_dataset, tmp_path):
    from fiftyone_anonymizer import anonymize_images, share_anonymized

    ds = _photo_dataset(make_dataset, tmp_path)
    anonymize_images(ds, tmp_path / "copies", label_fields="boxes")
    before = sorted(p.name for p in (tmp_path / "src").iterdir())
    with pytest.raises(ValueError, match="source folder"):
        share_anonymized(ds, name=f"x-{tmp_path.name}", export_dir=tmp_path / "src")
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == before  # no data/ written

    from fiftyone_anonymizer.jobs.share import share_problems

    for folder, words in (
        (tmp_path / "src", "source folder"),
        (Path("/etc"), "system"),
        (Path("/etc/exports"), "system folder"),
        (tmp_path / "copies", "source folder"),  # the copies' folder is no export folder
        (tmp_path, "holds the source folder"),
    ):
        problems = share_problems(ds, name="x", export_dir=folder)
        assert words in problems.get("export_dir", ""), (folder, problems)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("someone's")
    assert "not empty" in share_problems(ds, name="x", export_dir=tmp_path / "full")["export_dir"]


# --------------------------------------------------------------------------------------------
# 3, 4. Copies: two sources never share one, the audio is part of the recipe


def test_two_videos_with_one_name_get_two_copies(make_dataset, tmp_path):
    from fiftyone_anonymizer import anonymize_images

    mp4 = clip(tmp_path / "src" / "still_face.mp4")
    mkv = clip(tmp_path / "src" / "still_face.mkv", audio=False)
    ds = _video_dataset(make_dataset, [mp4, mkv])
    report = anonymize_images(ds, tmp_path / "out")
    copies = ds.values("anonymized_filepath")
    assert report.processed == 2 and len(set(copies)) == 2, copies
    assert sorted(Path(c).name for c in copies) == ["still_face.mkv.mp4", "still_face.mp4"]

    from fiftyone_anonymizer.jobs.copies import copy_targets

    targets = copy_targets([str(mp4), str(mkv)], tmp_path / "out", video=True)
    assert sorted(targets.values()) == sorted(Path(c) for c in copies)


def test_a_rerun_without_audio_remakes_the_copy(make_dataset, tmp_path):
    from fiftyone_anonymizer import anonymize_images
    from fiftyone_anonymizer.core import video

    ds = _video_dataset(make_dataset, [clip(tmp_path / "src" / "pan.mp4")])
    anonymize_images(ds, tmp_path / "out")
    copy = ds.first().anonymized_filepath
    assert video.probe(copy).has_audio
    report = anonymize_images(ds, tmp_path / "out", audio=False)
    assert (report.processed, report.skipped) == (1, 0)  # not "current already"
    assert not video.probe(ds.first().anonymized_filepath).has_audio


# --------------------------------------------------------------------------------------------
# 5, 10. Share: all or nothing, never an original, never the review's results


def test_share_refuses_before_it_creates_anything(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images, share_anonymized

    ds = _photo_dataset(make_dataset, tmp_path)
    anonymize_images(ds, tmp_path / "copies", label_fields="boxes")
    name = f"shared-{tmp_path.name}"
    before = set(fo.list_datasets())
    export = tmp_path / "export"
    with pytest.raises(ValueError, match="exactly one detections field"):
        share_anonymized(
            ds,
            name=name,
            label_fields=["boxes", "ground_truth"],
            export_dir=export,
            dataset_type="COCODetectionDataset",
        )
    with pytest.raises(ValueError, match="does not hold anonymized copies"):
        share_anonymized(ds, name=name, output_field="filepath")  # the originals
    assert set(fo.list_datasets()) == before and not export.exists()
    try:
        shared, _ = share_anonymized(
            ds,
            name=name,
            label_fields=["boxes"],
            export_dir=export,
            dataset_type="COCODetectionDataset",
        )
        assert len(shared) == 2 and (export / "labels.json").is_file()
        assert not set(shared.values("filepath")) & set(ds.values("filepath"))
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_a_share_that_fails_midway_leaves_nothing(make_dataset, tmp_path, monkeypatch):
    import fiftyone as fo
    import fiftyone.core.collections as foc

    from fiftyone_anonymizer import anonymize_images, share_anonymized

    ds = _photo_dataset(make_dataset, tmp_path)
    anonymize_images(ds, tmp_path / "copies", label_fields="boxes")
    name = f"shared-{tmp_path.name}"
    before = set(fo.list_datasets())

    def broken_export(self, *args, **kwargs):
        Path(kwargs["export_dir"]).mkdir(parents=True)
        (Path(kwargs["export_dir"]) / "labels.json").write_text("")
        raise OSError("disk gone")

    monkeypatch.setattr(foc.SampleCollection, "export", broken_export)
    export = tmp_path / "new" / "export"
    with pytest.raises(OSError, match="disk gone"):
        share_anonymized(ds, name=name, export_dir=export)
    assert set(fo.list_datasets()) == before  # no half dataset
    assert not (tmp_path / "new").exists()  # no half export, no folder made for it
    monkeypatch.undo()
    try:
        shared, _ = share_anonymized(ds, name=name, export_dir=export)  # a retry just works
        assert len(shared) == 2 and (export / "samples.json").is_file()
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_the_shared_dataset_keeps_nothing_of_the_audit(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images, audit_anonymization, share_anonymized
    from fiftyone_anonymizer.core.boxes import Detection

    ds = _photo_dataset(make_dataset, tmp_path)
    anonymize_images(ds, tmp_path / "copies", label_fields="boxes")
    missed = Detection("face", 0.9, (0.7, 0.6, 0.15, 0.15))
    audit_anonymization(ds, gt_field="ground_truth", detector=_FixedDetector([missed]))
    assert ds.has_field("anonymizer_eval_tp") and ds.has_field("anonymizer_residual")
    name = f"shared-{tmp_path.name}"
    try:
        shared, _ = share_anonymized(
            ds, name=name, include_left_out=True, export_dir=tmp_path / "export"
        )
        flat = shared.get_field_schema(flat=True)
        assert not [f for f in flat if "anonymizer" in f or "eval" in f], sorted(flat)
        assert "ground_truth" in flat and "boxes" in flat
        text = (tmp_path / "export" / "samples.json").read_text()
        assert "anonymizer_eval" not in text and "anonymizer_residual" not in text
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_a_shared_video_dataset_keeps_no_residual_frames(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images, audit_anonymization, share_anonymized
    from fiftyone_anonymizer.core.boxes import Detection

    ds = _video_dataset(make_dataset, [clip(tmp_path / "src" / "pan.mp4")])
    anonymize_images(ds, tmp_path / "copies")
    missed = Detection("face", 0.9, (0.05, 0.5, 0.3, 0.4))
    report = audit_anonymization(ds, detector=_FixedDetector([missed]), every=2)
    assert report.flagged == 1 and ds.has_frame_field("anonymizer_residual")
    name = f"shared-{tmp_path.name}"
    try:
        shared, _ = share_anonymized(ds, name=name, include_left_out=True)
        frames = shared.get_frame_field_schema()
        assert "anonymizer_residual" not in frames and "anonymizer_residual_possible" not in frames
        assert "anonymizer_detections" in frames and "hand" in frames
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


# --------------------------------------------------------------------------------------------
# 6. Field names: a job replaces only its own field, and names are checked


def test_fields_the_plugin_did_not_write_are_never_replaced(make_dataset, tmp_path):
    from fiftyone_anonymizer import (
        anonymize_images,
        audit_anonymization,
        detect_faces_and_plates,
    )
    from fiftyone_anonymizer.core.boxes import Detection

    ds = _photo_dataset(make_dataset, tmp_path)
    truth = [s.ground_truth.to_dict() for s in ds]
    paths = ds.values("filepath")
    with pytest.raises(ValueError, match="'filepath' exists and was not written"):
        anonymize_images(ds, tmp_path / "copies", label_fields="boxes", output_field="filepath")
    with pytest.raises(ValueError, match="'ground_truth' exists and was not written"):
        detect_faces_and_plates(ds, label_field="ground_truth", detector=_FixedDetector([]))
    with pytest.raises(ValueError, match="not a valid field name"):
        detect_faces_and_plates(ds, label_field="bad name!", detector=_FixedDetector([]))
    anonymize_images(ds, tmp_path / "copies", label_fields="boxes")
    missed = _FixedDetector([Detection("face", 0.9, (0.7, 0.6, 0.15, 0.15))])
    with pytest.raises(ValueError, match="'ground_truth' exists and was not written"):
        audit_anonymization(ds, residual_field="ground_truth", detector=missed)
    detect_faces_and_plates(ds, detector=_FixedDetector([]))
    with pytest.raises(ValueError, match="holds detections of this plugin"):
        # ours, written for another purpose
        audit_anonymization(ds, residual_field="anonymizer_detections", detector=missed)
    assert [s.ground_truth.to_dict() for s in ds] == truth
    assert ds.values("filepath") == paths
    assert not ds.has_field("bad name!")
    # The plugin's own fields, written for that purpose, are replaced as before.
    assert anonymize_images(ds, tmp_path / "copies", label_fields="boxes", overwrite=True).processed
    assert audit_anonymization(ds, detector=missed).audited == 2


def test_the_forms_refuse_those_names_before_execute(make_dataset, tmp_path):
    from fiftyone_anonymizer import anonymize_images
    from fiftyone_anonymizer.app.anonymize import _anonymize_inputs
    from fiftyone_anonymizer.app.audit import _audit_inputs
    from fiftyone_anonymizer.app.detect import _detect_inputs
    from fiftyone_anonymizer.app.share import _share_inputs

    ds = _photo_dataset(make_dataset, tmp_path)
    for build, params, field, words in (
        (_detect_inputs, {"label_field": "ground_truth"}, "label_field", "was not written"),
        (_detect_inputs, {"label_field": "bad name!"}, "label_field", "not a valid"),
        (
            _anonymize_inputs,
            {"label_fields": ["boxes"], "output_field": "filepath"},
            "output_field",
            "was not written",
        ),
    ):
        _, props = build_form(build, ds, {"output_dir": str(tmp_path / "copies"), **params})
        assert words in _invalid(props).get(field, ""), (params, _invalid(props))
    anonymize_images(ds, tmp_path / "copies", label_fields="boxes")
    _, props = build_form(_audit_inputs, ds, {"residual_field": "ground_truth"})
    assert "was not written" in _invalid(props).get("residual_field", ""), _invalid(props)
    # The anonymized field pointed at a Detections field: no traceback, an error by the field.
    ok, props = build_form(_share_inputs, ds, {"output_field": "boxes"})
    assert not ok and "does not hold anonymized copies" in _invalid(props)["output_field"]
    _, props = build_form(
        _share_inputs,
        ds,
        {
            "label_fields": ["boxes", "ground_truth"],
            "export_dir": str(tmp_path / "export"),
            "dataset_type": "COCODetectionDataset",
        },
    )
    assert "exactly one detections field" in _invalid(props)["label_fields"]


# --------------------------------------------------------------------------------------------
# 7. Unknown keywords


def test_unknown_keywords_are_refused_with_the_closest_name(make_dataset, tmp_path):
    from fiftyone_anonymizer import (
        BlurSettings,
        anonymize_images,
        audit_anonymization,
        detect_faces_and_plates,
    )

    ds = _photo_dataset(make_dataset, tmp_path, count=1)
    # a detector setting is a keyword of its own (the form's name), but not beside detector=
    with pytest.raises(TypeError, match=r"detector= and detector settings \(plates\)"):
        detect_faces_and_plates(ds, plates=None, detector=_FixedDetector([]))
    with pytest.raises(TypeError, match="'thresholds'; the closest valid name is '"):
        detect_faces_and_plates(ds, thresholds={"face": 0.8}, detector=_FixedDetector([]))
    with pytest.raises(TypeError, match="'outputfield'; the closest valid name is 'output_field'"):
        anonymize_images(ds, tmp_path / "copies", outputfield="x")
    with pytest.raises(TypeError, match=r"settings= and blur settings \(mode\)"):
        anonymize_images(ds, tmp_path / "copies", mode="pixelate", settings=BlurSettings())
    with pytest.raises(TypeError, match="'mod'; the closest valid name is 'mode'"):
        anonymize_images(ds, tmp_path / "copies", mod="pixelate")
    with pytest.raises(TypeError, match="'gt'; the closest valid name is 'gt_field'"):
        audit_anonymization(ds, gt="ground_truth")
    assert not ds.has_field("anonymizer_detections") and not ds.has_field("anonymized_filepath")
    # The engine's own options still pass.
    assert detect_faces_and_plates(ds, detector=_FixedDetector([]), batch_size=2).processed == 1


# --------------------------------------------------------------------------------------------
# 8. The App shows the copies after any front end made them


def test_the_sdk_makes_the_copies_the_apps_media(make_dataset, tmp_path):
    from fiftyone_anonymizer import anonymize_images

    ds = _photo_dataset(make_dataset, tmp_path)
    anonymize_images(ds, tmp_path / "copies", label_fields="boxes")
    assert ds.app_config.grid_media_field == "anonymized_filepath"
    assert ds.app_config.modal_media_field == "anonymized_filepath"
    js = Path(__file__).resolve().parents[1] / "plugin" / "app" / "show_media.js"
    assert "show_media" in js.read_text()  # the open App's switch, loaded by fiftyone.yml


def test_an_app_run_on_a_view_shows_that_views_copies(make_dataset, tmp_path):
    """The copies become the open App's media, and the App shows the run's samples that have
    a copy (the others were red error tiles that read as a failed job)."""
    from fiftyone_anonymizer import anonymize_images
    from fiftyone_anonymizer.app.anonymize import show_copies_in_app

    class Ops:
        def set_view(self, view):
            return ("set_view", sorted(view.values("id")))

    class AppCtx:
        ops = Ops()

        def trigger(self, uri, params=None):
            return ("trigger", uri, params)

    ds = _photo_dataset(make_dataset, tmp_path, count=3)
    view = ds.limit(2)
    anonymize_images(view, tmp_path / "copies", label_fields="boxes")
    operations = show_copies_in_app(AppCtx(), view, "anonymized_filepath")
    assert operations[0] == (
        "trigger",
        "@fiftyone-anonymizer/anonymize/show_media",
        {"field": "anonymized_filepath"},
    )
    assert operations[1] == ("set_view", sorted(view.values("id")))
    assert show_copies_in_app(AppCtx(), ds.view(), "anonymized_filepath")[1] == (
        "set_view",
        sorted(view.values("id")),
    )
    anonymize_images(ds, tmp_path / "copies", label_fields="boxes")
    assert len(show_copies_in_app(AppCtx(), ds.view(), "anonymized_filepath")) == 1


# --------------------------------------------------------------------------------------------
# 11. Messages


def test_messages_name_the_option_and_the_media(make_dataset, tmp_path):
    from fiftyone_anonymizer.folders import PlanError, plan_folder

    movie = clip(tmp_path / "in" / "file.mp4")
    with pytest.raises(PlanError, match="--input takes a folder, and .* is a file"):
        plan_folder(movie, tmp_path / "out")
    from fiftyone_anonymizer.core import video

    text = Path(video.__file__).read_text()
    assert "--no-audio" in text and "drop it (audio=False)" not in text


# --------------------------------------------------------------------------------------------
# 12. Likely misses shown by default, possible ones apart


def test_likely_and_possible_misses_are_apart_and_only_likely_shown(make_dataset, tmp_path):
    from fiftyone_anonymizer import anonymize_images, audit_anonymization
    from fiftyone_anonymizer.core.boxes import Detection

    ds = _photo_dataset(make_dataset, tmp_path, count=1)
    anonymize_images(ds, tmp_path / "copies", label_fields="boxes")
    likely = Detection("face", 0.9, (0.7, 0.6, 0.15, 0.15))
    possible = Detection("face", 0.9, (0.05, 0.9, 0.02, 0.02))  # 10 px: cannot be read
    report = audit_anonymization(ds, detector=_FixedDetector([likely, possible]))
    sample = ds.first()
    assert [d.tier for d in sample.anonymizer_residual.detections] == ["likely"]
    assert [d.tier for d in sample.anonymizer_residual_possible.detections] == ["possible"]
    assert report.flagged == 1
    active = ds.app_config.active_fields
    assert active.exclude and active.paths == ["anonymizer_residual_possible"]
    colours = {e["path"]: e["fieldColor"] for e in ds.app_config.color_scheme.fields}
    assert colours["anonymizer_residual"] != colours["anonymizer_residual_possible"]
    info = ds.get_field("anonymizer_residual_possible").info
    assert info["purpose"] == "possible residuals"
    json.dumps(report.to_dict())
