"""A real browser drives the FiftyOne App: find the operator, run "Anonymize images", see the copy.

Headless Debian Chromium through Playwright (never a downloaded browser). Screenshots are kept in
``out/test-artifacts/browser/`` (or ``$TEST_ARTIFACTS_DIR``) for a person to look at.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.models]  # every test here loads the detection models

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def _artifacts() -> Path:
    path = (
        Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO_ROOT / "out" / "test-artifacts")) / "browser"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status < 500:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the App did not answer at {url}")


@pytest.fixture
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make setup installs it when run as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def _app_page(browser, dataset, failure_shot: Path, settle_ms: int) -> Iterator[Any]:
    """The App serving ``dataset`` in a page of ``browser``, its grid shown; a screenshot to
    ``failure_shot`` when the block fails; the App closed afterwards."""
    import fiftyone as fo

    port = _free_port()
    session = fo.launch_app(dataset, remote=True, port=port, auto=False)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        _wait_http(f"http://127.0.0.1:{port}/")
        page.goto(f"http://127.0.0.1:{port}/datasets/{dataset.name}", wait_until="domcontentloaded")
        page.wait_for_selector("[data-cy='fo-grid']", timeout=90_000)
        page.wait_for_timeout(settle_ms)
        yield page
    except Exception:
        page.screenshot(path=str(failure_shot))
        raise
    finally:
        session.close()


def test_anonymize_from_the_operator_browser(browser, make_dataset, tmp_path):
    import fiftyone as fo
    from skimage import data

    src = tmp_path / "src"
    src.mkdir()
    paths = []
    for name, pixels in (("astronaut.jpg", data.astronaut()), ("coffee.jpg", data.coffee())):
        Image.fromarray(pixels).save(src / name, quality=92)
        paths.append(src / name)
    boxes = fo.Detections(
        detections=[
            fo.Detection(label="face", bounding_box=[0.3, 0.05, 0.28, 0.36], confidence=0.9)
        ]
    )
    ds = make_dataset([fo.Sample(filepath=str(p), anonymizer_detections=boxes) for p in paths])
    ds.persistent = True  # the App's server is another process
    out_dir = tmp_path / "anonymized"

    shots = _artifacts()
    with _app_page(browser, ds, shots / "failure.png", settle_ms=3000) as page:
        page.screenshot(path=str(shots / "01-grid.png"))

        # The backquote opens the operator browser; typing filters it.
        page.keyboard.press("Backquote")
        page.wait_for_timeout(1000)
        page.keyboard.type("anonymize images")
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shots / "02-operator-browser.png"))
        entry = page.get_by_text("Anonymizer: anonymize images").first
        entry.wait_for(timeout=30_000)
        for name in ("detect faces and plates", "share anonymized dataset"):
            page.keyboard.press("Control+a")
            page.keyboard.type(name.split()[0])
            page.get_by_text(f"Anonymizer: {name}").first.wait_for(timeout=10_000)
        page.keyboard.press("Control+a")
        page.keyboard.type("anonymize images")
        page.get_by_text("Anonymizer: anonymize images").first.click()

        # The form: point the output folder at our temp dir, then execute.
        page.wait_for_selector("text=Output folder", timeout=30_000)
        field = page.get_by_text("Output folder", exact=True).locator("xpath=following::input[1]")
        field.fill(str(out_dir / "copies"))
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / "03-form.png"))
        page.get_by_role("button", name="Execute").click()
        page.get_by_text("copies written").first.wait_for(timeout=180_000)
        page.screenshot(path=str(shots / "04-finished.png"))

        ds.reload()
        copies = ds.values("anonymized_filepath")
        assert all(
            c and Path(c).is_file() and Path(c).is_relative_to(out_dir / "copies") for c in copies
        )
        assert "anonymized_filepath" in ds.app_config.media_fields

        # The media switch: pick the new field under "Display options"; the grid must then ask
        # the server for the copies (the App requests media by path).
        served: list[str] = []
        page.on("request", lambda r: served.append(urllib.parse.unquote(r.url)))
        page.keyboard.press("Escape")
        page.reload(wait_until="domcontentloaded")
        page.wait_for_selector("[data-cy='action-display-options']", timeout=60_000)
        page.wait_for_timeout(2000)
        if page.get_by_text("Dismiss").count():
            page.get_by_text("Dismiss").first.click()
        page.locator("[data-cy='action-display-options']").first.click()
        popup = page.get_by_text("Media field", exact=True).locator("..")
        popup.get_by_text("anonymized_filepath", exact=True).click()
        page.wait_for_timeout(4000)
        page.screenshot(path=str(shots / "05-media-field-anonymized.png"))
        assert any(f"filepath={c}" in u for u in served for c in copies), served[-20:]

        astronaut = next(c for c in copies if "astronaut" in c)
        before = np.asarray(Image.open(paths[0])).astype(int)
        after = np.asarray(Image.open(astronaut)).astype(int)
        assert (
            np.abs(after[60:180, 180:280] - before[60:180, 180:280]).mean() > 8
        )  # the face is blurred


def _run_delegated(view, operator: str, params: dict, tmp_path: Path) -> None:
    """Queue ``operator`` on ``view`` as a delegated operation and run a real worker
    (``fiftyone delegated launch``) until it is done. Queued from a thread: the browser
    fixture's event loop would turn FiftyOne's call into a task of its own."""
    import subprocess
    import sys
    import threading

    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    from conftest import PLUGIN_NAME

    queued: dict = {}

    def queue() -> None:
        queued["op"] = foo.execute_operator(
            f"{PLUGIN_NAME}/{operator}",
            {"view": view, "params": params},
            request_delegation=True,
        )

    thread = threading.Thread(target=queue)
    thread.start()
    thread.join()
    doc_id = queued["op"].result["id"]
    service = DelegatedOperationService()
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "fiftyone"), "delegated", "launch"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.time() + 240
            while time.time() < deadline:
                if str(service.get(doc_id).run_state) in ("completed", "failed"):
                    break
                time.sleep(2)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert str(service.get(doc_id).run_state) == "completed", (tmp_path / "worker.log").read_text()[
        -3000:
    ]


def _dismiss_banners(page) -> None:
    for text in ("Dismiss", "Disable"):
        if page.get_by_text(text, exact=True).count():
            page.get_by_text(text, exact=True).first.click()


def _open_operator(page, label: str) -> None:
    page.keyboard.press("Backquote")
    page.wait_for_timeout(800)
    page.keyboard.type(label.removeprefix("Anonymizer: "))
    page.get_by_text(label).first.click()


def test_a_reviewer_in_the_app(browser, make_dataset, tmp_path):
    """A bad value is refused before Execute, a run shows its progress, share leaves out the
    sample the audit flagged, and the Anonymization panel shows the state."""
    import fiftyone as fo
    from skimage import data

    from fiftyone_anonymizer import anonymize_images

    src = tmp_path / "src"
    src.mkdir()
    box = fo.Detection(label="face", bounding_box=[0.3, 0.05, 0.28, 0.36], confidence=0.9)
    samples = []
    for i in range(30):
        path = src / f"p{i:02d}.jpg"
        Image.fromarray(np.roll(data.astronaut(), 9 * i, axis=1)).save(path, quality=90)
        samples.append(
            fo.Sample(
                filepath=str(path), anonymizer_detections=fo.Detections(detections=[box.copy()])
            )
        )
    ds = make_dataset(samples)
    ds.persistent = True  # the App's server is another process
    anonymize_images(ds, tmp_path / "copies")
    _run_delegated(
        ds.limit(2), "anonymize_images", {"output_dir": str(tmp_path / "copies")}, tmp_path
    )
    flagged = ds.first()
    flagged.tags.append("needs_review")  # as the audit would tag a missed face
    flagged.save()
    shared_name = f"{ds.name}-shared"

    shots = _artifacts()
    try:
        with _app_page(browser, ds, shots / "failure-reviewer.png", settle_ms=2000) as page:
            _dismiss_banners(page)

            # A confidence floor of 2 would obscure nothing: refused next to the field.
            _open_operator(page, "Anonymizer: anonymize images")
            page.wait_for_selector("text=Minimum confidence", timeout=30_000)
            floor = page.get_by_text("Minimum confidence", exact=True).locator(
                "xpath=following::input[1]"
            )
            floor.fill("2")
            page.get_by_text("must be between 0 and 1").first.wait_for(timeout=15_000)
            assert page.get_by_role("button", name="Execute").is_disabled()
            page.screenshot(path=str(shots / "10-bad-value-refused.png"))

            # Corrected, with Overwrite: the run streams its progress, then shows a table.
            floor.fill("")
            page.get_by_text("Overwrite", exact=True).click()
            page.wait_for_timeout(1000)
            page.get_by_role("button", name="Execute").click()
            seen: set[str] = set()
            deadline = time.time() + 180
            while time.time() < deadline and not page.get_by_text("copies written").count():
                seen.update(
                    ln
                    for ln in page.inner_text("body").splitlines()
                    if ln.startswith("anonymized ") and "/30" in ln
                )
                if len(seen) == 1:
                    page.screenshot(path=str(shots / "11-progress.png"))
                page.wait_for_timeout(150)
            page.screenshot(path=str(shots / "12-result-table.png"))
            assert seen and any(ln != "anonymized 30/30" for ln in seen), seen
            assert page.get_by_text("copies written").count()
            page.get_by_role("button", name="Done").click()

            # Share: the form says one sample is left out, and it is.
            _open_operator(page, "Anonymizer: share anonymized dataset")
            page.get_by_text("1 left out: 1 tagged for review").first.wait_for(timeout=30_000)
            name = page.get_by_text("New dataset name", exact=True).locator(
                "xpath=following::input[1]"
            )
            name.fill(shared_name)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / "13-share-form.png"))
            page.get_by_role("button", name="Execute").click()
            page.get_by_text("samples shared").first.wait_for(timeout=120_000)
            page.screenshot(path=str(shots / "14-shared.png"))
            shared = fo.load_dataset(shared_name)
            assert len(shared) == 29
            assert Path(flagged.anonymized_filepath).name not in {
                Path(p).name for p in shared.values("filepath")
            }
            page.get_by_role("button", name="Done").click()

            # The panel: counts and a button per group.
            page.locator("[data-cy='new-panel-btn']").first.click()
            page.get_by_text("Anonymization", exact=True).first.click()
            page.get_by_text("Open: tagged for review (1)").first.wait_for(timeout=60_000)
            body = page.inner_text("body")
            assert "Ready to share" in body and "Tagged for review" in body
            # The delegated run, with its result (it listed none before)
            assert "Delegated runs" in body and "anonymize_images" in body, body[-1500:]
            assert "copies written" in body
            page.screenshot(path=str(shots / "15-panel.png"))
            page.get_by_text("Open: tagged for review (1)").first.click()
            page.get_by_text("1 sample", exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(shots / "16-review-queue.png"))
    finally:
        if fo.dataset_exists(shared_name):
            fo.delete_dataset(shared_name)


def _execute_and_wait(page, done_text: str, timeout_ms: int, shot: Path) -> None:
    """Execute the open form, wait for ``done_text`` in the result, screenshot, close it."""
    page.wait_for_timeout(1500)  # the form's checks come back from the server
    page.get_by_role("button", name="Execute").click()
    page.get_by_text(done_text).first.wait_for(timeout=timeout_ms)
    page.screenshot(path=str(shot))
    page.get_by_role("button", name="Done").click()
    page.wait_for_timeout(1000)


def test_a_video_dataset_through_the_app(browser, make_dataset, tmp_path):
    """Detect, anonymize (the grid and the modal then play the copy, without a page reload),
    audit and share a video dataset, each from its operator's form."""
    import fiftyone as fo

    from conftest import make_clip

    src = tmp_path / "src"
    clips = [make_clip(src / "pan.mp4", frames=16), make_clip(src / "b" / "still.mkv", frames=12)]
    ds = make_dataset([fo.Sample(filepath=str(p)) for p in clips])
    ds.persistent = True  # the App's server is another process
    shared_name = f"{ds.name}-shared"
    out_dir = tmp_path / "copies"

    shots = _artifacts()
    served: list[str] = []
    try:
        with _app_page(browser, ds, shots / "failure-video.png", settle_ms=2000) as page:
            page.on("request", lambda r: served.append(urllib.parse.unquote(r.url)))
            # Intercepting turns the browser's cache off: every media load is a request.
            page.route("**/media?**", lambda route: route.continue_())
            _dismiss_banners(page)

            # 1. Detect: the video form (per-frame thresholds, the effort level for frames).
            _open_operator(page, "Anonymizer: detect faces and plates")
            page.get_by_text("Detect and track faces and plates in videos").first.wait_for(
                timeout=30_000
            )
            assert page.get_by_text("Effort", exact=True).count()
            page.screenshot(path=str(shots / "20-video-detect-form.png"))
            _execute_and_wait(page, "videos searched", 300_000, shots / "21-video-detected.png")
            ds.reload()
            assert ds.count("frames.anonymizer_detections.detections") > 0

            # 2. Anonymize: the form offers the frame field; the App then shows the copies.
            _open_operator(page, "Anonymizer: anonymize images")
            page.get_by_text("Anonymize videos").first.wait_for(timeout=30_000)
            assert page.get_by_text("Keep the audio", exact=True).count()
            field = page.get_by_text("Output folder", exact=True).locator(
                "xpath=following::input[1]"
            )
            field.fill(str(out_dir))
            page.screenshot(path=str(shots / "22-video-anonymize-form.png"))
            _execute_and_wait(page, "copies written", 300_000, shots / "23-video-anonymized.png")
            ds.reload()
            copies = ds.values("anonymized_filepath")
            assert all(c and Path(c).is_file() for c in copies), copies
            page.wait_for_timeout(3000)
            assert any(f"filepath={c}" in u for u in served for c in copies), served[-20:]

            # The modal plays the copy (asked for by path), never the original.
            served.clear()
            page.locator("[data-cy='looker']").first.click()
            page.locator("[data-cy='modal-looker-container']").first.wait_for(timeout=30_000)
            page.get_by_role("button", name="play").count()
            page.wait_for_timeout(5000)
            page.screenshot(path=str(shots / "24-video-modal-plays-the-copy.png"))
            media = [u for u in served if "filepath=" in u]
            assert any(c in u for u in media for c in copies), media
            assert not any(u.endswith(str(p)) for u in media for p in clips), media
            page.keyboard.press("Escape")
            page.wait_for_timeout(1000)

            # 3. Audit: every few frames of the copies searched again.
            _open_operator(page, "Anonymizer: audit anonymization")
            page.get_by_text("Residual field", exact=True).first.wait_for(timeout=30_000)
            _execute_and_wait(page, "Samples audited", 300_000, shots / "25-video-audited.png")

            # 4. Share: frame fields offered, the copies become the new dataset's media.
            _open_operator(page, "Anonymizer: share anonymized dataset")
            name = page.get_by_text("New dataset name", exact=True).locator(
                "xpath=following::input[1]"
            )
            name.wait_for(timeout=30_000)
            name.fill(shared_name)
            page.get_by_text("Share the samples tagged for review", exact=False).count()
            page.screenshot(path=str(shots / "26-video-share-form.png"))
            _execute_and_wait(page, "samples shared", 300_000, shots / "27-video-shared.png")
        shared = fo.load_dataset(shared_name)
        assert shared.media_type == "video" and len(shared) >= 1
        assert set(shared.values("filepath")) <= set(copies)
        assert "anonymizer_detections" in shared.get_frame_field_schema()
        assert "anonymizer_residual" not in shared.get_frame_field_schema()
    finally:
        if fo.dataset_exists(shared_name):
            fo.delete_dataset(shared_name)
