"""Sharded jobs: balanced slices, job status, dead-shard requeueing and its fence, and a real
run on a private MongoDB with two ``fiftyone delegated launch`` workers, one of them killed
with SIGKILL in the middle of a shard."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from services import ONE_THREAD, VENV_BIN, Cluster, mongod_binary

from conftest import PLUGIN_NAME
from fiftyone_anonymizer.jobs import shards

pytestmark = pytest.mark.models  # every test here loads the detection models

# --------------------------------------------------------------------------------------------
# Splitting


def test_plan_slices_balances_sums_in_order():
    weights = [1, 1, 1, 1, 4, 1, 1, 1, 1, 4]
    plan = shards.plan_slices(weights, 2)
    assert plan == [(0, 5), (5, 10)]
    assert [sum(weights[a:b]) for a, b in shards.plan_slices(weights, 4)] == [4, 4, 4, 4]
    # every item in exactly one slice, in order, no slice empty; never more slices than items
    for n in (1, 3, 7, 10, 25):
        plan = shards.plan_slices(weights, n)
        assert plan[0][0] == 0 and plan[-1][1] == len(weights)
        assert all(a < b for a, b in plan)
        assert all(plan[k][1] == plan[k + 1][0] for k in range(len(plan) - 1))
        assert len(plan) == min(n, len(weights))
    assert shards.plan_slices([], 3) == []
    # one huge item gets a slice of its own
    assert shards.plan_slices([1, 1, 100, 1, 1], 3) == [(0, 2), (2, 3), (3, 5)]


def _write_photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_split_view_balances_pixels_computes_metadata_and_is_stable(make_dataset, tmp_path):
    import fiftyone as fo

    sizes = [(400, 300)] * 6 + [(800, 600)] * 3 + [(200, 150)] * 8
    paths = [_write_photo(tmp_path / f"p{i:02d}.png", w, h, i) for i, (w, h) in enumerate(sizes)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image" * 5000)  # no dimensions: weighs its size in bytes
    ds = make_dataset([fo.Sample(filepath=str(p)) for p in [*paths, broken]])
    assert ds.exists("metadata").count() == 0

    slices = shards.split_view(ds, 3)
    assert ds.exists("metadata.width").count() == len(paths)  # metadata computed where missing
    ids = [sid for s in slices for sid in s.ids]
    assert ids == sorted(ds.values("id"))  # every sample once, in id order
    total = sum(w * h for w, h in sizes)
    for s in slices:
        assert abs(s.pixels - total / 3) < 0.25 * total / 3, [x.pixels for x in slices]
    assert shards.split_view(ds, 3) == slices  # a rerun cuts the same way
    view = ds.skip(2)
    assert [s.ids for s in shards.split_view(view, 2)][0][0] == sorted(view.values("id"))[0]


# --------------------------------------------------------------------------------------------
# Status, dead shards, fence (synthetic operations on the suite's database)


@pytest.fixture
def fake_job(make_dataset):
    """Shard operations queued straight into FiftyOne's delegated-operation store."""
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    ds = make_dataset()
    service = DelegatedOperationService()
    job_id = f"test{time.time_ns()}"
    created = []

    def make(count: int, samples: int = 10) -> list:
        for index in range(count):
            request = {
                "dataset_name": ds.name,
                "params": {},
                shards.SHARD_KEY: {
                    "job_id": job_id,
                    "job_name": "fake",
                    "index": index,
                    "count": count,
                    "samples": samples,
                    "pixels": 1,
                },
            }
            doc = service.queue_operation(
                operator=f"{PLUGIN_NAME}/detect_faces_and_plates",
                label=shards.shard_label("fake", index, count),
                context=ExecutionContext(request_params=request),
            )
            created.append(doc.id)
        return list(created)

    make.job_id = job_id
    make.service = service
    yield make
    for op_id in created:
        service.delete_operation(op_id)


def test_status_counts_shards_and_samples(fake_job):
    from fiftyone.operators.executor import ExecutionResult

    a, b, c, d = fake_job(4)
    service = fake_job.service
    service.set_running(a)
    service.set_progress(a, {"progress": 0.5, "label": "anonymized 5/10"})
    service.set_running(b)
    service.set_completed(b, result=ExecutionResult(result={"processed": 10}))
    service.set_running(c)
    service.set_failed(c, result=ExecutionResult(error="Traceback...\nValueError: boom"))
    status = shards.job_status(fake_job.job_id)
    assert (
        status.count("running"),
        status.count("done"),
        status.count("failed"),
        status.count("queued"),
    ) == (1, 1, 1, 1)
    assert (status.samples, status.samples_done) == (40, 15)
    assert not status.finished
    assert status.to_dict()["failures"] == [
        {"shard": 3, "op_id": str(c), "reason": "ValueError: boom"}
    ]
    line = status.line()
    assert "1/4 shards done, 1 running, 1 queued, 1 failed; 15/40 samples" in line
    assert "shard 3: ValueError: boom" in line
    assert fake_job.job_id in shards.list_jobs()


def test_a_slow_worker_that_reports_progress_is_never_requeued_a_silent_one_is(fake_job):
    from fiftyone.operators.executor import ExecutionRunState

    (op,) = fake_job(1)
    service = fake_job.service
    service.set_running(op)
    stop = threading.Event()

    def slow_worker():  # a progress report every 0.4 s, for 3 s
        for i in range(8):
            if stop.wait(0.4):
                return
            service.set_progress(op, {"progress": i / 8, "label": f"{i}/8"})

    thread = threading.Thread(target=slow_worker)
    thread.start()
    try:
        start = time.monotonic()
        while thread.is_alive():
            assert shards.requeue_dead(timeout_s=1.2, job_id=fake_job.job_id) == []
            time.sleep(0.1)
        assert time.monotonic() - start > 3.0  # longer than the timeout, alive all along
    finally:
        stop.set()
        thread.join()
    assert service.get(op).run_state == ExecutionRunState.RUNNING

    # silent from now on: requeued once the timeout has passed, by one caller only
    time.sleep(1.3)
    requeued = shards.requeue_dead(timeout_s=1.2, job_id=fake_job.job_id)
    assert [(r.op_id, r.action) for r in requeued] == [(str(op), "requeued")]
    assert requeued[0].silent_s > 1.2
    assert shards.requeue_dead(timeout_s=1.2, job_id=fake_job.job_id) == []
    doc = service.get(op)
    assert doc.run_state == ExecutionRunState.QUEUED
    assert doc.label == "fake · shard 1 of 1 · attempt 2"
    assert shards.job_status(fake_job.job_id).shards[0].attempt == 2


def test_a_shard_that_keeps_killing_workers_fails_after_max_attempts(fake_job):
    (op,) = fake_job(1)
    service = fake_job.service
    for attempt in range(1, shards.MAX_ATTEMPTS + 1):
        service.set_running(op)
        later = shards._utcnow() + __import__("datetime").timedelta(seconds=100)
        (record,) = shards.requeue_dead(timeout_s=10, job_id=fake_job.job_id, now=later)
        assert record.action == ("failed" if attempt == shards.MAX_ATTEMPTS else "requeued")
    status = shards.job_status(fake_job.job_id)
    assert status.finished and status.count("failed") == 1
    assert "gave up after 3 attempts" in status.shards[0].reason


def _running_shard(fake_job):
    """One shard of a fake job, marked running, and the execution context a worker gives it."""
    from fiftyone.operators.executor import ExecutionContext

    (op,) = fake_job(1)
    service = fake_job.service
    service.set_running(op)
    ctx = ExecutionContext(
        request_params={"run_doc": op, "delegated": True},
        delegated_operation_id=op,
        set_progress=service.set_progress,
    )
    return op, service, ctx


def test_progress_reporter_stops_an_attempt_that_was_requeued_behind_its_back(fake_job):
    from fiftyone.operators.executor import ExecutionRunState

    op, service, ctx = _running_shard(fake_job)
    with shards.progress_reporter(ctx) as report:
        assert service.get(op).status.label == "starting"  # the heartbeat starts at once
        report(0.5, "half")
        assert service.get(op).status.progress == 0.5

        service.set_queued(op, required_state=ExecutionRunState.RUNNING)  # presumed dead...
        time.sleep(0.01)
        service.set_running(op)  # ...and taken by another worker
        with pytest.raises(shards.ShardSuperseded):
            report(0.6, "still here")
        service.set_failed(op)
        with pytest.raises(shards.ShardSuperseded):
            report(0.7, "and here")


def test_a_slow_start_up_is_not_a_death_but_a_hung_one_is(fake_job):
    op, service, ctx = _running_shard(fake_job)
    job = fake_job.job_id
    with shards.progress_reporter(ctx, startup_beat_s=0.2, max_startup_s=2.0) as report:
        start = time.monotonic()
        while time.monotonic() - start < 1.6:  # models loading: no report from the job yet
            assert shards.requeue_dead(timeout_s=0.8, job_id=job) == []
            time.sleep(0.1)
        report(0.1, "anonymized 1/10")  # the job's first report ends the start-up beats
        beats = service.get(op).status.updated_at
        time.sleep(0.5)
        assert service.get(op).status.updated_at == beats

    # a start-up that never reports: the beats stop after max_startup_s, then silence is death
    service.set_queued(op)
    service.set_running(op)
    with shards.progress_reporter(ctx, startup_beat_s=0.2, max_startup_s=0.6):
        time.sleep(0.6 + 1.0)
        assert [r.op_id for r in shards.requeue_dead(timeout_s=0.8, job_id=job)] == [str(op)]


def test_schedule_queues_one_labelled_operation_per_slice(make_dataset, tmp_path):
    import fiftyone as fo
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext, ExecutionRunState

    paths = [_write_photo(tmp_path / "in" / f"p{i}.png", 64 + 16 * i, 48, i) for i in range(7)]
    ds = make_dataset([fo.Sample(filepath=str(p), gt=fo.Detections()) for p in paths])
    ds.persistent = True  # the workers load it by name
    params = {
        "output_dir": str(tmp_path / "out"),
        "label_fields": ["gt"],
        "classes": [],
        "view_target": "DATASET",
        "shards": 3,
    }  # a form's fields, not the shard's
    job = shards.schedule_sharded(ds.skip(1), "anonymize_images", params, 3, name="sched")
    service = DelegatedOperationService()
    try:
        assert job.operator == f"{PLUGIN_NAME}/anonymize_images" and len(job.op_ids) == 3
        expected = shards.split_view(ds.skip(1), 3)
        for k, op_id in enumerate(job.op_ids):
            doc = service.get(ObjectId(op_id))
            assert doc.run_state == ExecutionRunState.QUEUED
            assert doc.label == f"sched · shard {k + 1} of 3"
            request = doc.context.request_params
            assert "view_target" not in request["params"] and "shards" not in request["params"]
            assert request[shards.SHARD_KEY]["samples"] == len(expected[k].ids)
            view = ExecutionContext(request_params=request).target_view()
            assert sorted(view.values("id")) == expected[k].ids
        # the fields the shards write exist before any of them starts
        assert ds.has_field("anonymized_filepath")
        assert ds.has_field("anonymized_filepath_fingerprint")
        status = shards.job_status(job.job_id)
        assert (status.count("queued"), status.samples) == (3, 6)
    finally:
        for op_id in job.op_ids:
            service.delete_operation(ObjectId(op_id))


def test_requeue_records_what_a_dead_anonymize_attempt_finished(make_dataset, tmp_path):
    """The copies a dead attempt wrote but did not record are recorded, and the real job then
    skips exactly those: not a stale copy, not a sample whose boxes changed meanwhile."""
    import datetime

    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext, ExecutionRunState

    uri = f"{PLUGIN_NAME}/anonymize_images"
    paths = [_write_photo(tmp_path / "in" / f"p{i}.png", 96, 64, i) for i in range(6)]

    def box():
        return fo.Detections(
            detections=[fo.Detection(label="face", bounding_box=[0.2, 0.2, 0.4, 0.5])]
        )

    ds = make_dataset([fo.Sample(filepath=str(p), gt=box()) for p in paths])
    ds.persistent = True
    params = {
        "output_dir": str(tmp_path / "out"),
        "label_fields": ["gt"],
        "classes": [],
        "output_field": "anonymized_filepath",
    }
    shards._declare_fields(ds, "anonymize_images", params)
    service = DelegatedOperationService()
    request = {
        "dataset_name": ds.name,
        "view": ds.select(ds.values("id"))._serialize(),
        "params": params,
        shards.SHARD_KEY: {
            "job_id": f"salvage{time.time_ns()}",
            "job_name": "s",
            "index": 0,
            "count": 1,
            "samples": 6,
            "pixels": 1,
        },
    }
    op = service.queue_operation(
        operator=uri, label="s · shard 1 of 1", context=ExecutionContext(request_params=request)
    ).id
    try:
        service.set_running(op)
        time.sleep(0.05)
        # the dead attempt's work: copies on disk, none recorded (a twin dataset wrote them)
        twin = make_dataset([fo.Sample(filepath=str(p), gt=box()) for p in paths])
        done = foo.execute_operator(uri, {"view": twin.view(), "params": params}).result
        assert done["processed"] == 6
        copies = sorted((tmp_path / "out").rglob("p*.png"))
        assert len(copies) == 6
        stale = copies[0]  # older than the attempt: a leftover, not its work
        os.utime(stale, (time.time() - 3600, time.time() - 3600))
        changed = ds.match(fo.ViewField("filepath") == str(paths[1])).first()
        changed.gt = fo.Detections(
            detections=[fo.Detection(label="face", bounding_box=[0.1, 0.1, 0.3, 0.3])]
        )
        changed.save()  # boxes edited after the attempt started: its copy is out of date
        partial = copies[2].parent / f".{copies[2].name}.k3j5x9_q.part"
        partial.write_bytes(b"half a copy")
        foreign = copies[2].parent / ".someone-else.png.k3j5x9_q.part"
        foreign.write_bytes(b"not ours")

        later = shards._utcnow() + datetime.timedelta(seconds=100)
        (record,) = shards.requeue_dead(
            timeout_s=10, job_id=request[shards.SHARD_KEY]["job_id"], now=later
        )
        assert (record.action, record.adopted, record.removed_partials) == ("requeued", 4, 1)
        assert not partial.exists() and foreign.exists()
        assert service.get(op).run_state == ExecutionRunState.QUEUED

        # the next attempt (the real job) redoes only the stale copy and the edited sample
        again = foo.execute_operator(uri, {"view": ds.view(), "params": params}).result
        assert (again["processed"], again["skipped"]) == (2, 4)
    finally:
        service.delete_operation(op)


def test_schedule_refuses_what_does_not_split(make_dataset):
    ds = make_dataset()
    with pytest.raises(ValueError, match="does not split"):
        shards.schedule_sharded(ds, "share_anonymized", {}, 2)
    with pytest.raises(ValueError, match="gt_field"):
        shards.schedule_sharded(ds, "audit_anonymization", {"gt_field": "gt"}, 2)
    with pytest.raises(ValueError, match="not persistent"):
        shards.schedule_sharded(ds, "anonymize_images", {}, 2)


# --------------------------------------------------------------------------------------------
# The real thing: private mongod, two workers, kill -9 mid-shard


_SETUP = r"""
import json, sys
import fiftyone as fo
spec = json.load(open(sys.argv[1]))
for name in ("sharded", "serial"):
    ds = fo.Dataset(name, overwrite=True)
    ds.persistent = True
    ds.add_samples([fo.Sample(filepath=s["filepath"], faces=fo.Detections(detections=[
        fo.Detection(label="face", bounding_box=s["box"], confidence=0.9)])) for s in spec])
print(json.dumps({"samples": len(ds)}))
"""

_SERIAL = r"""
import json, sys
import fiftyone as fo
import fiftyone.operators as foo
params = json.loads(sys.argv[1])
result = foo.execute_operator("@fiftyone-anonymizer/anonymize/anonymize_images",
                              {"view": fo.load_dataset("serial").view(), "params": params})
print(json.dumps(result.result))
"""

_SCHEDULE = r"""
import dataclasses, json, sys
import fiftyone as fo
from fiftyone_anonymizer.jobs import shards
job = shards.schedule_sharded(fo.load_dataset("sharded"), "anonymize_images",
                              json.loads(sys.argv[1]), int(sys.argv[2]), name="test job")
print(json.dumps(dataclasses.asdict(job)))
"""

_WAIT = r"""
import json, sys
import fiftyone as fo
import fiftyone.operators as foo
from fiftyone_anonymizer.jobs import shards
lines = []
status = shards.wait_for_job(sys.argv[1], timeout_s=float(sys.argv[2]), poll_s=0.5,
                             max_wait_s=240, log=lines.append)
out = {"status": status.to_dict(), "line": status.line(), "requeues": lines}
# the records are what the job itself expects: running it again finds every copy current
out["rerun"] = foo.execute_operator("@fiftyone-anonymizer/anonymize/anonymize_images", {
    "view": fo.load_dataset("sharded").view(), "params": json.loads(sys.argv[3])}).result
for name in ("sharded", "serial"):
    ds = fo.load_dataset(name)
    paths, copies, fps = ds.values(
        ["filepath", "anonymized_filepath", "anonymized_filepath_fingerprint"])
    errors = (ds.values("anonymizer_error") if ds.has_field("anonymizer_error")
              else [None] * len(paths))
    out[name] = {p: [c, fp, err] for p, c, fp, err in zip(paths, copies, fps, errors)}
print(json.dumps(out))
"""

FACE = (175, 60, 295, 215)  # the astronaut's face in skimage's 512 x 512 picture


def _photos(root: Path, count: int) -> list[dict]:
    """``count`` JPEG crops of different sizes around the astronaut's face, and its box."""
    from skimage import data

    base = data.astronaut()
    spec = []
    for k in range(count):
        size = 232 + 24 * (k % 6)
        x0 = min(FACE[0] - 10 - 7 * (k % 5), 512 - size)
        y0 = min(max(0, FACE[1] - 40 + 5 * (k % 4)), 512 - size)
        crop = base[y0 : y0 + size, x0 : x0 + size].astype(np.float32) * (0.8 + 0.02 * k)
        if k % 2:
            crop = crop[:, ::-1]
        pixels = np.clip(crop, 0, 255).astype(np.uint8)
        path = root / f"set{k % 3}" / f"astronaut_{k:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=92)
        fx0, fx1 = FACE[0] - x0, FACE[2] - x0
        if k % 2:
            fx0, fx1 = size - fx1, size - fx0
        box = [fx0 / size, (FACE[1] - y0) / size, (fx1 - fx0) / size, (FACE[3] - FACE[1]) / size]
        spec.append({"filepath": str(path), "box": [min(max(v, 0.0), 1.0) for v in box]})
    return spec


def _writes(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        pid, _, path = line.partition(" ")
        out.append((int(pid), path))
    return out


@pytest.mark.slow
def test_sharded_anonymize_survives_kill_9_of_a_worker(tmp_path, plugins_dir):
    if not mongod_binary().is_file():
        pytest.skip(f"no mongod at {mongod_binary()} (run scripts/ensure_mongod.py)")
    timeout_s = 60.0  # no progress for this long = dead; well above a first shard's start-up
    photos = tmp_path / "photos"
    spec = _photos(photos, 32)
    params = {
        "label_fields": ["faces"],
        "classes": [],
        "min_confidence": None,
        "output_field": "anonymized_filepath",
        "mode": "blur",
        "shape": "auto",
        "seed_kernel": "",
        "jpeg_quality": 90,
        "overwrite": False,
    }
    out_sharded, out_serial = tmp_path / "out-sharded", tmp_path / "out-serial"
    write_log = tmp_path / "writes.log"
    (tmp_path / "spec.json").write_text(json.dumps(spec))

    with Cluster(tmp_path / "cluster", plugins_dir, extra_env=ONE_THREAD) as cluster:
        assert cluster.python(_SETUP, str(tmp_path / "spec.json"))["samples"] == 32
        workers = [
            cluster.start_worker(FO_TEST_WRITE_LOG=str(write_log), FO_TEST_WRITE_DELAY="0.3")
            for _ in range(2)
        ]
        serial = cluster.python(_SERIAL, json.dumps({**params, "output_dir": str(out_serial)}))
        assert serial["processed"] == 32, serial
        job = cluster.python(_SCHEDULE, json.dumps({**params, "output_dir": str(out_sharded)}), "4")
        assert len(job["op_ids"]) == 4

        # kill -9 the first worker to have made 3 copies visible (its shard has 8)
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            counts = Counter(pid for pid, _ in _writes(write_log))
            victim = next((w for w in workers if counts[w.pid] >= 3), None)
            time.sleep(0.02)
        assert victim is not None, cluster.worker_logs()
        cluster.kill(victim)
        by_victim = {path for pid, path in _writes(write_log) if pid == victim.pid}
        partials_at_kill = list(out_sharded.rglob(".*.part"))
        victim_ops = re.findall(r"Running operation (\w+)", victim.log_path.read_text())
        assert victim_ops, cluster.worker_logs()

        result = cluster.python(
            _WAIT,
            job["job_id"],
            str(timeout_s),
            json.dumps({**params, "output_dir": str(out_sharded)}),
            timeout_s=300,
        )
        listing = subprocess.run(
            [str(VENV_BIN / "fiftyone"), "delegated", "list"],
            env=cluster.env(),
            capture_output=True,
            text=True,
        ).stdout
        logs = cluster.worker_logs()

    status = result["status"]
    assert status["done"] == 4 and status["failed"] == 0, (result["line"], logs)
    # exactly the killed worker's shard went round again, and only once
    again = [s for s in status["shard_states"] if s["attempt"] > 1]
    assert [(s["op_id"], s["attempt"]) for s in again] == [(victim_ops[-1], 2)], result["line"]
    assert len(result["requeues"]) == 1 and "requeued" in result["requeues"][0]
    # the copies the victim had finished were recorded for it, not made again
    adopted = int(re.search(r"adopted (\d+)", result["requeues"][0]).group(1))
    assert adopted == len(by_victim) >= 3, (result["requeues"], by_victim)

    # every copy opens, equals the serial run's byte for byte, and was written once
    sharded, serial_rows = result["sharded"], result["serial"]
    copies = []
    for source, (copy, fingerprint, error) in sharded.items():
        assert error is None and copy, (source, copy, error)
        serial_copy = serial_rows[source][0]
        assert fingerprint
        copy, serial_copy = Path(copy), Path(serial_copy)
        assert copy.relative_to(out_sharded) == serial_copy.relative_to(out_serial)
        with Image.open(copy) as im:
            im.load()
        assert copy.read_bytes() == serial_copy.read_bytes(), copy
        assert copy.read_bytes() != Path(source).read_bytes()
        copies.append(str(copy))
    assert len(copies) == 32
    assert (result["rerun"]["processed"], result["rerun"]["skipped"]) == (0, 32), result["rerun"]
    writes = Counter(path for _, path in _writes(write_log))
    assert sorted(writes) == sorted(copies)
    assert [p for p, n in writes.items() if n != 1] == [], "copies written more than once"
    assert sorted(str(p) for p in out_sharded.rglob("*") if p.is_file()) == sorted(copies)
    assert not list(out_sharded.rglob(".*.part"))
    assert "test job · shard 1 of 4" in listing and "attempt 2" in listing, listing
    # what the kill left behind, for the record of what was recovered
    print(
        f"killed after {len(by_victim)} copies; {len(partials_at_kill)} partial files then; "
        f"{result['requeues'][0]}"
    )
