"""One parameter list per job: the App form, the operator's ``__call__`` and the SDK job use
the same names, and ``execute`` hands the form's values to the job as they are."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import build_form

FACE_BOX = (0.35, 0.12, 0.18, 0.23)


def _form_names(build, dataset, params) -> set[str]:
    """The parameters a form asks for (views that only show a message are no parameter)."""
    import fiftyone.operators.types as types

    _, properties = build_form(build, dataset, params)
    return {n for n, p in properties.items() if not isinstance(p.type, types.Void)}


def _call_names(operator_cls) -> set[str]:
    skip = {"self", "sample_collection", "delegate", "shards"}
    return set(inspect.signature(operator_cls.__call__).parameters) - skip


@pytest.fixture
def anonymized(make_dataset, tmp_path):
    """Two photos with hand boxes, anonymized (no models needed)."""
    import fiftyone as fo
    from skimage import data

    from fiftyone_anonymizer import anonymize_images

    folder = tmp_path / "src"
    folder.mkdir()
    samples = []
    for i in range(2):
        path = folder / f"p{i}.jpg"
        Image.fromarray(np.roll(data.astronaut(), 9 * i, axis=1)).save(path, quality=90)
        box = fo.Detection(label="face", bounding_box=list(FACE_BOX), confidence=0.9)
        samples.append(fo.Sample(filepath=str(path), boxes=fo.Detections(detections=[box])))
    ds = make_dataset(samples)
    anonymize_images(ds, tmp_path / "copies", label_fields="boxes")
    return ds


def test_form_call_and_sdk_share_one_parameter_list(anonymized, tmp_path):
    from fiftyone_anonymizer.app import anonymize as anonymize_app
    from fiftyone_anonymizer.app import audit as audit_app
    from fiftyone_anonymizer.app import detect as detect_app
    from fiftyone_anonymizer.app import share as share_app
    from fiftyone_anonymizer.app.forms import LAUNCH_PARAMS
    from fiftyone_anonymizer.jobs import audit, share
    from fiftyone_anonymizer.jobs.anonymize import anonymize_images
    from fiftyone_anonymizer.jobs.database import accepted_keywords
    from fiftyone_anonymizer.jobs.detect import detect_faces_and_plates

    cases = [
        (detect_app._detect_inputs, detect_app.DetectFacesAndPlates, detect_faces_and_plates, {}),
        (
            anonymize_app._anonymize_inputs,
            anonymize_app.AnonymizeImages,
            anonymize_images,
            {"output_dir": str(tmp_path / "more"), "label_fields": ["boxes"]},
        ),
        (audit_app._audit_inputs, audit_app.AuditAnonymization, audit.audit_anonymization, {}),
        (share_app._share_inputs, share_app.ShareAnonymized, share.share_anonymized, {"name": "x"}),
    ]
    for build, operator_cls, job, params in cases:
        accepted = accepted_keywords(job)
        form = _form_names(build, anonymized, params) - set(LAUNCH_PARAMS)
        assert form, job.__name__
        assert form <= accepted, (job.__name__, sorted(form - accepted))
        called = _call_names(operator_cls)
        assert called <= accepted, (job.__name__, sorted(called - accepted))
        # the detector's and the blur's settings are the job's own keywords too
        if "detector" in accepted:
            assert {"effort", "face_threshold", "faces"} <= accepted
        if "settings" in accepted:
            assert {"mode", "strength", "seed_kernel"} <= accepted


def test_execute_hands_the_form_values_to_the_job_unchanged():
    from fiftyone_anonymizer.app.forms import AS_DETECTED, job_params
    from fiftyone_anonymizer.jobs.anonymize import anonymize_images
    from fiftyone_anonymizer.jobs.audit import audit_anonymization
    from fiftyone_anonymizer.jobs.detect import detect_faces_and_plates

    form = {
        "label_field": "faces",
        "faces": "centerface",
        "plates": "none",
        "face_threshold": 0.3,
        "plate_threshold": None,
        "effort": "thorough",
        "overwrite": True,
        "shards": 1,
    }
    assert job_params(detect_faces_and_plates, form) == {
        "label_field": "faces",
        "faces": "centerface",
        "plates": None,
        "face_threshold": 0.3,
        "effort": "thorough",
        "overwrite": True,
    }
    anonymize = {"output_dir": "/x", "mode": "pixelate", "seed_kernel": "", "classes": ["face"]}
    assert job_params(anonymize_images, anonymize) == {
        "output_dir": "/x",
        "mode": "pixelate",
        "classes": ["face"],
    }
    assert job_params(audit_anonymization, {"effort": AS_DETECTED, "tag": "t"}) == {"tag": "t"}


def test_the_jobs_take_their_settings_as_keywords_and_refuse_both_ways(anonymized, tmp_path):
    from fiftyone_anonymizer import BlurSettings, DetectorConfig, anonymize_images
    from fiftyone_anonymizer.jobs import copies
    from fiftyone_anonymizer.jobs.detect import detect_faces_and_plates

    report = anonymize_images(
        anonymized, tmp_path / "pixelated", label_fields="boxes", mode="pixelate", strength=0.2
    )
    assert report.processed == 2
    recipe = copies.AnonymizeRecipe.read(anonymized)
    assert recipe.settings == BlurSettings(mode="pixelate", strength=0.2)
    with pytest.raises(TypeError, match="settings= and blur settings"):
        anonymize_images(
            anonymized, tmp_path / "x", label_fields="boxes", settings=BlurSettings(), mode="fill"
        )
    with pytest.raises(TypeError, match="detector= and detector settings"):
        detect_faces_and_plates(anonymized, detector=DetectorConfig(), effort="fast")
    assert not Path(tmp_path / "x").exists()
