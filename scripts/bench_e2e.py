"""End-to-end throughput, recall and memory: our pipeline against ``deface``, at the scale
users run it (10^4 images and more), so start-up counts as it does there and is printed apart.

Three sets, the same machine, one run each, ours at every effort level (``--efforts``):

* **faces**: the 200 photos of ``faces/labels.json`` (small, crowded, masked faces), repeated
  through symlinks to 1 000 images: ``anonymize`` faces only, ``anonymize`` at deface's
  settings (one pass, native size, no plates), and ``deface`` 1.5.0 at its defaults;
* **street**: the 201 photos of ``plates/labels.json`` (mostly 1280x720), repeated likewise:
  ``anonymize`` with faces and plates (the full pipeline) against ``deface`` (faces only);
* **large**: 12 MP photos (4000 x 3000) that ``large_photos.py`` packs from the face photos,
  each face at its own pixel size, as a phone's crowd photo holds them: faces only, ours and
  deface. The line ``large photos (<level>): ours obscured a (>= 16 px b), deface c (>= 16 px
  d), ours/deface images/s Nx`` reads coverage (the pixel rule of ``metrics.py``).

deface is installed into a throwaway virtual environment under ``out/bench-e2e/deface-venv``
(never one of our dependencies, never imported here) and given all paths in one invocation.
Times are wall clock from process start to exit; each process's peak RSS is read from the
kernel (``wait4``), and the anonymous part of it (without mapped library files) sampled every
20 ms from ``/proc``: TensorFlow's libraries alone map ~370 MB of pages that every process on
the machine shares and the kernel can drop under pressure. Start-up (interpreter, imports,
model load) is measured on its own: ours as the wall time our command reports before its first
image, deface's as a one-image run. Recall on the labelled photos (the first repetition) with
``metrics.py``, every face and the faces >= 16 px tall; deface writes no detections, so its
CenterFace is run at its defaults through deface's own code.

The last lines read ``e2e speedup vs deface (faces only, <level>): <N>x``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import large_photos  # scripts/large_photos.py
from machine import cpu_model  # scripts/machine.py

from fiftyone_anonymizer import metrics
from fiftyone_anonymizer.core.boxes import FACE, Detection
from fiftyone_anonymizer.detectors import DEFAULT_EFFORT, EFFORTS

REPO = Path(__file__).resolve().parents[1]

SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "out" / "bench-e2e"
DEFACE_VERSION = "1.5.0"
DEFACE_THRESHOLD = 0.2  # deface's default --thresh
#: Our command at deface's settings: one CenterFace pass at the image's own size, no plates.
DEFACE_LIKE = ["--plates", "none", "--effort", "fast", "--face-size", "native"]
# The memory-saving setting README names: one detector call at a time, with both threads.
ONE_WORKER = ["--plates", "none", "--effort", DEFAULT_EFFORT, "--workers", "1", "--threads", "2"]

# Runs inside deface's own environment: its CenterFace exactly as its CLI builds it
# (in_shape=None: the image's own size rounded up to multiples of 32; backend auto).
_DEFACE_DETECT = r"""
import json, sys
import imageio.v2 as iio
from deface.centerface import CenterFace
paths, threshold = json.loads(sys.stdin.read()), float(sys.argv[1])
cf = CenterFace(in_shape=None, backend="auto")
out = {}
for p in paths:
    dets, _ = cf(iio.imread(p), threshold=threshold)
    out[p] = [[float(v) for v in d[:5]] for d in dets]
json.dump(out, sys.stdout)
"""


# Runs in a fresh process on a throwaway database: the SDK's two jobs on a dataset of the files,
# timed from the first job's call (model load included) to the second's return.
_SDK_JOBS = r"""
import json, sys, time
import fiftyone as fo
import fiftyone_anonymizer as anon
paths, out = json.loads(sys.argv[1]), sys.argv[2]
ds = fo.Dataset()
ds.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
start = time.perf_counter()
anon.detect_faces_and_plates(ds.view())
anon.anonymize_images(ds.view(), out)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def cli_seconds(log_text: str) -> float:
    """The processing time our command reports (model load to last copy, no interpreter start)."""
    match = re.search(r"anonymized \d+ of \d+ images in ([0-9.]+) s", log_text)
    if match is None:
        sys.exit(f"no summary line in our command's output:\n{log_text[-2000:]}")
    return float(match.group(1))


def sdk_vs_cli(input_dir: Path, anonymize: list[str], env: dict) -> float:
    """images/s of ``detect_faces_and_plates`` + ``anonymize_images`` on a view of ``paths``
    over the command line's on the same files (defaults: faces and plates), in one run."""
    paths = sorted(p for p in input_dir.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    sdk_out, cli_out, db = OUT / "sdk-copies", OUT / "cli-copies", OUT / "sdk-db"
    for folder in (sdk_out, cli_out, db):
        shutil.rmtree(folder, ignore_errors=True)
    sdk_env = {**env, "FIFTYONE_DATABASE_DIR": str(db), "FIFTYONE_DO_NOT_TRACK": "true"}
    proc = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "python"),
            "-c",
            _SDK_JOBS,
            json.dumps([str(p) for p in paths]),
            str(sdk_out),
        ],
        capture_output=True,
        text=True,
        env=sdk_env,
    )
    if proc.returncode != 0:
        sys.exit(f"the SDK jobs failed:\n{proc.stderr[-3000:]}")
    sdk = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
    proc = subprocess.run(
        [
            *anonymize,
            "--input",
            str(input_dir),
            "--image-output",
            str(cli_out),
            "--image-extensions",
            "jpg,jpeg,png",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    cli = cli_seconds(proc.stdout + proc.stderr)
    n = len(paths)
    print(
        f"sdk detect + anonymize {n / sdk:6.2f} images/s ({sdk:.1f} s); command line "
        f"{n / cli:6.2f} images/s ({cli:.1f} s); both from model load to the last copy",
        flush=True,
    )
    return cli / sdk


def load_entries(labels: Path) -> list[dict]:
    return json.loads(labels.read_text())


def deface_can_write(entries: list[dict], root: Path) -> tuple[list[dict], list[str]]:
    """The photos deface can process, and the others. deface writes each copy with the input's
    extension and stops the whole run at the first that fails: the street set holds 18 RGBA
    PNGs named .jpg (video frames) that it cannot write as JPEG ("cannot write mode RGBA as
    JPEG"), which ended its run after 184 of 1005 images. Both tools get the same photos."""
    from PIL import Image

    ok, left_out = [], []
    for e in entries:
        with Image.open(root / e["file"]) as im:
            mode = im.mode
        (ok if mode in ("RGB", "L") else left_out).append(e)
    return ok, [e["file"] for e in left_out]


def deface_wrote(paths: list[Path]) -> int:
    """How many of ``paths`` have deface's copy (``<stem>_anonymized<ext>``) beside them."""
    return sum(p.with_name(f"{p.stem}_anonymized{p.suffix}").exists() for p in paths)


def truths_of(entry: dict) -> list[Detection]:
    w, h = entry["width"], entry["height"]
    return [
        Detection.from_pixels(
            b["label"], 1.0, (b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]), w, h
        )
        for b in entry["boxes"]
    ]


def link_tree(entries: list[dict], root: Path, dest: Path, rounds: int = 1) -> list[Path]:
    """A fresh folder of symlinks to the labelled images, ``rounds`` times over (``r<k>/...``):
    a long run made of the same photos (the shared folder holds a few more, and neither tool
    may write into it). The first round's paths come first."""
    shutil.rmtree(dest, ignore_errors=True)
    paths = []
    for k in range(rounds):
        for e in entries:
            link = dest / f"r{k}" / e["file"]
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((root / e["file"]).resolve())
            paths.append(link)
    return paths


def ensure_deface(venv: Path) -> Path:
    """deface's own virtual environment (created once, reused while the version matches)."""
    exe = venv / "bin" / "deface"
    if exe.exists():
        probe = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
        if probe.stdout.strip() == DEFACE_VERSION:
            return exe
        shutil.rmtree(venv)
    print(
        f"installing deface=={DEFACE_VERSION} into {venv} (throwaway environment) ...", flush=True
    )
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            f"deface=={DEFACE_VERSION}",
            "onnxruntime",
        ],
        check=True,
    )
    return exe


@dataclass
class Run:
    """One process: wall seconds, peak resident memory, and what it printed."""

    seconds: float
    peak_mb: float
    output: str
    peak_anon_mb: float = 0.0  # sampled: see ``_sample_anonymous``


def _sample_anonymous(pid: int, peak: list[float], done: threading.Event) -> None:
    """Largest ``RssAnon`` of process ``pid`` seen every 20 ms: the resident memory that is
    the process's own, without the pages of mapped files (shared libraries such as
    TensorFlow's, which every process on the machine shares and the kernel can drop)."""
    status = Path(f"/proc/{pid}/status")
    while not done.wait(0.02):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]) / 1024)
        except OSError:  # ended between two samples
            return


def measured(cmd: list[str], env: dict | None = None) -> Run:
    """Run ``cmd`` to completion; its own peak RSS comes from the kernel (``wait4``). Its
    output is kept in a log; a failure stops the bench."""
    log = OUT / "logs" / f"{Path(cmd[0]).name}-{int(time.time() * 1000)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        anon, done = [0.0], threading.Event()
        sampler = threading.Thread(target=_sample_anonymous, args=(proc.pid, anon, done))
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):  # 1: some images failed (named in the log)
        sys.exit(f"command failed ({proc.returncode}), see {log}: {' '.join(cmd[:6])} ...")
    return Run(seconds, usage.ru_maxrss / 1024, log.read_text(errors="replace"), anon[0])


def startup_seconds(run: Run) -> tuple[float, float]:
    """(wall time before our first image, of which model load) from our command's summary:
    everything but the images' own processing time."""
    match = re.search(
        r"anonymized \d+ of \d+ images in ([0-9.]+) s \(([0-9.]+) images/s, "
        r"models loaded in ([0-9.]+) s\)",
        run.output,
    )
    if match is None:
        sys.exit(f"no summary line in our command's output:\n{run.output[-2000:]}")
    processing, load = float(match.group(1)), float(match.group(3))
    return run.seconds - processing + load, load


def warm_cache(paths: list[Path]) -> None:
    """Read every file once so neither tool pays for a cold disk."""
    for p in paths:
        p.read_bytes()


@dataclass
class Faces:
    """Face figures of one tool on one set: every face, and the faces >= 16 px tall."""

    all: metrics.Tally
    large: metrics.Tally

    def text(self, what: str = "recall") -> str:
        return f"{getattr(self.all, what):.3f} (>= 16 px {getattr(self.large, what):.3f})"


def score_faces(entries: list[dict], found: list[list[Detection]], settings=None) -> Faces:
    """Recall, coverage and precision of ``found`` (per entry) against the hand boxes; the
    faces >= 16 px tall also apart (``metrics.SIZE_EDGES``)."""
    every, sized = [], []
    for e, dets in zip(entries, found, strict=True):
        w, h = e["width"], e["height"]
        truths = truths_of(e)
        mask = metrics.obscured_mask(h, w, dets, settings)
        every.append(metrics.score_image(truths, dets, h, w, mask=mask))
        sized.append(metrics.score_by_size(truths, dets, h, w, mask=mask))
    large = metrics.Tally()
    for (label, cls), tally in metrics.combine(sized).items():
        if label == FACE and cls in metrics.size_classes()[2:]:  # 16-24, 24-48, >= 48
            large.add(tally)
    return Faces(metrics.combine(every).get(FACE, metrics.Tally()), large)


def our_faces(entries: list[dict], output: Path) -> Faces:
    """Our command's figures, from the detections files it wrote beside its copies."""
    found = []
    for e in entries:
        w, h = e["width"], e["height"]
        rows = json.loads((output / e["file"]).with_suffix(".json").read_text())
        found.append(
            [
                Detection.from_pixels(
                    r["kind"], r["score"], (r["x_min"], r["y_min"], r["x_max"], r["y_max"]), w, h
                )
                for r in rows
            ]
        )
    return score_faces(entries, found)


def deface_faces(entries: list[dict], paths: list[Path], venv: Path) -> Faces:
    """deface's default detector's figures, run by deface's own code in its environment."""
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _DEFACE_DETECT, str(DEFACE_THRESHOLD)],
        input=json.dumps([str(p) for p in paths]),
        capture_output=True,
        text=True,
        check=True,
    )
    boxes = json.loads(proc.stdout)
    found = [
        [
            Detection.from_pixels(FACE, s, (x0, y0, x1, y1), e["width"], e["height"])
            for x0, y0, x1, y1, s in boxes[str(p)]
        ]
        for e, p in zip(entries, paths, strict=True)
    ]
    # deface hides ellipses in its boxes grown by (mask_scale - 1) = 0.3 of the box size on
    # every side (1.6x overall): score its coverage the same way
    return score_faces(entries, found, _deface_like_settings())


def _deface_like_settings():
    from fiftyone_anonymizer.blur import BlurSettings

    return BlurSettings(box_scale=1.6, shape="ellipse", feather=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, default=SHARED / "faces" / "labels.json")
    parser.add_argument("--street", type=Path, default=SHARED / "plates" / "labels.json")
    parser.add_argument(
        "--large-from",
        type=Path,
        nargs="+",
        default=[SHARED / "faces" / "labels.json", SHARED / "faces" / "more.json"],
        help="labels files whose photos are packed into the 12 MP photos (large_photos.py)",
    )
    parser.add_argument(
        "--min-images",
        type=int,
        default=1000,
        help="the faces and street sets are repeated until they are at least this long",
    )
    parser.add_argument(
        "--efforts",
        default=",".join(EFFORTS),
        help="effort levels to time (comma-separated; the default level always runs)",
    )
    parser.add_argument(
        "--sets",
        default="faces,street,large",
        help="the sets to run (comma-separated: faces, street, large)",
    )
    parser.add_argument("--extra", default="", help="extra options for our command (tuning)")
    parser.add_argument(
        "--ours",
        default=str(REPO / ".venv" / "bin" / "anonymize"),
        help="our command (another build or wrapper, for comparisons)",
    )
    args = parser.parse_args()
    for labels in (args.faces, args.street, *args.large_from):
        if not labels.is_file():
            sys.exit(f"{labels} not found (the evaluation photos live beside the checkout)")
    efforts = [e for e in EFFORTS if e in args.efforts.split(",") or e == DEFAULT_EFFORT]
    chosen = [name for name in ("faces", "street", "large") if name in args.sets.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    venv = OUT / "deface-venv"
    deface = ensure_deface(venv)
    ours_cmd, extra = args.ours.split(), args.extra.split()
    env = {k: v for k, v in os.environ.items() if k != "FO_ANONYMIZER_THREADS"}  # our defaults

    large_labels = large_photos.build(args.large_from, OUT / "large-photos", (4000, 3000))
    sets = {}
    for name, labels, min_images in (
        ("faces", args.faces, args.min_images),
        ("street", args.street, args.min_images),
        ("large", large_labels, 1),
    ):
        entries, left_out = deface_can_write(load_entries(labels), labels.parent)
        if left_out:
            print(
                f"{name}: {len(left_out)} photos left out of both runs, deface cannot write them "
                f"(RGBA saved as JPEG), e.g. {left_out[0]}",
                flush=True,
            )
        rounds = -(-min_images // len(entries))
        ours_in = link_tree(entries, labels.parent, OUT / f"{name}-input", rounds)
        theirs = link_tree(entries, labels.parent, OUT / f"{name}-deface-io", rounds)
        warm_cache(ours_in[: len(entries)])
        sets[name] = (entries, ours_in, theirs, labels.parent)
    print(
        f"CPU: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        f"faces set {len(sets['faces'][1])} images ({len(sets['faces'][0])} photos repeated), "
        f"street set {len(sets['street'][1])} images ({len(sets['street'][0])} photos "
        f"repeated), large set {len(sets['large'][1])} photos of 4000x3000 (the face photos "
        f"packed at their own size); wall clock incl. start-up, every copy written to disk",
        flush=True,
    )

    def ours(set_name: str, out: str, options: list[str]) -> Run:
        out_dir = OUT / out
        shutil.rmtree(out_dir, ignore_errors=True)
        return measured(
            [
                *ours_cmd,
                "--input",
                str(OUT / f"{set_name}-input"),
                "--image-output",
                str(out_dir),
                "--image-extensions",
                "jpg,jpeg,png",
                "--quiet",
                *options,
                *extra,
            ],
            env=env,
        )

    def line(label: str, run: Run, n: int) -> None:
        print(
            f"{label:<44} {n / run.seconds:7.2f} images/s ({run.seconds:6.1f} s, peak RSS "
            f"{run.peak_mb:5.0f} MB, anonymous {run.peak_anon_mb:5.0f} MB)",
            flush=True,
        )

    runs: dict[str, Run] = {}
    if "faces" in chosen:
        for effort in efforts:
            runs[f"faces {effort}"] = ours(
                "faces", f"ours-faces-{effort}", ["--plates", "none", "--effort", effort]
            )
        runs["faces deface"] = measured([str(deface), *map(str, sets["faces"][2])])
        runs["faces deface-like"] = ours("faces", "ours-deface-like", DEFACE_LIKE)
        runs["faces one worker"] = ours("faces", "ours-faces-one-worker", ONE_WORKER)
    if "street" in chosen:
        for effort in efforts:
            runs[f"street {effort}"] = ours("street", f"ours-street-{effort}", ["--effort", effort])
        runs["street deface"] = measured([str(deface), *map(str, sets["street"][2])])
    if "large" in chosen:
        for effort in efforts:
            runs[f"large {effort}"] = ours(
                "large", f"ours-large-{effort}", ["--plates", "none", "--effort", effort]
            )
        runs["large deface"] = measured([str(deface), *map(str, sets["large"][2])])
    for name in chosen:
        wrote = deface_wrote(sets[name][2])
        if wrote != len(sets[name][2]):
            sys.exit(
                f"deface wrote {wrote} of {len(sets[name][2])} copies of the {name} set (see "
                f"{OUT / 'logs'}): its time would not be comparable"
            )
    sizes = {name: len(sets[name][1]) for name in sets}
    for set_name, what in (
        ("faces", "faces only"),
        ("street", "faces + plates, street photos"),
        ("large", "faces only, 12 MP photos"),
    ):
        if set_name not in chosen:
            continue
        for effort in efforts:
            line(f"ours {effort}, {what}", runs[f"{set_name} {effort}"], sizes[set_name])
        if set_name == "faces":
            line(
                f"ours at deface's settings ({' '.join(DEFACE_LIKE)})",
                runs["faces deface-like"],
                sizes["faces"],
            )
            line(f"ours {' '.join(ONE_WORKER)}", runs["faces one worker"], sizes["faces"])
        line(
            f"deface {DEFACE_VERSION} defaults ({set_name})",
            runs[f"{set_name} deface"],
            sizes[set_name],
        )

    if "faces" in chosen:
        faces_summary(args, sets, runs, efforts, ours_cmd, extra, env, venv, deface)
    if "large" in chosen:
        figures = {
            effort: our_faces(sets["large"][0], OUT / f"ours-large-{effort}" / "r0")
            for effort in efforts
        }
        entries, _, theirs_paths, _ = sets["large"]
        theirs = deface_faces(entries, theirs_paths[: len(entries)], venv)
        for effort in efforts:
            ours_large = figures[effort]
            ratio = runs["large deface"].seconds / runs[f"large {effort}"].seconds
            print(
                f"large photos ({effort}): ours obscured {ours_large.all.coverage:.3f} (>= 16 px "
                f"{ours_large.large.coverage:.3f}), deface {theirs.all.coverage:.3f} (>= 16 px "
                f"{theirs.large.coverage:.3f}), ours/deface images/s {ratio:.2f}x"
            )
        print(
            f"peak RSS on the 12 MP photos: ours ({DEFAULT_EFFORT}) "
            f"{runs[f'large {DEFAULT_EFFORT}'].peak_mb:.0f} MB, deface "
            f"{runs['large deface'].peak_mb:.0f} MB"
        )
    if "street" in chosen:
        for effort in efforts:
            print(
                f"e2e full pipeline ({effort}) vs deface on street photos: "
                f"{runs['street deface'].seconds / runs[f'street {effort}'].seconds:.2f}x"
            )
    if "faces" in chosen:
        for effort in efforts:
            print(
                f"e2e speedup vs deface (faces only, {effort}): "
                f"{runs['faces deface'].seconds / runs[f'faces {effort}'].seconds:.2f}x"
            )
    return 0


def faces_summary(args, sets, runs, efforts, ours_cmd, extra, env, venv, deface) -> None:
    """The face set's start-up, recall, memory and SDK lines."""
    hundred = OUT / "faces-100"
    link_tree(sets["faces"][0][:100], args.faces.parent, hundred)
    shutil.rmtree(OUT / "ours-100", ignore_errors=True)  # else a rerun finds every copy current
    small = measured(
        [
            *ours_cmd,
            "--input",
            str(hundred),
            "--image-output",
            str(OUT / "ours-100"),
            "--quiet",
            "--plates",
            "none",
            *extra,
        ],
        env=env,
    )
    default_faces = runs[f"faces {DEFAULT_EFFORT}"]
    ours_start, ours_load = startup_seconds(default_faces)
    one = OUT / "deface-one"
    link_tree(sets["faces"][0][:1], args.faces.parent, one)
    deface_start = measured([str(deface), str(next(one.rglob("*.jpg")))]).seconds
    print(
        f"start-up: ours {ours_start:.1f} s (of which {ours_load:.1f} s loading models while "
        f"TensorFlow loads), deface {deface_start:.1f} s (a one-image run)"
    )
    entries, _, theirs_paths, _ = sets["faces"]
    for effort in efforts:
        f = our_faces(entries, OUT / f"ours-faces-{effort}" / "r0")
        ratio = runs["faces deface"].seconds / runs[f"faces {effort}"].seconds
        print(
            f"faces {effort}: recall {f.text()} coverage {f.all.coverage:.3f} precision "
            f"{f.all.precision:.3f}; {ratio:.2f}x deface's images/s"
        )
    d = deface_faces(entries, theirs_paths[: len(entries)], venv)
    like = our_faces(entries, OUT / "ours-deface-like" / "r0")
    print(
        f"faces deface: recall {d.text()} coverage {d.all.coverage:.3f} precision "
        f"{d.all.precision:.3f} (deface's CenterFace run by its own code at its defaults, "
        f"threshold {DEFACE_THRESHOLD}); ours at deface's settings: recall {like.text()}"
    )
    sdk = sdk_vs_cli(OUT / "faces-input" / "r0", ours_cmd, env)
    print(f"sdk vs command line: {sdk:.2f}x")
    print(
        f"ours at deface's settings vs deface (faces only): "
        f"{runs['faces deface'].seconds / runs['faces deface-like'].seconds:.2f}x"
    )
    print(
        f"peak RSS ours ({DEFAULT_EFFORT}) {default_faces.peak_mb:.0f} MB, deface "
        f"{runs['faces deface'].peak_mb:.0f} MB (faces only, "
        f"{default_faces.peak_mb / runs['faces deface'].peak_mb:.2f}x); at 100 images ours "
        f"{small.peak_mb:.0f} MB; with --workers 1 --threads 2 "
        f"{runs['faces one worker'].peak_mb:.0f} MB "
        f"({runs['faces one worker'].peak_mb / runs['faces deface'].peak_mb:.2f}x, at "
        f"{default_faces.seconds / runs['faces one worker'].seconds:.2f}x the default's speed)"
    )
    print(
        f"peak anonymous memory (RSS without mapped library files, sampled every 20 ms) ours "
        f"{default_faces.peak_anon_mb:.0f} MB, deface {runs['faces deface'].peak_anon_mb:.0f} "
        f"MB (faces only)"
    )


if __name__ == "__main__":
    sys.exit(main())
