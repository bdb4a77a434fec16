"""The FiftyOne ways in, from a fresh copy of the repository served on 127.0.0.1: the plugin
(``fiftyone plugins download`` + ``requirements``) and the remote model zoo source
(``foz.register_zoo_model_source`` + ``foz.load_zoo_model``). Nothing leaves this machine:
the archive is served by a local HTTP server the test starts, and pip may not use an index."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import HAND_FACE, PLUGIN_NAME, REPO_ROOT, box_iou

ARCHIVE = "fiftyone-anonymizer.zip"


def _git_archive(dest: Path) -> None:
    """``git archive --format=zip`` of the checkout as a fresh clone of it would be once
    committed: tracked files with their changes and new files git does not ignore. The tree
    is written through a temporary index, so the checkout's own index is left alone."""
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: no archive of it to serve")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        subprocess.run(["git", "add", "-A", "."], cwd=REPO_ROOT, env=env, check=True)
        tree = subprocess.run(
            ["git", "write-tree"], cwd=REPO_ROOT, env=env, check=True, capture_output=True
        )
    subprocess.run(
        [
            "git",
            "archive",
            "--format=zip",
            "--prefix=fiftyone-anonymizer/",
            "-o",
            str(dest),
            tree.stdout.decode().strip(),
        ],
        cwd=REPO_ROOT,
        check=True,
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base's name)
        pass


@contextlib.contextmanager
def _serve(folder: Path) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` serving ``folder`` until the block ends."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def archive_url(tmp_path_factory) -> Iterator[str]:
    """The URL of the checkout's zip archive, served from 127.0.0.1."""
    folder = tmp_path_factory.mktemp("served")
    _git_archive(folder / ARCHIVE)
    with _serve(folder) as base:
        yield f"{base}/{ARCHIVE}"


def _offline_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell, with pip kept off any package index."""
    return {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "FIFTYONE_DO_NOT_TRACK": "true",
        **extra,
    }


def _fiftyone(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The ``fiftyone`` command of this environment."""
    script = Path(sys.executable).parent / "fiftyone"
    command = (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-c", "import sys; from fiftyone.core.cli import main; main()"]
    )
    proc = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"fiftyone {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


# --------------------------------------------------------------------------------------------
# What the routes read (no network, no models)


def test_requirements_match_the_package_and_the_manifests():
    """requirements.txt (the plugin route) lists the package's dependencies but FiftyOne,
    whose range fiftyone.yml states, as pyproject does; each zoo model needs a subset."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    dependencies = pyproject["project"]["dependencies"]
    fiftyone_range = next(d for d in dependencies if d.startswith("fiftyone"))
    requirements = _requirement_lines(REPO_ROOT / "requirements.txt")
    assert sorted(requirements) == sorted(d for d in dependencies if d != fiftyone_range)

    meta = yaml.safe_load((REPO_ROOT / "fiftyone.yml").read_text())
    assert fiftyone_range == f"fiftyone{meta['fiftyone']['version']}"
    assert meta["license"] and meta["operators"] and meta["panels"]

    from fiftyone_anonymizer.core.weights import load_manifest
    from fiftyone_anonymizer.models import MODELS, WEIGHTS, zoo_model_name

    zoo = json.loads((REPO_ROOT / "manifest.json").read_text())
    specs = load_manifest()
    assert sorted(m["base_name"] for m in zoo["models"]) == sorted(map(zoo_model_name, MODELS))
    for entry in zoo["models"]:
        name = entry["base_name"].split("/", 1)[1]
        assert entry["size_bytes"] == sum(
            json.loads((REPO_ROOT / "models" / "manifest.json").read_text())["models"][w][
                "size_bytes"
            ]
            for w in WEIGHTS[name]
        )
        assert set(entry["license"].split(",")) == {specs[w].licence for w in WEIGHTS[name]}
        for requirement in entry["requirements"]["packages"]:
            first = requirement.split("|")[0]
            assert first in requirements, requirement


# --------------------------------------------------------------------------------------------
# The plugin route


@pytest.mark.slow
def test_plugin_route_from_a_fresh_copy(archive_url, tmp_path):
    """``fiftyone plugins download <archive>``, its requirements printed, ensured and
    installed (already satisfied here: pip may not reach an index), its operators listed,
    and the downloaded copy (not this checkout) is the code that runs."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    env = _offline_env(FIFTYONE_PLUGINS_DIR=str(plugins))

    _fiftyone("plugins", "download", archive_url, env=env)
    (downloaded,) = [p.parent for p in plugins.rglob("fiftyone.yml")]
    assert (downloaded / "requirements.txt").is_file()
    assert not (downloaded / ".venv").exists()  # a fresh copy, not this checkout

    printed = _fiftyone("plugins", "requirements", PLUGIN_NAME, "--print", env=env)
    meta = yaml.safe_load((REPO_ROOT / "fiftyone.yml").read_text())
    assert printed.stdout.split() == [
        f"fiftyone{meta['fiftyone']['version']}",
        *_requirement_lines(REPO_ROOT / "requirements.txt"),
    ]
    _fiftyone("plugins", "requirements", PLUGIN_NAME, "--ensure", "--error-level", "0", env=env)
    installed = _fiftyone(
        "plugins", "requirements", PLUGIN_NAME, "--install", "--error-level", "0", env=env
    )
    for requirement in _requirement_lines(REPO_ROOT / "requirements.txt"):
        name = Requirement(requirement).name
        assert f"Requirement already satisfied: {name}" in installed.stdout, requirement
    assert "Successfully installed" not in installed.stdout  # nothing changed here

    listed = _fiftyone("operators", "list", "--no-builtins", "--include-unlisted", env=env)
    uris = {line.split()[0] for line in listed.stdout.splitlines() if line.startswith("@")}
    assert uris == {f"{PLUGIN_NAME}/{name}" for name in [*meta["operators"], *meta["panels"]]}

    code = (
        "import sys, fiftyone.operators as foo; "
        f"foo.get_operator('{PLUGIN_NAME}/detect_faces_and_plates'); "
        "print(sys.modules['fiftyone_anonymizer'].__file__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert Path(proc.stdout.strip()) == downloaded / "plugin" / "__init__.py"


# --------------------------------------------------------------------------------------------
# The zoo route

_ZOO_RUN = r"""
import json, sys
import fiftyone as fo
import fiftyone.zoo as foz

url, image = sys.argv[1], sys.argv[2]
foz.register_zoo_model_source(url)
names = foz.list_zoo_models(source=url)
name = "fiftyone-anonymizer/faces-and-plates"
model = foz.load_zoo_model(name)
dataset = fo.Dataset()
dataset.add_sample(fo.Sample(filepath=image))
dataset.apply_model(model, label_field="m")
labels = dataset.first()["m"]
print(json.dumps({
    "names": names,
    "library": sys.modules["fiftyone_anonymizer"].__file__,
    "record": json.load(open(foz.find_zoo_model(name))),
    "boxes": [[d.label, d.confidence, d.bounding_box] for d in labels.detections],
}))
dataset.delete()
"""


@pytest.mark.models
def test_zoo_source_from_a_local_archive_finds_faces(archive_url, tmp_path, astronaut):
    """Registered from the archive URL, the source lists the three models; the zoo model
    downloads (its weights sha256-checked), loads, and ``apply_model`` finds the astronaut's
    face, with the source's own copy of the library (not this checkout's) doing the work."""
    from PIL import Image

    from fiftyone_anonymizer.core.weights import load_manifest

    image = tmp_path / "astronaut.jpg"
    Image.fromarray(astronaut).save(image, quality=92)
    zoo = tmp_path / "zoo"
    env = _offline_env(FIFTYONE_MODEL_ZOO_DIR=str(zoo))
    proc = subprocess.run(
        [sys.executable, "-c", _ZOO_RUN, archive_url, str(image)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert out["names"] == [
        "fiftyone-anonymizer/faces",
        "fiftyone-anonymizer/faces-and-plates",
        "fiftyone-anonymizer/plates",
    ]
    assert Path(out["library"]).resolve().is_relative_to(zoo.resolve())
    specs = load_manifest()
    assert {w["name"]: w["sha256"] for w in out["record"]["weights"]} == {
        name: specs[name].sha256 for name in ("centerface", "yolov8-plates")
    }
    faces = [box for label, _, box in out["boxes"] if label == "face"]
    assert faces and max(box_iou(box, HAND_FACE) for box in faces) >= 0.5
