"""Shared fixtures: the evaluation photos beside the checkout, and an isolated FiftyOne database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SKIP_NO_SHARED = "../shared/data not found beside the checkout (evaluation photos are not part of the repo)"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real photos with boxes; skips the test with a visible reason when absent."""
    if not (SHARED_DATA / "faces" / "labels.json").is_file():
        pytest.skip(SKIP_NO_SHARED)
    return SHARED_DATA
