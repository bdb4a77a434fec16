"""``make demo``: the whole job on the built-in example, and a dataset the App can open."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.models


def test_the_demo_leaves_a_dataset_to_open_in_the_app(tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer.demo import DATASET_NAME

    proc = subprocess.run(
        [sys.executable, "-m", "fiftyone_anonymizer.demo", "--output", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"open it in the App:   fiftyone app launch {DATASET_NAME}" in proc.stdout
        assert "FiftyOne's database in" in proc.stdout or "MongoDB server at" in proc.stdout
        ds = fo.load_dataset(DATASET_NAME)
        assert ds.persistent and len(ds) == 3
        assert ds.app_config.grid_media_field == ds.app_config.modal_media_field
        assert ds.app_config.modal_media_field == "anonymized_filepath"
        assert all(Path(p).is_file() for p in ds.values("anonymized_filepath"))
        assert (tmp_path / "demo" / "before_after.jpg").is_file()
    finally:
        if fo.dataset_exists(DATASET_NAME):
            fo.delete_dataset(DATASET_NAME)
