"""Shared fixtures: the evaluation photos beside the checkout, and an isolated FiftyOne database."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; FO_ANONYMIZER_SHARED_DATA points elsewhere (or nowhere, to
# check that the suite passes on a fresh clone without it).
SHARED_DATA = Path(
    os.environ.get("FO_ANONYMIZER_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
)
SKIP_NO_SHARED = (
    "../shared/data not found beside the checkout (evaluation photos are not part of the repo)"
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")


# The astronaut (scikit-image's sample portrait): the real face every detector test looks at.
HAND_FACE = (0.35, 0.12, 0.18, 0.23)  # her face as a hand box, forehead to chin, relative xywh


def box_iou(a, b) -> float:
    """IoU of two relative ``[x, y, w, h]`` boxes (the library's own ``iou_matrix``)."""
    import numpy as np

    from fiftyone_anonymizer.core.boxes import iou_matrix, xywh_to_xyxy

    return float(iou_matrix(xywh_to_xyxy(np.array([a])), xywh_to_xyxy(np.array([b])))[0, 0])


class FormContext:
    """Enough of an operator context to build a form (what the forms' ``_inputs`` read)."""

    def __init__(self, dataset, params):
        self.dataset = dataset
        self.params = params

    def target_view(self):
        return self.dataset.view()


def build_form(build, dataset, params):
    """Builds an operator's form with ``build(ctx, inputs)``; returns what ``build`` returned
    (whether Execute is allowed) and the form's properties by name."""
    import fiftyone.operators.types as types

    inputs = types.Object()
    inputs.view_target = lambda ctx: None  # the view chooser needs a live App context
    ok = build(FormContext(dataset, params), inputs)
    return ok, inputs.properties


def make_clip(path: Path, frames: int = 8, audio: bool = True, fps: int = 8) -> Path:
    """The astronaut panning in a 160x120 window (H.264), with a tone as audio."""
    import av
    import numpy as np
    from PIL import Image
    from skimage import data

    path.parent.mkdir(parents=True, exist_ok=True)
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((240, 240)))
    container = "mp4" if path.suffix == ".mp4" else "matroska"
    with av.open(str(path), "w", format=container) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for i in range(frames):
            window = np.ascontiguousarray(photo[10 : 10 + 120, 20 + 3 * i : 180 + 3 * i])
            out.mux(video.encode(av.VideoFrame.from_ndarray(window, format="rgb24")))
        out.mux(video.encode())
        if sound is not None:
            tone = (np.sin(np.arange(16000 * frames // fps) / 5) * 8000).astype(np.int16)
            chunk = av.AudioFrame.from_ndarray(tone[None, :], format="s16", layout="mono")
            chunk.sample_rate = 16000
            out.mux(sound.encode(chunk))
            out.mux(sound.encode())
    return path


@pytest.fixture(scope="session")
def astronaut():
    """The astronaut as RGB uint8."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real photos with boxes; skips the test with a visible reason when absent."""
    if not (SHARED_DATA / "faces" / "labels.json").is_file():
        pytest.skip(SKIP_NO_SHARED)
    return SHARED_DATA


# FiftyOne reads its configuration at import: point it at a throwaway database and at a plugins
# folder that holds only this checkout, before any test imports fiftyone.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="fo-anonymizer-tests-"))
os.environ["FIFTYONE_DATABASE_DIR"] = str(_SESSION_TMP / "db")


def _private_mongod() -> subprocess.Popen | None:
    """This session's own ``mongod`` on a free port, its URI in ``FIFTYONE_DATABASE_URI`` (the
    test process and every process it starts use it). FiftyOne's embedded database service
    attaches to any one already running on the machine, whatever its folder: a second test
    session (another checkout) would share the first one's database and lose it when that
    session ends. None (the embedded service then) when ``mongod`` cannot start here."""
    from services import free_port, mongod_binary

    folder = _SESSION_TMP / "private-db"
    folder.mkdir()
    port = free_port()
    try:
        proc = subprocess.Popen(
            [
                str(mongod_binary()),
                *("--dbpath", str(folder), "--port", str(port), "--bind_ip", "127.0.0.1"),
                *("--quiet", "--logpath", str(folder / "mongod.log")),
                *("--wiredTigerCacheSizeGB", "0.5"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except (OSError, RuntimeError):
        return None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                os.environ["FIFTYONE_DATABASE_URI"] = f"mongodb://127.0.0.1:{port}"
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    return None


_MONGOD = _private_mongod()
_PLUGINS_DIR = _SESSION_TMP / "plugins"
_PLUGINS_DIR.mkdir()
(_PLUGINS_DIR / "fiftyone-anonymizer").symlink_to(REPO_ROOT, target_is_directory=True)
os.environ["FIFTYONE_PLUGINS_DIR"] = str(_PLUGINS_DIR)
PLUGIN_NAME = "@fiftyone-anonymizer/anonymize"


@pytest.fixture(scope="session")
def plugins_dir() -> Path:
    return _PLUGINS_DIR


class DataLoss:
    """What the data-loss probes of ``test_faults.py`` measured, summed over the session and
    printed at its end (``make test-faults``): files a job must not write that changed, user
    fields whose values changed, datasets or exports a failed job left, and shared or copied
    media that still hold an original (its pixels or its audio). Each probe records what it
    measured, then asserts it is zero."""

    COUNTS = ("originals modified", "fields destroyed", "partial datasets", "leaked originals")

    def __init__(self) -> None:
        self.counts = dict.fromkeys(self.COUNTS, 0)
        self.copies_overwritten = 0
        self.started = 0
        self.measured = 0

    def record(self, **counts: int) -> None:
        """Add one probe's measurements (keyword: the count's name with underscores)."""
        for key, value in counts.items():
            name = key.replace("_", " ")
            if name == "copies overwritten":
                self.copies_overwritten += value
            else:
                self.counts[name] += value
        self.measured += 1

    def line(self) -> str:
        return ", ".join(f"{name} {self.counts[name]}" for name in self.COUNTS)


_DATA_LOSS = DataLoss()


@pytest.fixture
def data_loss() -> DataLoss:
    """The session's :class:`DataLoss` tally, for a probe to record into."""
    _DATA_LOSS.started += 1
    return _DATA_LOSS


def pytest_terminal_summary(terminalreporter):
    if not _DATA_LOSS.started:
        return
    terminalreporter.section("data-loss probes")
    terminalreporter.write_line(
        f"{_DATA_LOSS.measured} of {_DATA_LOSS.started} probes measured; copies overwritten "
        f"by another source's copy {_DATA_LOSS.copies_overwritten}"
    )
    terminalreporter.write_line(_DATA_LOSS.line())


@pytest.fixture
def make_dataset(request):
    """Create uniquely named FiftyOne datasets and delete them after the test."""
    import fiftyone as fo

    created = []

    def make(samples=None, name=None):
        ds = fo.Dataset(
            name or f"t-{request.node.name[:40]}-{len(created)}-{os.getpid()}", overwrite=True
        )
        if samples:
            ds.add_samples(samples)
        created.append(ds)
        return ds

    yield make
    for ds in created:
        if fo.dataset_exists(ds.name):
            fo.delete_dataset(ds.name)


def pytest_unconfigure(config):
    """Remove the throwaway database and plugins folder (a full run leaves ~300 MB)."""
    import shutil
    import sys

    database = sys.modules.get("fiftyone.core.odm.database")
    service = getattr(database, "_db_service", None)
    if service is not None:  # stop mongod before its folder goes
        service.stop()
        database._db_service = None
    if _MONGOD is not None:
        _MONGOD.terminate()
        try:
            _MONGOD.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _MONGOD.kill()
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)
