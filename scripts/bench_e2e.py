"""End-to-end throughput and face recall: our ``anonymize`` command against ``deface``.

Same 200 photos (those of ``../shared/data/faces/labels.json``), same machine, one run each:

1. ``anonymize`` with faces only (``--plates none``), all defaults otherwise;
2. ``anonymize`` with faces and plates (the full pipeline);
   (and, for reference, faces only with ``--no-multiscale``: no mirrored second view);
3. ``deface`` 1.5.0 with its defaults, installed into a throwaway virtual environment under
   ``out/bench-e2e/deface-venv`` (never one of our dependencies, never imported here), given
   all 200 paths in one invocation so its model loads once.

Times are wall clock from process start to exit: interpreter start, model load, decode,
detect, blur, encode and write of every file included. Face recall comes from
``metrics.py``: ours from the detections files our command wrote; deface writes no
detections, so its CenterFace is run at its defaults (native resolution, threshold 0.2)
through deface's own code, in its own environment, in a separate untimed process.

The last line reads ``e2e speedup vs deface (faces only): <N>x``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fiftyone_anonymizer import metrics
from fiftyone_anonymizer.core.boxes import FACE, Detection

REPO = Path(__file__).resolve().parents[1]

LABELS = REPO.parent / "shared" / "data" / "faces" / "labels.json"
OUT = REPO / "out" / "bench-e2e"
DEFACE_VERSION = "1.5.0"
DEFACE_THRESHOLD = 0.2  # deface's default --thresh

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


def sdk_vs_cli(paths: list[Path], anonymize: list[str], env: dict) -> float:
    """images/s of ``detect_faces_and_plates`` + ``anonymize_images`` on a view of ``paths``
    over the command line's on the same files (defaults: faces and plates), in one run."""
    sdk_out, cli_out, db = OUT / "sdk-copies", OUT / "cli-copies", OUT / "sdk-db"
    for folder in (sdk_out, cli_out, db):
        shutil.rmtree(folder, ignore_errors=True)
    sdk_env = {**env, "FIFTYONE_DATABASE_DIR": str(db), "FIFTYONE_DO_NOT_TRACK": "true"}
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", _SDK_JOBS,
                           json.dumps([str(p) for p in paths]), str(sdk_out)],
                          capture_output=True, text=True, env=sdk_env)
    if proc.returncode != 0:
        sys.exit(f"the SDK jobs failed:\n{proc.stderr[-3000:]}")
    sdk = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
    input_dir = OUT / "input"
    proc = subprocess.run([*anonymize, "--input", str(input_dir), "--image-output", str(cli_out),
                           "--image-extensions", "jpg,jpeg,png"],
                          capture_output=True, text=True, env=env)
    cli = cli_seconds(proc.stdout + proc.stderr)
    n = len(paths)
    print(f"sdk detect + anonymize {n / sdk:6.2f} images/s ({sdk:.1f} s); command line "
          f"{n / cli:6.2f} images/s ({cli:.1f} s); both from model load to the last copy",
          flush=True)
    return cli / sdk


def load_entries(labels: Path) -> list[dict]:
    return json.loads(labels.read_text())


def truths_of(entry: dict) -> list[Detection]:
    w, h = entry["width"], entry["height"]
    return [Detection.from_pixels(b["label"], 1.0, (b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]), w, h)
            for b in entry["boxes"]]


def link_tree(entries: list[dict], root: Path, dest: Path) -> list[Path]:
    """A fresh folder of symlinks to exactly the labelled images (the shared folder holds a
    few more, and neither tool may write into it)."""
    shutil.rmtree(dest, ignore_errors=True)
    paths = []
    for e in entries:
        link = dest / e["file"]
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
    print(f"installing deface=={DEFACE_VERSION} into {venv} (throwaway environment) ...", flush=True)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    f"deface=={DEFACE_VERSION}", "onnxruntime"], check=True)
    return exe


def timed(cmd: list[str], env: dict | None = None) -> float:
    """Wall-clock seconds of one command; its output is kept in a log, failures stop the bench."""
    log = OUT / "logs" / f"{Path(cmd[0]).name}-{int(time.time() * 1000)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}), see {log}: {' '.join(cmd[:6])} ...")
    return seconds


def warm_cache(paths: list[Path]) -> None:
    """Read every file once so neither tool pays for a cold disk."""
    for p in paths:
        p.read_bytes()


def our_face_recall(entries: list[dict], output: Path) -> metrics.Tally:
    """Recall/coverage of our command from the detections files it wrote."""
    per_image = []
    for e in entries:
        w, h = e["width"], e["height"]
        rows = json.loads((output / e["file"]).with_suffix(".json").read_text())
        dets = [Detection.from_pixels(r["kind"], r["score"],
                                      (r["x_min"], r["y_min"], r["x_max"], r["y_max"]), w, h)
                for r in rows]
        per_image.append(metrics.score_image(truths_of(e), dets, h, w))
    return metrics.combine(per_image).get(FACE, metrics.Tally())


def deface_face_recall(entries: list[dict], paths: list[Path], venv: Path) -> metrics.Tally:
    """Recall of deface's default detector, run by deface's own code in its environment."""
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", _DEFACE_DETECT, str(DEFACE_THRESHOLD)],
                          input=json.dumps([str(p) for p in paths]), capture_output=True,
                          text=True, check=True)
    found = json.loads(proc.stdout)
    per_image = []
    for e, p in zip(entries, paths):
        w, h = e["width"], e["height"]
        dets = [Detection.from_pixels(FACE, s, (x0, y0, x1, y1), w, h) for x0, y0, x1, y1, s in found[str(p)]]
        # deface hides ellipses in its boxes grown by (mask_scale - 1) = 0.3 of the box size on
        # every side (1.6x overall): score its coverage the same way
        per_image.append(metrics.score_image(truths_of(e), dets, h, w, settings=_deface_like_settings()))
    return metrics.combine(per_image).get(FACE, metrics.Tally())


def _deface_like_settings():
    from fiftyone_anonymizer.blur import BlurSettings

    return BlurSettings(box_scale=1.6, shape="ellipse", feather=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--extra", default="", help="extra options for our command (tuning), e.g. '--workers 2'")
    parser.add_argument("--ours", default=str(REPO / ".venv" / "bin" / "anonymize"),
                        help="our command (another build or wrapper, for comparisons)")
    args = parser.parse_args()
    if not args.labels.is_file():
        sys.exit(f"{args.labels} not found (the evaluation photos live beside the checkout)")
    entries = load_entries(args.labels)
    root = args.labels.parent
    OUT.mkdir(parents=True, exist_ok=True)
    venv = OUT / "deface-venv"
    deface = ensure_deface(venv)

    ours_in = OUT / "input"
    ours_paths = link_tree(entries, root, ours_in)
    deface_paths = link_tree(entries, root, OUT / "deface-io")  # deface writes beside its inputs
    warm_cache(ours_paths)
    anonymize = args.ours.split()
    extra = args.extra.split()
    env = {k: v for k, v in os.environ.items() if k != "FO_ANONYMIZER_THREADS"}  # our defaults
    n = len(entries)
    print(f"{n} images from {args.labels}; {os.cpu_count()} CPUs; wall clock incl. start-up and "
          f"model load, every copy written to disk", flush=True)

    runs: dict[str, float] = {}
    for name, out_dir, options in (("ours, faces only", OUT / "ours-faces", ["--plates", "none"]),
                                   ("ours, faces + plates", OUT / "ours-full", []),
                                   ("ours, faces, no mirror", OUT / "ours-faces-single",
                                    ["--plates", "none", "--no-multiscale"])):
        shutil.rmtree(out_dir, ignore_errors=True)
        runs[name] = timed([*anonymize, "--input", str(ours_in), "--image-output", str(out_dir),
                            "--image-extensions", "jpg,jpeg,png", "--quiet", *options, *extra],
                           env=env)
        print(f"{name:<24} {n / runs[name]:6.2f} images/s ({runs[name]:.1f} s)", flush=True)
    runs["deface"] = timed([str(deface), *map(str, deface_paths)])
    print(f"{'deface ' + DEFACE_VERSION + ' defaults':<24} {n / runs['deface']:6.2f} images/s "
          f"({runs['deface']:.1f} s)", flush=True)

    start_up = timed([str(REPO / ".venv" / "bin" / "python"), "-c",
                      "from fiftyone_anonymizer import blur; blur._tf()"], env=env)
    print(f"(of each run of ours: {start_up:.1f} s to load TensorFlow for the blur module)")

    ours = our_face_recall(entries, OUT / "ours-faces")
    single = our_face_recall(entries, OUT / "ours-faces-single")
    full = our_face_recall(entries, OUT / "ours-full")
    theirs = deface_face_recall(entries, deface_paths, venv)
    print(f"face recall ours (faces only) {ours.recall:.3f} coverage {ours.coverage:.3f} "
          f"precision {ours.precision:.3f}; ours (full) {full.recall:.3f}; ours (no mirror) "
          f"{single.recall:.3f} coverage {single.coverage:.3f} precision {single.precision:.3f}")
    print(f"face recall deface {theirs.recall:.3f} coverage {theirs.coverage:.3f} precision "
          f"{theirs.precision:.3f} (deface cannot write detections: its CenterFace run by deface's "
          f"own code in its environment at its defaults, threshold {DEFACE_THRESHOLD}, native size)")

    print(f"sdk vs command line: {sdk_vs_cli(ours_paths, anonymize, env):.2f}x")

    speed_faces = runs["deface"] / runs["ours, faces only"]
    speed_full = runs["deface"] / runs["ours, faces + plates"]
    ok_faces = speed_faces >= 1.5 and ours.recall > theirs.recall
    print(f"target faces only >= 1.5x deface with higher recall: {'met' if ok_faces else 'NOT met'}")
    print(f"target full pipeline no slower than deface on faces: "
          f"{'met' if speed_full >= 1.0 else 'NOT met'} ({speed_full:.2f}x)")
    print(f"e2e speedup vs deface (faces only): {speed_faces:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
