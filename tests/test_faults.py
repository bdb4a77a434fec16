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

pytestmark = pytest.mark.faults
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


FAST = ("--plates", "none", "--no-multiscale", "--quiet")


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
    assert f"{logged} were current already" in again.stdout or logged > 40, again.stdout
    clean = tmp_path / "clean"
    assert _cli("--input", src, "--image-output", clean, *FAST).returncode == 0
    resumed = {p.relative_to(out): _sha(p) for p in _visible_files(out)}
    expected = {p.relative_to(clean): _sha(p) for p in _visible_files(clean)}
    assert resumed == expected  # the resumed folder is byte for byte a clean run's


def test_sdk_job_killed_mid_run_leaves_consistent_fields_and_resumes(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import anonymize_images
    from fiftyone_anonymizer.jobs import schema

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
        if recorded >= schema.SAVE_EVERY:
            break
        time.sleep(0.05)
    assert child.poll() is None, child.communicate()[1][-3000:]
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()

    ds.reload()
    recipe = schema.AnonymizeRecipe.read(ds)
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
        "from fiftyone_anonymizer.jobs.schema import DatabaseLost\n"
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
    for x, y in [(1000, 1500), (8000, 3000), (15000, 9000), (4000, 16000), (18500, 500)]:
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
    assert "found 5 faces" in proc.stdout, proc.stdout
    print(f"peak RSS of the command line on a 20000 x 20000 JPEG: {peak_mb:.0f} MB")
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
