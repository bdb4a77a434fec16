"""scripts/check_layers.py (run by ``make lint``): it catches an upward import and a circle,
lazy imports included, and the package itself passes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location(
        "check_layers", REPO / "scripts" / "check_layers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CLEAN = {
    "__init__.py": "from . import engine\n",
    "core/__init__.py": "",
    "core/boxes.py": "import numpy\n",
    "blur/__init__.py": "from ..core.boxes import x\n",
    "engine.py": "from .blur import y\nfrom fiftyone_anonymizer.core import boxes\n",
    "jobs/__init__.py": "",
    "jobs/detect.py": "from .. import engine\n",
    "cli.py": "def main():\n    from .jobs.detect import run\n",
}


def test_a_clean_package_passes(tmp_path):
    check = _checker()
    root = _package(tmp_path / "pkg", CLEAN)
    assert check.problems(root) == []
    edges = check.graph(root)
    assert edges["cli"] == {"jobs.detect"} and edges["engine"] == {"blur", "core.boxes"}


def test_an_upward_import_even_a_lazy_one_is_caught(tmp_path):
    check = _checker()
    files = {**CLEAN, "jobs/detect.py": "def f():\n    from ..cli import main\n"}
    found = check.problems(_package(tmp_path / "pkg", files))
    assert found == [
        "jobs.detect imports cli: up from 'jobs: the FiftyOne layer' to 'front ends'",
        "circle of 2 modules: cli -> jobs.detect, jobs.detect -> cli",  # cli imports it too
    ]


def test_a_circle_inside_one_layer_is_caught(tmp_path):
    check = _checker()
    files = {
        **CLEAN,
        "jobs/audit.py": "from .videos import f\n",
        "jobs/videos.py": "def g():\n    from . import audit\n",
    }
    found = check.problems(_package(tmp_path / "pkg", files))
    assert found == ["circle of 2 modules: jobs.audit -> jobs.videos, jobs.videos -> jobs.audit"]


def test_a_module_without_a_layer_is_caught(tmp_path):
    check = _checker()
    found = check.problems(_package(tmp_path / "pkg", {**CLEAN, "stray.py": ""}))
    assert found == ["stray: no layer (add it to LAYERS in scripts/check_layers.py)"]


def test_the_package_points_down_with_no_circle():
    check = _checker()
    assert check.problems(REPO / "plugin") == []
