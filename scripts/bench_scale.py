"""Sharded jobs on FiftyOne delegated workers: one worker against two, and a kill -9.

On a private MongoDB (FiftyOne's own ``mongod`` on 127.0.0.1, a throwaway folder under
``out/bench-scale``), with the shared face photos repeated to ``--photos`` samples
(``../shared/data/faces``; skipped with a message when absent):

1. **Scaling.** The whole job (sharded ``detect_faces_and_plates``, then sharded
   ``anonymize_images``) with one ``fiftyone delegated launch`` worker, and with two. Each
   worker is held to one CPU thread: pinned to one core with ``taskset`` and
   ``FO_ANONYMIZER_THREADS=1``, ``TF_NUM_INTRAOP_THREADS=1``, ``TF_NUM_INTEROP_THREADS=1``,
   ``OMP_NUM_THREADS=1``, so this 2-core machine can show what a second worker adds. Rounds
   alternate the order (1 then 2, 2 then 1, ...) and the medians are compared. Times run
   from scheduling (split, metadata, queueing) to the last shard finished, with the workers
   started and warmed up (each has run both operators once: models loaded, TensorFlow
   imported), as they are during a long job.
2. **Shard overhead.** The same job with one worker as 1 shard and as ``--shards`` shards:
   ``(T(n shards) - T(1 shard)) / (n - 1)`` is what one more shard costs (claiming it,
   loading the dataset and view, the job's set-up).
3. **Kill -9.** A sharded anonymize with two workers; one of them (chosen at random) is
   killed with SIGKILL at a random moment; dead shards are requeued after ``--timeout``
   seconds without progress and the job finishes on the other worker. Then: *lost* =
   samples without a copy that opens (or with an error), *duplicated* = copies written more
   than once (every rename that makes a copy visible is logged by an instrumented worker,
   see tests/services.py), *partial* = ``.*.part`` files left.
4. **1080p per image.** One worker, one thread, on ``--hd`` photos upscaled to 1920x1080:
   seconds per image for detect + anonymize, the figure deploy/README.md's estimate uses.

Anything else running on the machine makes the figures noisy and the scaling a lower bound
of what two idle cores give: the CPU model and the load average at start are printed.

The last two lines read ``scale: 2 workers vs 1: <N>x`` and
``after kill -9: lost <a>, duplicated <b>, partial <c>``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from machine import cpu_model  # scripts/machine.py

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout, or $FO_ANONYMIZER_SHARED_DATA (as in tests/conftest.py)
FACES = Path(os.environ.get("FO_ANONYMIZER_SHARED_DATA", REPO.parent / "shared" / "data")) / "faces"
OUT = REPO / "out" / "bench-scale"
sys.path.insert(0, str(REPO / "tests"))

from services import ONE_THREAD, Cluster, mongod_binary  # noqa: E402

DETECT = {
    "label_field": "anonymizer_detections",
    "faces": "centerface",
    "plates": "yolov8-plates",
    "face_threshold": None,
    "plate_threshold": None,
    "effort": "balanced",
    "overwrite": False,
}


def anonymize_params(output_dir: Path) -> dict:
    return {
        "output_dir": str(output_dir),
        "label_fields": ["anonymizer_detections"],
        "classes": [],
        "min_confidence": None,
        "output_field": "anonymized_filepath",
        "mode": "blur",
        "shape": "auto",
        "seed_kernel": "",
        "overwrite": False,
    }


# Child programs, run on the private database (see services.Cluster.python).
_CREATE = r"""
import json, sys
import fiftyone as fo
name, paths = sys.argv[1], json.load(open(sys.argv[2]))
ds = fo.Dataset(name, overwrite=True)
ds.persistent = True
ds.add_samples([fo.Sample(filepath=p) for p in paths])
ds.compute_metadata()
print(json.dumps({"samples": len(ds)}))
"""

_RESET = r"""
import json, shutil, sys
import fiftyone as fo
ds = fo.load_dataset(sys.argv[1])
for f in json.loads(sys.argv[2]):
    if ds.has_field(f):
        ds.delete_sample_field(f)
shutil.rmtree(sys.argv[3], ignore_errors=True)
print(json.dumps({"ok": True}))
"""

_JOB = r"""
import json, sys, time
import fiftyone as fo
from fiftyone_anonymizer.jobs import shards
name, steps, timeout = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
ds = fo.load_dataset(name)
out = []
for operator, params, n in steps:
    start = time.monotonic()
    job = shards.schedule_sharded(ds, operator, params, n)
    status = shards.wait_for_job(job.job_id, timeout_s=timeout, poll_s=0.2, max_wait_s=3600)
    out.append({"operator": operator, "seconds": time.monotonic() - start,
                "line": status.line(), "ok": status.succeeded})
print(json.dumps(out))
"""

_CHECK = r"""
import json, os, sys
import fiftyone as fo
from PIL import Image
ds = fo.load_dataset(sys.argv[1])
lost = 0
copies = ds.values("anonymized_filepath")
errors = (ds.values("anonymizer_error") if ds.has_field("anonymizer_error")
          else [None] * len(copies))
for copy, error in zip(copies, errors):
    try:
        if error is not None or not copy:
            raise ValueError(error or "no copy")
        with Image.open(copy) as im:
            im.load()
    except Exception:
        lost += 1
print(json.dumps({"lost": lost, "samples": len(ds)}))
"""


def photo_tree(dest: Path, count: int, hd: bool = False) -> list[str]:
    """``count`` photos: the shared face photos repeated (symlinks, one folder per pass), or
    with ``hd`` upscaled to 1920x1080 JPEGs."""
    from PIL import Image

    sources = sorted(p for p in (FACES / "images").rglob("*.jpg"))
    shutil.rmtree(dest, ignore_errors=True)
    paths = []
    for k in range(count):
        src = sources[k % len(sources)]
        target = dest / f"pass{k // len(sources)}" / src.parent.name / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if hd:
            with Image.open(src) as im:
                im.convert("RGB").resize((1920, 1080), Image.BICUBIC).save(target, quality=90)
        else:
            target.symlink_to(src.resolve())
        paths.append(str(target))
    return paths


def run_job(cluster: Cluster, dataset: str, steps: list, timeout_s: float) -> list[dict]:
    result = cluster.python(_JOB, dataset, json.dumps(steps), str(timeout_s), timeout_s=3600)
    for step in result:
        if not step["ok"]:
            raise RuntimeError(
                f"{step['operator']} did not finish cleanly: {step['line']}\n"
                f"{cluster.worker_logs()}"
            )
    return result


def reset(cluster: Cluster, dataset: str, out_dir: Path) -> None:
    cluster.python(
        _RESET,
        dataset,
        json.dumps(
            [
                "anonymizer_detections",
                "anonymized_filepath",
                "anonymized_filepath_fingerprint",
                "anonymizer_error",
            ]
        ),
        str(out_dir),
    )


def start_workers(cluster: Cluster, count: int, warm: bool = True, **env: str) -> None:
    """``count`` fresh workers, one per core; ``warm``: each has run detect and anonymize once
    (models loaded, TensorFlow imported), so timings measure the steady state that a long job
    lives in rather than each process's start-up."""
    cluster.stop_workers()
    for k in range(count):
        cluster.start_worker(cpus=str(k % (os.cpu_count() or 1)), **ONE_THREAD, **env)
    cluster.wait_ready()
    if not warm:
        return
    for _ in range(5):
        steps = [
            ["detect_faces_and_plates", {**DETECT, "overwrite": True}, 2 * count],
            [
                "anonymize_images",
                {**anonymize_params(OUT / "anonymized-warm"), "overwrite": True},
                2 * count,
            ],
        ]
        run_job(cluster, "warm", steps, 120.0)
        logs = [w.log_path.read_text(errors="replace") for w in cluster.workers]
        if all(
            f"/{op})" in log
            for log in logs
            for op in ("detect_faces_and_plates", "anonymize_images")
        ):
            return
    raise RuntimeError(f"could not warm every worker up:\n{cluster.worker_logs()}")


def whole_job(
    cluster: Cluster, dataset: str, out_dir: Path, shards: int, timeout_s: float, workers: int
) -> tuple[float, float, list[float]]:
    """Seconds of the sharded detect and of the sharded anonymize, from a clean dataset, and
    the CPU seconds each worker spent on them."""
    reset(cluster, dataset, out_dir)
    start_workers(cluster, workers)
    steps = [
        ["detect_faces_and_plates", DETECT, shards],
        ["anonymize_images", anonymize_params(out_dir), shards],
    ]
    before = worker_cpu_s(cluster)
    result = run_job(cluster, dataset, steps, timeout_s)
    cpu = [after - b for after, b in zip(worker_cpu_s(cluster), before)]
    detect_s, anonymize_s = result[0]["seconds"], result[1]["seconds"]
    print(
        f"  {workers} worker(s), {shards} shard(s): {detect_s + anonymize_s:6.1f} s  "
        f"(detect {detect_s:.1f} s, anonymize {anonymize_s:.1f} s; worker CPU "
        f"{' + '.join(f'{c:.1f}' for c in cpu)} s)",
        flush=True,
    )
    return detect_s, anonymize_s, cpu


def worker_cpu_s(cluster: Cluster) -> list[float]:
    """CPU seconds used so far by each worker. The same work costs the same CPU however many
    workers share it; wall time is what the other agents on the machine distort."""
    import psutil

    out = []
    for proc in cluster.workers:
        times = psutil.Process(proc.pid).cpu_times()
        out.append(times.user + times.system)
    return out


def kill_trial(
    cluster: Cluster,
    dataset: str,
    out_dir: Path,
    shards: int,
    timeout_s: float,
    rng: random.Random,
    shard_s: float,
) -> dict:
    """Anonymize with two fresh instrumented workers; once a randomly chosen one has claimed
    a shard, wait a random time up to about one shard's duration (start-up, processing,
    writing, finishing: any moment) and kill it with SIGKILL; count the damage when the job
    has finished."""
    cluster.python(
        _RESET,
        dataset,
        json.dumps(["anonymized_filepath", "anonymized_filepath_fingerprint", "anonymizer_error"]),
        str(out_dir),
    )
    log = OUT / "writes.log"
    log.unlink(missing_ok=True)
    start_workers(cluster, 2, warm=False, FO_TEST_WRITE_LOG=str(log))
    victim = rng.choice(cluster.workers)
    steps = json.dumps([["anonymize_images", anonymize_params(out_dir), shards]])
    child = subprocess.Popen(
        [sys.executable, "-c", _JOB, dataset, steps, str(timeout_s)],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    while "Running operation" not in victim.log_path.read_text(errors="replace"):
        if child.poll() is not None or time.monotonic() - started > 600:
            break
        time.sleep(0.05)
    delay = rng.uniform(0.0, shard_s)
    time.sleep(delay)
    cluster.kill(victim)
    print(
        f"  killed a worker (kill -9) {delay:.1f} s after it claimed its first shard "
        f"({time.monotonic() - started:.1f} s after scheduling)",
        flush=True,
    )
    stdout, stderr = child.communicate(timeout=3600)
    if child.returncode != 0:
        raise RuntimeError(f"job failed:\n{stdout[-2000:]}\n{stderr[-4000:]}")
    (step,) = json.loads(stdout.strip().splitlines()[-1])
    print(f"  {step['line']} in {step['seconds']:.1f} s", flush=True)
    check = cluster.python(_CHECK, dataset)
    writes = Counter(line.split(" ", 1)[1] for line in log.read_text().splitlines())
    return {
        "lost": check["lost"],
        "duplicated": sum(1 for n in writes.values() if n > 1),
        "partial": len(list(out_dir.rglob(".*.part"))),
        "requeued": "requeued" in step["line"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (1 worker, 2 workers)")
    parser.add_argument("--hd", type=int, default=16, help="1080p photos for per-image time")
    parser.add_argument(
        "--timeout",
        type=float,
        default=45.0,
        help="seconds without progress after which a shard is dead",
    )
    parser.add_argument("--kills", type=int, default=3, help="kill -9 trials")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    # Stopped by a signal (also when started in the background), still stop what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)

    if not (FACES / "images").is_dir():
        print(f"skipped: {FACES} not found (the shared photos are not part of the repo)")
        return 0
    if not mongod_binary().is_file():
        print(f"skipped: no mongod at {mongod_binary()} (run scripts/ensure_mongod.py)")
        return 0
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    rng = random.Random(seed)
    print(
        f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average "
        f"{os.getloadavg()[0]:.1f} at start (other work on these cores makes the times noisy "
        "and the scaling a lower bound)."
    )
    print(
        f"{args.photos} photos (the shared face photos repeated), {args.shards} shards, "
        f"one thread per worker (taskset + thread variables); seed {seed}",
        flush=True,
    )

    shutil.rmtree(OUT / "cluster", ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    plugins = OUT / "plugins"
    plugins.mkdir(exist_ok=True)
    link = plugins / "fiftyone-anonymizer"
    if not link.is_symlink():
        link.symlink_to(REPO, target_is_directory=True)
    paths_file = OUT / "paths.json"
    out_dir = OUT / "anonymized"

    with Cluster(OUT / "cluster", plugins) as cluster:
        paths_file.write_text(json.dumps(photo_tree(OUT / "photos", args.photos)))
        cluster.python(_CREATE, "scale", str(paths_file))
        warm_file = OUT / "warm.json"
        warm_file.write_text(json.dumps(photo_tree(OUT / "photos-warm", 8)))
        cluster.python(_CREATE, "warm", str(warm_file))

        print("scaling (whole job: sharded detect, then sharded anonymize):", flush=True)
        times: dict[int, list[float]] = {1: [], 2: []}
        cpu_scale: list[float] = []  # CPU of the job on one worker / busiest of two workers
        cpu_one: list[float] = []
        anonymize_2w: list[float] = []
        for r in range(args.rounds):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                detect_s, anonymize_s, cpu = whole_job(
                    cluster, "scale", out_dir, args.shards, args.timeout, workers
                )
                times[workers].append(detect_s + anonymize_s)
                if workers == 2:
                    anonymize_2w.append(anonymize_s)
                    cpu_scale.append(max(cpu))
                else:
                    cpu_one.append(cpu[0])
        t1, t2 = statistics.median(times[1]), statistics.median(times[2])
        by_cpu = statistics.median(cpu_one) / statistics.median(cpu_scale)

        print("shard overhead (one worker, 1 shard against n shards):", flush=True)
        detect_s, anonymize_s, cpu = whole_job(cluster, "scale", out_dir, 1, args.timeout, 1)
        one_shard = detect_s + anonymize_s
        steps = 2 * (args.shards - 1)  # shards added, over the two sharded steps
        overhead = (t1 - one_shard) / steps
        overhead_cpu = (statistics.median(cpu_one) - cpu[0]) / steps
        print(
            f"  per shard: {overhead:+.2f} s wall, {overhead_cpu:+.2f} s CPU (median "
            f"{args.shards}-shard job {t1:.1f} s against {one_shard:.1f} s as one shard)",
            flush=True,
        )

        per_image = None
        if args.hd:
            print(f"1080p: one worker, one thread, {args.hd} photos at 1920x1080:", flush=True)
            hd_file = OUT / "hd.json"
            hd_file.write_text(json.dumps(photo_tree(OUT / "photos-hd", args.hd, hd=True)))
            cluster.python(_CREATE, "hd", str(hd_file))
            detect_s, anonymize_s, cpu = whole_job(
                cluster, "hd", OUT / "anonymized-hd", 1, max(args.timeout, 120), 1
            )
            per_image = cpu[0] / args.hd
            print(
                f"  {per_image:.2f} CPU s per 1080p image (detect {detect_s / args.hd:.2f} + "
                f"anonymize {anonymize_s / args.hd:.2f} s wall per image), one thread",
                flush=True,
            )

        print(
            f"kill -9 of a worker at a random moment, {args.kills} time(s) (two workers, "
            "sharded anonymize):",
            flush=True,
        )
        reset(cluster, "scale", out_dir)
        start_workers(cluster, 2)
        run_job(cluster, "scale", [["detect_faces_and_plates", DETECT, args.shards]], args.timeout)
        damage = Counter()
        for _ in range(args.kills):
            trial = kill_trial(
                cluster,
                "scale",
                out_dir,
                args.shards,
                args.timeout,
                rng,
                shard_s=2 * statistics.median(anonymize_2w) / args.shards,
            )
            damage.update(trial)

    print(
        f"summary: 1 worker {t1:.1f} s, 2 workers {t2:.1f} s (medians of {args.rounds}); "
        f"{statistics.median(cpu_one) / args.photos:.3f} CPU s per photo at one thread"
        + (f"; {per_image:.2f} CPU s per 1080p photo" if per_image else "")
    )
    print(
        f"scale by CPU time (each worker on a core of its own: the job's CPU on one worker / "
        f"the busier of two): {by_cpu:.2f}x"
    )
    print(
        f"kill trials: {args.kills}, of which {damage['requeued']} hit a running shard "
        "(requeued); the others hit a worker between shards"
    )
    print(f"scale: 2 workers vs 1: {t1 / t2:.2f}x")
    print(
        f"after kill -9: lost {damage['lost']}, duplicated {damage['duplicated']}, "
        f"partial {damage['partial']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
