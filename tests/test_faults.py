"""Fault injection, for real: kill -9 mid-run, a full disk, a read-only output, a killed
database, a huge image, a fuzzed folder. ``make test-faults`` runs all of them; ``make test``
runs all but the ``heavy`` ones (a 20000 x 20000 JPEG and a tmpfs filled to the brim).

What each probe shows is listed in the README's "When things go wrong" table.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.faults, pytest.mark.models]  # every test here loads the detection models
CLI = [sys.executable, "-m", "fiftyone_anonymizer.cli"]
FACE_BOX = (0.30, 0.05, 0.28, 0.36)


def _astronauts(folder: Path, count: int, size=(320, 320), fmt: str = "jpg") -> list[Path]:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    base = Image.fromarray(data.astronaut()).resize(size)
    paths = []
    for i in range(count):
        path = folder / f"img{i:03d}.{fmt}"
        Image.fromarray(np.roll(np.asarray(base), 3 * i, axis=1)).save(path)
        paths.append(path)
    return paths


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _opens(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except Exception:
        return False


def _visible_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def _cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=kwargs.pop("timeout", 600),
        **kwargs,
    )


FAST = ("--plates", "none", "--effort", "fast", "--quiet")


# --------------------------------------------------------------------------------------------
# kill -9


def test_command_line_killed_mid_run_leaves_only_whole_copies_and_resumes(tmp_path):
    src = tmp_path / "in"
    _astronauts(src, 40)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*CLI, "--input", src, "--image-output", out, *FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    log = out / ".anonymizer-resume.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and log.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    copies = [p for p in _visible_files(out) if p.suffix == ".jpg"]
    assert 5 <= len(copies) < 40
    assert all(_opens(p) for p in copies)  # no half-written copy under a real name
    logged = log.read_text().count("\n")

    again = _cli("--input", src, "--image-output", out, *FAST)
    assert again.returncode == 0, again.stderr
    assert f"{logged} were current already" in again.stdout, again.stdout
    clean = tmp_path / "clean"
    assert _cli("--input", src, "--image-output", clean, *FAST).returncode == 0
    resumed = {p.relative_to(out): _sha(p) for p in _visible_files(out)}
    expected = {p.relative_to(clean): _sha(p) for p in _visible_files(clean)}
    assert resumed == expected  # the resumed folder is byte for byte a clean run's


def test_sdk_job_killed_mid_run_leaves_consistent_fields_and_resumes(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images
    from fiftyone_anonymizer.jobs import copies, database

    paths = _astronauts(tmp_path / "src", 150, size=(640, 480))
    gt = fo.Detections(detections=[fo.Detection(label="face", bounding_box=list(FACE_BOX))])
    ds = make_dataset([fo.Sample(filepath=str(p), gt=gt.copy()) for p in paths])
    ds.persistent = True  # the child process loads it by name
    out = tmp_path / "out"
    code = (
        "import sys, fiftyone as fo, fiftyone_anonymizer as anon\n"
        "anon.anonymize_images(fo.load_dataset(sys.argv[1]), sys.argv[2], label_fields='gt',"
        " io_workers=1)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, ds.name, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    recorded = 0
    while time.monotonic() < deadline and child.poll() is None:
        recorded = len(ds.exists("anonymized_filepath"))
        if recorded >= database.SAVE_EVERY:
            break
        time.sleep(0.05)
    assert child.poll() is None, child.communicate()[1][-3000:]
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()

    ds.reload()
    recipe = copies.AnonymizeRecipe.read(ds)
    recorded = 0
    for copy, fp, labels in zip(
        *ds.values(["anonymized_filepath", "anonymized_filepath_fingerprint", "gt"])
    ):
        if copy is None:
            continue
        recorded += 1
        assert _opens(Path(copy))  # every recorded copy is whole
        assert fp == recipe.fingerprint(recipe.boxes([labels]), copy)  # and matches its record
    assert 0 < recorded < len(paths)

    report = anonymize_images(ds, out, label_fields="gt")
    assert (report.skipped, report.processed) == (recorded, len(paths) - recorded)
    assert all(_opens(Path(c)) for c in ds.values("anonymized_filepath"))


# --------------------------------------------------------------------------------------------
# Disks: full, small, read-only


def _mount_tmpfs(where: Path, megabytes: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _noise_pngs(folder: Path, count: int, side: int = 900) -> list[Path]:
    """Incompressible photos (about 2.4 MB each as PNG), so a copy fills a disk fast."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    paths = []
    for i in range(count):
        path = folder / f"noise{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
            path, compress_level=1
        )
        paths.append(path)
    return paths


def test_a_disk_too_small_is_refused_before_any_work(tmp_path):
    src = tmp_path / "in"
    _astronauts(src, 3)
    disk = tmp_path / "small-disk"
    _mount_tmpfs(disk, 5)
    try:
        proc = _cli("--input", src, "--image-output", disk / "out", *FAST)
        assert proc.returncode == 2
        assert "MB free" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert not list((disk / "out").iterdir())
    finally:
        _umount(disk)


@pytest.mark.heavy
def test_a_disk_that_fills_up_stops_the_run_early_with_one_line(tmp_path):
    from fiftyone_anonymizer.core.paths import MIN_FREE_BYTES

    src = tmp_path / "in"
    _noise_pngs(src, 45)
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, MIN_FREE_BYTES // 2**20 + 16)
    try:
        proc = _cli("--input", src, "--image-output", disk / "out", "--no-write-detections", *FAST)
        assert proc.returncode == 1, proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0], proc.stderr
        assert "run the same command again to resume" in errors[0]
        failed = proc.stderr.count("FAILED ")
        assert failed <= 4, proc.stderr  # the images in flight, not all 45
        copies = [p for p in _visible_files(disk / "out") if p.suffix == ".png"]
        assert copies and all(_opens(p) for p in copies)
        assert not list((disk / "out").rglob(".*.part"))
    finally:
        _umount(disk)


def _read_only(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip("cannot bind-mount a read-only folder here")
    subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)


def test_a_read_only_output_folder_is_refused_before_any_work(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images

    src = tmp_path / "in"
    paths = _astronauts(src, 3)
    out = tmp_path / "read-only"
    _read_only(out)
    try:
        proc = _cli("--input", src, "--image-output", out, *FAST)
        assert proc.returncode == 2
        assert "cannot write into the output folder" in proc.stderr, proc.stderr
        gt = fo.Detections(detections=[fo.Detection(label="face", bounding_box=list(FACE_BOX))])
        ds = make_dataset([fo.Sample(filepath=str(p), gt=gt.copy()) for p in paths])
        with pytest.raises(ValueError, match="cannot write into the output folder"):
            anonymize_images(ds, out, label_fields="gt")
        assert ds.count("anonymized_filepath") == 0
    finally:
        if os.geteuid() == 0:
            _umount(out)


# --------------------------------------------------------------------------------------------
# The database


def test_a_killed_database_gives_one_plain_line_and_a_rerun_resumes(tmp_path, plugins_dir):
    from services import Cluster

    paths = _astronauts(tmp_path / "src", 400, size=(800, 600))
    out = tmp_path / "out"
    make = (
        "import sys, json, fiftyone as fo\n"
        "ds = fo.Dataset('faults-db', persistent=True, overwrite=True)\n"
        "gt = fo.Detections(detections=[fo.Detection(label='face', "
        f"bounding_box={list(FACE_BOX)})])\n"
        "ds.add_samples([fo.Sample(filepath=p, gt=gt.copy()) for p in json.loads(sys.argv[1])])\n"
        "print(json.dumps(len(ds)))\n"
    )
    run = (
        "import sys, json, fiftyone as fo, fiftyone_anonymizer as anon\n"
        "from fiftyone_anonymizer.jobs.database import DatabaseLost\n"
        "try:\n"
        "    r = anon.anonymize_images(fo.load_dataset('faults-db'), sys.argv[1], "
        "label_fields='gt', io_workers=1)\n"
        "    print(json.dumps({'processed': r.processed, 'skipped': r.skipped}))\n"
        "except DatabaseLost as exc:\n"
        "    print(f'DatabaseLost: {exc}', file=sys.stderr); sys.exit(3)\n"
    )
    count = (
        "import json, fiftyone as fo\n"
        "print(json.dumps(len(fo.load_dataset('faults-db').exists('anonymized_filepath'))))\n"
    )
    with Cluster(tmp_path / "cluster", plugins_dir) as cluster:
        assert cluster.python(make, json.dumps([str(p) for p in paths])) == 400
        child = subprocess.Popen(
            [sys.executable, "-c", run, str(out)],
            env=cluster.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(list(out.rglob("*.jpg"))) < 80:
            assert child.poll() is None, child.communicate()
            time.sleep(0.1)
        cluster.mongod.send_signal(signal.SIGKILL)
        cluster.mongod.wait()
        lost_at = time.monotonic()
        lines: list[tuple[float, str]] = []
        reader = threading.Thread(
            target=lambda: lines.extend((time.monotonic(), ln) for ln in child.stderr)
        )
        reader.start()
        child.wait(timeout=120)
        reader.join()
        assert child.returncode == 3, "".join(ln for _, ln in lines)[-3000:]
        (said,) = [(t, ln) for t, ln in lines if ln.startswith("DatabaseLost")]
        # Said within seconds (FiftyOne's own exit handlers may wait for the database longer).
        assert said[0] - lost_at < 35, said[0] - lost_at
        assert "run the same job again" in said[1] and "only what is not current" in said[1]

        cluster.start_mongod()  # the same data folder: what was saved is there
        saved = cluster.python(count)
        resumed = cluster.python(run, str(out))
        assert resumed == {"processed": 400 - saved, "skipped": saved}, (saved, resumed)


# --------------------------------------------------------------------------------------------
# A huge image


@pytest.mark.heavy
def test_a_20000_pixel_square_jpeg_stays_under_2_5_gb(tmp_path, monkeypatch):
    from skimage import data

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(3)
    canvas = Image.fromarray(rng.integers(60, 160, (500, 500, 3), dtype=np.uint8)).resize(
        (20000, 20000), Image.BILINEAR
    )
    face = Image.fromarray(data.astronaut()).resize((900, 900))
    places = [(1000, 1500), (8000, 3000), (15000, 9000), (4000, 16000), (18500, 500)]
    for x, y in places:
        canvas.paste(face, (x, y))
    canvas.save(src / "aerial.jpg", quality=85)
    del canvas
    out = tmp_path / "out"
    proc = subprocess.run(
        [*CLI, "--input", src, "--image-output", out, "--quiet"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert proc.returncode == 0, proc.stderr
    # every pasted face is found, at full resolution through the tiles (the smooth noise of
    # this canvas, 40x enlarged, also gets faint false alarms there: extra blurred patches)
    rows = json.loads((out / "aerial.json").read_text())
    faces = [r for r in rows if r["kind"] == "face"]
    for x, y in places:
        fx, fy = x + 0.35 * 900 + 0.09 * 900, y + 0.12 * 900 + 0.115 * 900  # her face's centre
        assert any(
            r["x_min"] <= fx <= r["x_max"] and r["y_min"] <= fy <= r["y_max"] and r["score"] > 0.5
            for r in faces
        ), (x, y, faces)
    print(
        f"peak RSS of the command line on a 20000 x 20000 JPEG: {peak_mb:.0f} MB "
        f"({len(faces)} face boxes for the 5 faces)"
    )
    assert peak_mb <= 2560
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # our own copy, not a bomb
    with Image.open(out / "aerial.jpg") as copy:
        assert copy.size == (20000, 20000)


# --------------------------------------------------------------------------------------------
# A fuzzed folder


def _fuzz_corpus(folder: Path) -> dict[str, str | None]:
    """Broken and odd images, each with the words its failure must contain (None: it must
    be anonymized)."""
    folder.mkdir(parents=True, exist_ok=True)
    from skimage import data

    good = Image.fromarray(data.astronaut()).resize((200, 200))
    buf = folder / "good.jpg"
    good.save(buf)
    whole = buf.read_bytes()
    cases: dict[str, str | None] = {"good.jpg": None}
    rng = np.random.default_rng(11)
    (folder / "empty.jpg").write_bytes(b"")
    cases["empty.jpg"] = "empty"
    (folder / "text.jpg").write_text("not an image at all")
    cases["text.jpg"] = "not a recognised image"
    (folder / "noise.png").write_bytes(rng.bytes(5000))
    cases["noise.png"] = "not a recognised image"
    (folder / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    cases["cut.jpg"] = "cannot be decoded"
    flipped = bytearray(whole)
    for i in rng.integers(600, len(whole) - 10, 40):
        flipped[i] ^= 0xFF
    (folder / "bitflips.jpg").write_bytes(bytes(flipped))
    cases["bitflips.jpg"] = "cannot be decoded"  # with this seed the stream breaks
    good.save(folder / "really-png.jpg", format="PNG")
    cases["really-png.jpg"] = None  # named .jpg, is a PNG: the copy stays a PNG
    Image.fromarray(
        (np.arange(200 * 200, dtype=np.uint32).reshape(200, 200) * 7 % 65536).astype(np.uint16)
    ).save(folder / "sixteen-bit.png")
    cases["sixteen-bit.png"] = None
    good.convert("CMYK").save(folder / "cmyk.jpg")
    cases["cmyk.jpg"] = None
    good.convert("P").save(folder / "palette.png", transparency=0)
    cases["palette.png"] = None
    frames = [good, good.rotate(90)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    cases["animated.gif"] = None  # the first frame

    # A PNG whose header claims 100000 x 100000 pixels (a decompression bomb): refused by size.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", (100000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0]))
        + chunk(b"IDAT", zlib.compress(bytes(1000)))
        + chunk(b"IEND", b"")
    )
    (folder / "bomb.png").write_bytes(bomb)
    cases["bomb.png"] = "too large"
    (folder / "folder.jpg").mkdir()
    return cases


def test_every_broken_image_gets_its_reason_and_the_job_goes_on(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images

    cases = _fuzz_corpus(tmp_path / "src")
    cases["folder.jpg"] = "is a folder"
    gt = fo.Detections(detections=[fo.Detection(label="face", bounding_box=list(FACE_BOX))])
    ds = make_dataset(
        [fo.Sample(filepath=str(tmp_path / "src" / name), gt=gt.copy()) for name in cases]
    )
    report = anonymize_images(ds, tmp_path / "out", label_fields="gt")
    by_name = {
        Path(p).name: (c, e)
        for p, c, e in zip(*ds.values(["filepath", "anonymized_filepath", "anonymizer_error"]))
    }
    for name, expected in cases.items():
        copy, error = by_name[name]
        if expected is None:
            assert error is None and copy and _opens(Path(copy)), (name, error)
        else:
            assert copy is None and expected in (error or ""), (name, error)
    assert report.processed == sum(v is None for v in cases.values())

    # The command line on the same folder: the same reasons, named, exit status 1.
    proc = _cli(
        "--input",
        tmp_path / "src",
        "--image-output",
        tmp_path / "cli-out",
        "--image-extensions",
        "jpg,png,gif",
        *FAST,
    )
    assert proc.returncode == 1
    for name, expected in cases.items():
        if expected is not None and name != "folder.jpg":
            assert any(name in ln and expected in ln for ln in proc.stderr.splitlines()), name


def test_commands_that_start_the_database_together_all_succeed(tmp_path):
    """Three ``anonymize --dataset`` runs started at once on a fresh database folder: one
    starts the embedded database, the others wait for it (before, one failed with
    ServiceListenTimeout)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FIFTYONE_PRIVATE_DATABASE_PORT", "FIFTYONE_DATABASE_URI")
    }
    env["FIFTYONE_DATABASE_DIR"] = str(tmp_path / "fresh-db")
    procs, logs = [], []
    for i in range(3):
        src = tmp_path / f"in{i}"
        _astronauts(src, 1, size=(160, 160))
        logs.append(tmp_path / f"log{i}.txt")
        # Output to files, not pipes: the database service a command starts outlives it and
        # would hold a pipe open.
        with open(logs[-1], "w") as log:
            procs.append(
                subprocess.Popen(
                    [
                        *CLI,
                        "--input",
                        src,
                        "--image-output",
                        tmp_path / f"out{i}",
                        "--dataset",
                        f"race-{i}",
                        *FAST,
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    codes = [p.wait(timeout=600) for p in procs]
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0, 0], [text[-2000:] for text in texts]
    assert all("dataset 'race-" in text for text in texts)


# --------------------------------------------------------------------------------------------
# Data loss (issue 22): every path that could overwrite an original, destroy a field, leave half
# a dataset or leak an original, measured. Each probe records its counts (conftest.DataLoss),
# then asserts they are zero; `make test-faults` prints their sums.


def _shas(root: Path) -> dict[Path, str]:
    return {p: _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _changed(before: dict[Path, str]) -> int:
    return sum(1 for p, sha in before.items() if not p.is_file() or _sha(p) != sha)


class _NoFaces:
    """Stands in for the models where a probe needs a detector but no detection."""

    def detect(self, images):
        return [[] for _ in images]


def test_probe_no_output_folder_writes_over_an_original(make_dataset, tmp_path, data_loss):
    """``--input P/sub --image-output P`` (and the SDK's equivalent), and an output folder
    that holds someone's file of the copy's name: refused, every file as it was."""
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images

    top = tmp_path / "P"
    _astronauts(top, 2, size=(200, 200))  # P/img000.jpg ...: someone's photos
    inner = _astronauts(top / "sub", 2, size=(240, 240))  # different photos, same names
    other = tmp_path / "Q"
    _astronauts(other, 1, size=(180, 180))  # Q/img000.jpg: not a copy of ours
    before = {**_shas(top), **_shas(other)}
    cli_parent = _cli("--input", top / "sub", "--image-output", top, *FAST)
    cli_foreign = _cli("--input", top / "sub", "--image-output", other, *FAST)
    ds = make_dataset(
        [
            fo.Sample(
                filepath=str(p),
                gt=fo.Detections(detections=[fo.Detection(label="face", bounding_box=[0.3] * 4)]),
            )
            for p in inner
        ]
    )
    sdk_refused = False
    try:
        anonymize_images(ds, top, label_fields="gt")
    except ValueError:
        sdk_refused = True
    data_loss.record(originals_modified=_changed(before))
    assert _changed(before) == 0
    assert cli_parent.returncode == 2 and "holds the source folder" in cli_parent.stderr
    assert cli_foreign.returncode == 2 and "did not write" in cli_foreign.stderr
    assert sdk_refused


def test_probe_two_videos_of_one_name_keep_two_copies(tmp_path, data_loss):
    from conftest import make_clip as clip
    from fiftyone_anonymizer.core import video

    src = tmp_path / "in"
    clip(src / "still_face.mp4", frames=6)
    clip(src / "still_face.mkv", frames=9, audio=False)
    out = tmp_path / "out"
    proc = _cli("--input", src, "--image-output", out, *FAST)
    copies = sorted(p for p in out.rglob("*.mp4"))
    frames = sorted(video.probe(p).frames for p in copies)
    logged = [json.loads(line)["path"] for line in (out / ".anonymizer-resume.jsonl").open()]
    data_loss.record(copies_overwritten=2 - len(set(frames)))
    assert proc.returncode == 0, proc.stderr
    assert frames == [6, 9] and len(logged) == len(set(logged)) == 2, (copies, logged)
    assert "2 videos" in proc.stdout, proc.stdout


def test_probe_a_rerun_without_audio_leaves_no_audio(tmp_path, data_loss):
    from conftest import make_clip as clip
    from fiftyone_anonymizer.core import video

    src = tmp_path / "in"
    clip(src / "talk.mp4", frames=6)
    out = tmp_path / "out"
    first = _cli("--input", src, "--image-output", out, *FAST)
    assert first.returncode == 0 and video.probe(out / "talk.mp4").has_audio, first.stderr
    again = _cli("--input", src, "--image-output", out, "--no-audio", *FAST)
    leaked = int(video.probe(out / "talk.mp4").has_audio)
    data_loss.record(leaked_originals=leaked)
    assert again.returncode == 0, again.stderr
    assert leaked == 0 and "current already" not in again.stdout, again.stdout


def test_probe_a_share_succeeds_whole_or_leaves_nothing(
    make_dataset, tmp_path, data_loss, monkeypatch
):
    """COCO with two label fields, the originals' field as the copies' field, an export that
    fails half-way, and the same through the operator: nothing is left, nothing leaks, and a
    retry works."""
    import fiftyone as fo
    import fiftyone.core.collections as foc

    from conftest import PLUGIN_NAME
    from fiftyone_anonymizer import anonymize_images, share_anonymized

    paths = _astronauts(tmp_path / "src", 3, size=(200, 200))
    gt = fo.Detections(detections=[fo.Detection(label="face", bounding_box=list(FACE_BOX))])
    ds = make_dataset([fo.Sample(filepath=str(p), gt=gt.copy(), other=gt.copy()) for p in paths])
    anonymize_images(ds, tmp_path / "copies", label_fields="gt")
    name = f"probe-share-{tmp_path.name}"
    export = tmp_path / "export"
    datasets = set(fo.list_datasets())
    originals = {str(p) for p in paths}
    attempts = [
        {
            "label_fields": ["gt", "other"],
            "export_dir": export,
            "dataset_type": "COCODetectionDataset",
        },
        {"output_field": "filepath"},
        {"output_field": "gt"},
        {"export_dir": Path("/etc/probe-export")},
        {"export_dir": tmp_path / "src"},
    ]
    partial = leaked = refused = 0

    def left_behind() -> int:
        """Datasets and export files the attempt left (then removed, so that each attempt is
        measured alone); an original's path among their media counts as leaked."""
        nonlocal leaked
        new = set(fo.list_datasets()) - datasets
        left = len(new) + int(export.exists()) + int((tmp_path / "src" / "data").exists())
        for other in new:
            leaked += len(originals & set(fo.load_dataset(other).values("filepath")))
            fo.delete_dataset(other)
        shutil.rmtree(export, ignore_errors=True)
        shutil.rmtree(tmp_path / "src" / "data", ignore_errors=True)
        return left

    for params in attempts:
        try:
            shared, _ = share_anonymized(ds, name=name, **params)
        except Exception:
            refused += 1
            partial += left_behind()
        else:  # a share that went through is no partial dataset: it is measured, then removed
            leaked += len(originals & set(shared.values("filepath")))
            fo.delete_dataset(shared.name)
            shutil.rmtree(export, ignore_errors=True)

    def broken_export(self, *args, **kwargs):
        Path(kwargs["export_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(kwargs["export_dir"]) / "labels.json").write_text("")
        raise OSError("the disk went away")

    failed_midway = False
    with monkeypatch.context() as patch:
        patch.setattr(foc.SampleCollection, "export", broken_export)
        try:
            share_anonymized(ds, name=name, export_dir=export)
        except OSError:
            failed_midway = True
    partial += left_behind()
    through_app = foo_run(
        f"{PLUGIN_NAME}/share_anonymized",
        ds,
        {
            "name": name,
            "label_fields": ["gt", "other"],
            "export_dir": str(export),
            "dataset_type": "COCODetectionDataset",
        },
    )
    partial += left_behind()
    data_loss.record(partial_datasets=partial, leaked_originals=leaked)
    try:
        assert (partial, leaked, refused) == (0, 0, len(attempts)) and failed_midway
        assert through_app is not None and "exactly one detections field" in through_app
        shared, _ = share_anonymized(ds, name=name, export_dir=export)  # the retry
        assert len(shared) == 3 and not originals & set(shared.values("filepath"))
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def foo_run(uri: str, dataset, params: dict) -> str | None:
    """Run an operator as the App would (the form is validated first); its error, or None."""
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    try:
        result = foo.execute_operator(uri, {"view": dataset.view(), "params": params})
    except ExecutionError as exc:
        return str(exc)
    return result.error_message or (str(result.error) if result.error else None)


def test_probe_no_job_destroys_a_field_it_did_not_write(make_dataset, tmp_path, data_loss):
    """Ground truth as the detect, residual or copies field, the originals' paths as the
    copies' field, invalid names: from the SDK and through the operators (the App's path)."""
    import fiftyone as fo

    from conftest import PLUGIN_NAME
    from fiftyone_anonymizer import anonymize_images, audit_anonymization, detect_faces_and_plates

    paths = _astronauts(tmp_path / "src", 3, size=(200, 200))
    hand = fo.Detections(detections=[fo.Detection(label="face", bounding_box=list(FACE_BOX))])
    ds = make_dataset([fo.Sample(filepath=str(p), ground_truth=hand.copy()) for p in paths])
    anonymize_images(ds, tmp_path / "copies", label_fields="ground_truth")
    watched = ["filepath", "ground_truth", "anonymized_filepath"]

    def snapshot():
        return {
            f: json.dumps(
                [v.to_dict() if hasattr(v, "to_dict") else v for v in ds.values(f)], default=str
            )
            for f in watched
        }

    before = snapshot()
    schema_before = set(ds.get_field_schema())
    sdk = [
        lambda: detect_faces_and_plates(
            ds, label_field="ground_truth", detector=_NoFaces(), overwrite=True
        ),
        lambda: detect_faces_and_plates(ds, label_field="bad name!", detector=_NoFaces()),
        lambda: anonymize_images(
            ds, tmp_path / "copies", label_fields="ground_truth", output_field="filepath"
        ),
        lambda: anonymize_images(
            ds, tmp_path / "copies", label_fields="ground_truth", output_field="ground_truth"
        ),
        lambda: audit_anonymization(ds, residual_field="ground_truth", detector=_NoFaces()),
        lambda: audit_anonymization(ds, output_field="ground_truth", detector=_NoFaces()),
    ]
    refused = 0
    for call in sdk:
        try:
            call()
        except ValueError:
            refused += 1
    app = [
        foo_run(
            f"{PLUGIN_NAME}/detect_faces_and_plates",
            ds,
            {"label_field": "ground_truth", "overwrite": True},
        ),
        foo_run(
            f"{PLUGIN_NAME}/anonymize_images",
            ds,
            {
                "output_dir": str(tmp_path / "copies"),
                "label_fields": ["ground_truth"],
                "output_field": "filepath",
            },
        ),
        foo_run(f"{PLUGIN_NAME}/audit_anonymization", ds, {"residual_field": "ground_truth"}),
    ]
    ds.reload()
    after = snapshot()
    destroyed = sum(before[f] != after[f] for f in watched)
    destroyed += len(set(ds.get_field_schema()) ^ schema_before)
    data_loss.record(fields_destroyed=destroyed)
    assert destroyed == 0, (before, after)
    assert refused == len(sdk) and all(app), app
