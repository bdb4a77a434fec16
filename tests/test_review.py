"""What a reviewer relies on: share leaves out what is not safe, mistakes are caught in the form,
a run that obscures nothing says so, the status adds up (no models needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import build_form

FACE_BOX = (0.30, 0.05, 0.28, 0.36)


def _dataset(make_dataset, root: Path, count: int = 5):
    import fiftyone as fo
    from skimage import data

    (root / "src").mkdir(parents=True)
    samples = []
    for i in range(count):
        path = root / "src" / f"p{i}.jpg"
        Image.fromarray(np.roll(data.astronaut(), 9 * i, axis=1)).save(path, quality=90)
        det = fo.Detection(label="face", bounding_box=list(FACE_BOX), confidence=0.9)
        samples.append(fo.Sample(filepath=str(path), boxes=fo.Detections(detections=[det])))
    return make_dataset(samples)


def _form(build, dataset, params):
    return build_form(build, dataset, params)[1]


def test_share_leaves_out_flagged_failed_stale_and_unobscured_samples(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images, share_anonymized
    from fiftyone_anonymizer.jobs.share import (
        FAILED,
        FLAGGED,
        NOT_CURRENT,
        NOTHING_OBSCURED,
        check_shareable,
    )

    ds = _dataset(make_dataset, tmp_path)
    anonymize_images(ds, tmp_path / "out", label_fields="boxes")
    s0, s1, s2, s3, s4 = ds.iter_samples()
    s0.tags.append("needs_review")  # the audit found a miss
    s0.save()
    s1.boxes = fo.Detections(
        detections=[  # boxes changed after the copy was made
            fo.Detection(label="face", bounding_box=[0.1, 0.1, 0.2, 0.2], confidence=0.9)
        ]
    )
    s1.save()
    ds.select(s2.id).set_values("anonymizer_error", ["anonymize: broken"])  # a failure
    anonymize_images(
        ds.select(s3.id), tmp_path / "out", label_fields="boxes", min_confidence=0.95
    )  # the floor filters every box away
    check = check_shareable(ds)
    assert check.ready == [s4.id]
    assert check.left_out[FLAGGED] == [s0.id] and check.left_out[NOT_CURRENT] == [s1.id]
    assert check.left_out[FAILED] == [s2.id] and check.left_out[NOTHING_OBSCURED] == [s3.id]

    name = f"shared-{tmp_path.name}"
    try:
        shared, report = share_anonymized(ds, name=name)
        assert len(shared) == 1 and report.extra["left_out"] == {
            FAILED: 1,
            FLAGGED: 1,
            NOT_CURRENT: 1,
            NOTHING_OBSCURED: 1,
        }
        assert "needs_review" not in shared.distinct("tags")
        shared, report = share_anonymized(ds, name=name, overwrite=True, include_left_out=True)
        assert len(shared) == 4 and report.extra["left_out"] == {FAILED: 1}  # never a failure
        assert "needs_review" not in shared.distinct("tags")
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_a_confidence_floor_outside_0_1_is_refused_and_an_empty_run_warns(make_dataset, tmp_path):
    from fiftyone_anonymizer import anonymize_images

    ds = _dataset(make_dataset, tmp_path, count=2)
    with pytest.raises(ValueError, match="between 0 and 1"):
        anonymize_images(ds, tmp_path / "out", label_fields="boxes", min_confidence=2.0)
    assert not ds.has_field("anonymized_filepath")
    report = anonymize_images(ds, tmp_path / "out", label_fields="boxes", min_confidence=0.95)
    assert report.processed == 2 and not report.boxes_per_class
    assert "obscure nothing" in report.extra["warnings"][0]


def test_the_forms_catch_mistakes_before_execute(make_dataset, tmp_path):
    from fiftyone_anonymizer.app.anonymize import _anonymize_inputs
    from fiftyone_anonymizer.app.detect import _detect_inputs

    ds = _dataset(make_dataset, tmp_path, count=1)
    good = {"label_fields": ["boxes"], "output_dir": str(tmp_path / "copies")}
    props = _form(_anonymize_inputs, ds, good)
    assert not any(getattr(p, "invalid", False) for p in props.values())

    for params, field, words in (
        ({"label_fields": ["nope"]}, "label_fields", "not a detections field"),
        ({"min_confidence": 2.0}, "min_confidence", "between 0 and 1"),
        ({"seed_kernel": "21;2;9"}, "seed_kernel", "size,sigma,smoothing"),
        ({"feather": 8}, "feather", "odd"),
        ({"box_scale": 9}, "box_scale", "between 0.5 and 4"),
        ({"jpeg_quality": 0}, "jpeg_quality", "between 1 and 100"),
        ({"output_dir": "relative/path"}, "output_dir", "absolute path"),
        ({"output_dir": str(tmp_path / "src" / "copies")}, "output_dir", "inside the source"),
    ):
        props = _form(_anonymize_inputs, ds, {**good, **params})
        assert props[field].invalid and words in props[field].error_message, (params, field)

    props = _form(_detect_inputs, ds, {"face_threshold": 0})
    assert (
        props["face_threshold"].invalid
        and "between 0.001 and 1" in props["face_threshold"].error_message
    )


def test_the_share_form_says_how_many_are_left_out_and_why(make_dataset, tmp_path):
    from fiftyone_anonymizer import anonymize_images
    from fiftyone_anonymizer.app.share import _share_inputs

    ds = _dataset(make_dataset, tmp_path, count=3)
    anonymize_images(ds, tmp_path / "out", label_fields="boxes")
    first = ds.first()
    first.tags.append("needs_review")
    first.save()
    props = _form(_share_inputs, ds, {})
    assert (
        "2 sample(s) will be shared; 1 left out: 1 tagged for review"
        in props["left_out"].view.label
    )
    assert "include_left_out" in props
    props = _form(_share_inputs, ds, {"include_left_out": True})
    assert props["left_out"].view.label.startswith("3 sample(s) will be shared")


def test_status_counts_every_group(make_dataset, tmp_path):
    from fiftyone_anonymizer import anonymization_status, anonymize_images

    ds = _dataset(make_dataset, tmp_path, count=4)
    counts = anonymization_status(ds).counts()
    assert counts["samples"] == 4 and counts["anonymized"] == 0 and counts["not_anonymized"] == 4
    anonymize_images(ds.limit(3), tmp_path / "out", label_fields="boxes")
    first = ds.first()
    first.tags.append("needs_review")
    first.save()
    status = anonymization_status(ds, label_field="boxes")
    counts = status.counts()
    assert (
        counts["detected"],
        counts["anonymized"],
        counts["ready"],
        counts["flagged"],
        counts["not_anonymized"],
        counts["failed"],
    ) == (4, 3, 2, 1, 1, 0)
    assert dict(status.boxes_per_class) == {"face": 4}
