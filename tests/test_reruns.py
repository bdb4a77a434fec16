"""Reruns and output folders: a new folder means new copies, the field and its info agree, and
one output-folder rule holds for the SDK, the form and the command line (no models needed)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FACE_BOX = (0.30, 0.05, 0.28, 0.36)


def _photos(root: Path, folders=("a", "b"), per_folder: int = 2) -> list[Path]:
    from skimage import data

    paths = []
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_folder):
            path = root / folder / f"p{i}.jpg"
            Image.fromarray(np.roll(data.astronaut(), 7 * i, axis=1)).save(path, quality=90)
            paths.append(path)
    return paths


def _dataset(make_dataset, paths):
    import fiftyone as fo

    gt = fo.Detections(detections=[fo.Detection(label="face", bounding_box=list(FACE_BOX))])
    return make_dataset([fo.Sample(filepath=str(p), ground_truth=gt.copy()) for p in paths])


def test_a_new_output_folder_means_new_copies_and_the_info_follows(make_dataset, tmp_path):
    from fiftyone_anonymizer import anonymize_images
    from fiftyone_anonymizer.jobs import copies

    ds = _dataset(make_dataset, _photos(tmp_path / "src"))
    first = anonymize_images(ds, tmp_path / "out-a", label_fields="ground_truth")
    assert first.processed == 4
    again = anonymize_images(ds, tmp_path / "out-a", label_fields="ground_truth")
    assert (again.processed, again.skipped) == (0, 4)

    moved = anonymize_images(ds, tmp_path / "out-b", label_fields="ground_truth")
    assert (moved.processed, moved.skipped) == (4, 0), moved.to_dict()
    copy_paths = ds.values("anonymized_filepath")
    assert all(Path(c).is_file() and Path(c).is_relative_to(tmp_path / "out-b") for c in copy_paths)
    info = ds.get_field("anonymized_filepath").info
    assert info["output_dir"] == str(tmp_path / "out-b")
    # Every value's recipe is in the info, and only those in use or just recorded.
    recipes = copies.AnonymizeRecipe.read_all(ds, "anonymized_filepath")
    for copy, fp in zip(copy_paths, ds.values("anonymized_filepath_fingerprint")):
        own = recipes[copies.recipe_id_of(fp)]
        assert Path(copy).is_relative_to(own.output_dir)


def test_two_views_into_two_folders_keep_field_and_info_in_agreement(make_dataset, tmp_path):
    from fiftyone_anonymizer import BlurSettings, anonymize_images, audit_anonymization
    from fiftyone_anonymizer.jobs import copies

    paths = _photos(tmp_path / "src")
    ds = _dataset(make_dataset, paths)
    half = ds.limit(2)
    rest = ds.skip(2)
    anonymize_images(half, tmp_path / "out-a", label_fields="ground_truth")
    anonymize_images(
        rest,
        tmp_path / "out-b",
        label_fields="ground_truth",
        settings=BlurSettings(mode="pixelate"),
    )
    recipes = copies.AnonymizeRecipe.read_all(ds, "anonymized_filepath")
    folders = set()
    for copy, fp in zip(
        ds.values("anonymized_filepath"), ds.values("anonymized_filepath_fingerprint")
    ):
        own = recipes[copies.recipe_id_of(fp)]
        assert Path(copy).is_relative_to(own.output_dir)
        folders.add((own.output_dir, own.settings.mode))
    assert folders == {(str(tmp_path / "out-a"), "blur"), (str(tmp_path / "out-b"), "pixelate")}
    # The audit rebuilds each copy's regions from its own recipe: nothing is stale.
    report = audit_anonymization(ds, detector=_NoBoxes())
    assert report.audited == 4 and not report.stale, report.to_dict()


class _NoBoxes:
    name, labels = "none", ("face",)

    def detect(self, images):
        return [[] for _ in images]


def test_runs_that_start_together_both_land_in_the_info(make_dataset, tmp_path):
    from fiftyone_anonymizer import BlurSettings
    from fiftyone_anonymizer.jobs import copies

    ds = _dataset(make_dataset, _photos(tmp_path / "src", per_folder=1))
    copies.declare_copy_fields(ds, "anonymized_filepath")
    made = [
        copies.AnonymizeRecipe(
            ("ground_truth",),
            settings=BlurSettings(strength=s),
            output_dir=str(tmp_path / f"out-{i}"),
        )
        for i, s in enumerate((0.1, 0.2, 0.3, 0.4))
    ]
    threads = [
        threading.Thread(target=copies.record_copies, args=(ds, "anonymized_filepath", "test", r))
        for r in made
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ds.reload()
    recorded = ds.get_field("anonymized_filepath").info["recipes"]
    assert set(recorded) == {r.recipe_id for r in made}


def test_output_inside_any_source_folder_or_a_system_folder_is_refused(make_dataset, tmp_path):
    from fiftyone_anonymizer import anonymize_images
    from fiftyone_anonymizer.core.paths import output_dir_problem

    paths = _photos(tmp_path / "data")  # data/a and data/b: their common root holds no image
    ds = _dataset(make_dataset, paths)
    for bad, reason in (
        (tmp_path / "data" / "a", "source folder"),
        (tmp_path / "data" / "a" / "copies", "inside the source folder"),
        (Path("/"), "system"),
        (Path.home(), "system or home"),
    ):
        with pytest.raises(ValueError, match=reason):
            anonymize_images(ds, bad, label_fields="ground_truth")
    assert not (tmp_path / "data" / "a" / "copies").exists()
    assert output_dir_problem(tmp_path / "beside", [tmp_path / "data" / "a"]) is None
    assert anonymize_images(ds, tmp_path / "beside", label_fields="ground_truth").processed == 4


def test_the_form_shows_the_same_rule(make_dataset, tmp_path):
    import fiftyone.operators.types as types

    from fiftyone_anonymizer.app.anonymize import _anonymize_inputs

    ds = _dataset(make_dataset, _photos(tmp_path / "data"))

    class Ctx:
        dataset = ds
        params = {"output_dir": str(tmp_path / "data" / "b" / "copies")}

        def view_target(self, *a, **k):
            pass

    inputs = types.Object()
    inputs.view_target = lambda ctx: None  # the view chooser needs a live App context
    assert _anonymize_inputs(Ctx(), inputs)
    prop = inputs.properties["output_dir"]
    assert prop.invalid and "inside the source folder" in prop.error_message
