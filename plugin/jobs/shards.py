"""Sharded jobs: one operator run split into many delegated operations, for many workers.

FiftyOne already has the distributed part. Delegated operations live in the shared MongoDB,
and every ``fiftyone delegated launch`` worker (any machine with the same
``FIFTYONE_DATABASE_URI`` and access to the media) claims queued operations atomically
(``set_running(required_state=QUEUED)``). This module only cuts a view into slices and
queues each slice as its own delegated operation of one of our operators, then keeps an
eye on them:

* :func:`split_view` cuts a view into ``n`` slices of about the same number of pixels,
  contiguous in sample-id order, so that a rerun cuts the same way.
* :func:`schedule_sharded` queues one delegated operation per slice (a ``select(ids)`` view
  of exactly that slice), labelled ``"<job> · shard i of n"`` (the label that
  ``fiftyone delegated list`` shows). The shard's identity rides in the operation's request
  parameters under :data:`SHARD_KEY`.
* :func:`job_status` sums a job up: shards queued, running, done, failed (with the reason),
  and samples done.
* :func:`requeue_dead` finds shards whose worker died. FiftyOne leaves an operation whose
  worker was killed ``running`` forever and no other worker takes it. A running shard whose
  last progress report (``status.updated_at``, or ``started_at`` before the first one) is
  older than the timeout (:data:`TIMEOUT_ENV`, default :data:`DEFAULT_TIMEOUT_S`) is dead:
  it is put back in the queue with FiftyOne's ``set_queued(required_state=RUNNING)`` (a
  compare-and-set, so two watchers never requeue the same shard twice from one reading), and
  after :data:`MAX_ATTEMPTS` deaths it is failed with ``set_failed`` instead, so a sample
  that kills every worker cannot go round forever. Who runs it: :func:`wait_for_job` (the
  submitter waiting), :func:`job_status` with ``requeue=True``, and ``python -m
  fiftyone_anonymizer.jobs.shards watch``, a small stateless loop that deployments run beside
  the workers (any number of copies is safe).

Two workers never write the same sample:

* slices are disjoint, and each shard's view selects exactly its slice;
* a shard is only requeued after its worker has been silent for longer than the timeout. A
  live worker reports progress as images finish (at most every 0.5 s), so the timeout must
  be larger than its start-up (models, TensorFlow) plus its slowest image; the default of
  5 minutes is, by far.
* an attempt that was requeued behind its back (a worker frozen for longer than the timeout
  that comes back) stops at its next progress report when the operator reports progress
  through :func:`progress_reporter` (the fence: the operation is no longer running, or runs
  under a newer ``started_at``), which also sends heartbeats while the worker starts up. Before that report it can finish the images it had in
  flight; copies are written atomically and are byte-identical whoever writes them, so even then
  no file is wrong, only written twice.
* before an ``anonymize_images`` shard goes back to the queue, the copies its dead worker had
  finished but not yet recorded (the job records them in groups of ``database.SAVE_EVERY``)
  are recorded, and its half-written ``.*.part`` files are removed, so the next attempt
  neither makes them again nor leaves debris (see :func:`_salvage_anonymize`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, cast

#: The plugin's URI (``fiftyone.yml``'s name): its operators are ``<PLUGIN>/<operator>``.
PLUGIN = "@fiftyone-anonymizer/anonymize"
SHARD_KEY = "anonymizer_shard"  # request parameter holding a shard's identity
TIMEOUT_ENV = "FO_ANONYMIZER_SHARD_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
MAX_ATTEMPTS = 3
# Operators whose work splits by sample. share_anonymized makes one dataset of the whole
# view, and an audit with ground truth runs one FiftyOne evaluation over it: neither splits.
SHARDABLE = ("detect_faces_and_plates", "anonymize_images", "audit_anonymization")
_ATTEMPT = re.compile(r" · attempt (\d+)$")
_DEAD_REASON = "no progress for"


class ShardSuperseded(RuntimeError):
    """This attempt of a shard was requeued or failed by someone else: stop working on it."""


def dead_timeout(timeout_s: float | None = None) -> float:
    """Seconds without progress after which a running shard counts as dead."""
    if timeout_s is not None:
        return float(timeout_s)
    return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))


# --------------------------------------------------------------------------------------------
# Splitting


@dataclass(frozen=True)
class Slice:
    """A contiguous run of samples (in id order) and its weight in pixels."""

    index: int
    ids: list[str]
    pixels: int


def plan_slices(weights: Sequence[float], n: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges cutting ``weights`` in order into at most ``n`` non-empty runs
    of about equal sum (each cut at the item nearest its ideal place).

    Args:
        weights: non-negative weight of each item, in the order to keep
        n: the number of runs wanted (fewer when there are fewer items)
    """
    count = len(weights)
    n = max(1, min(int(n), count))
    if count == 0:
        return []
    cumulative = []
    total = 0.0
    for w in weights:
        total += max(0.0, float(w))
        cumulative.append(total)
    cuts = [0]
    for k in range(1, n):
        ideal = total * k / n
        # first item whose cumulative weight reaches the ideal cut...
        lo, hi = cuts[-1] + 1, count - (n - k)
        i = lo
        while i < hi and cumulative[i - 1] < ideal:
            i += 1
        # ...or the one before it, whichever leaves the cut closer to the ideal
        if i > lo and abs(cumulative[i - 2] - ideal) <= abs(cumulative[i - 1] - ideal):
            i -= 1
        cuts.append(i)
    cuts.append(count)
    return [(cuts[k], cuts[k + 1]) for k in range(n)]


def sample_weights(
    sample_collection, compute_metadata: bool = True
) -> tuple[list[str], list[float]]:
    """Sample ids in id order and each sample's cost in pixels (width * height).

    Metadata is computed first where missing (``compute_metadata``). A sample without
    dimensions weighs its file size times the collection's pixels per byte; without either, the
    mean weight.

    Args:
        sample_collection: a dataset or view
        compute_metadata: fill in missing metadata first (reads image headers)
    """
    if compute_metadata:
        sample_collection.compute_metadata(skip_failures=True)
    ids, widths, heights, sizes, paths = sample_collection.values(
        ["id", "metadata.width", "metadata.height", "metadata.size_bytes", "filepath"]
    )
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    pixels: list[float | None] = []
    nbytes: list[float | None] = []
    for i in order:
        w, h = widths[i], heights[i]
        pixels.append(float(w * h) if w and h else None)
        size = sizes[i]
        if size is None:
            try:
                size = os.path.getsize(paths[i])
            except OSError:
                size = None
        nbytes.append(float(size) if size else None)
    both = [(p, b) for p, b in zip(pixels, nbytes) if p is not None and b is not None]
    per_byte = sum(p for p, _ in both) / sum(b for _, b in both) if both else None
    known = [p for p in pixels if p is not None]
    weights: list[float | None] = []
    for p, b in zip(pixels, nbytes):
        if p is not None:
            weights.append(p)
        elif b is not None and (per_byte is not None or not known):
            weights.append(b * (per_byte or 1.0))
        else:
            weights.append(None)
    present = [w for w in weights if w is not None]
    mean = sum(present) / len(present) if present else 1.0
    return [ids[i] for i in order], [mean if w is None else w for w in weights]


def split_view(sample_collection, n: int, compute_metadata: bool = True) -> list[Slice]:
    """Cut ``sample_collection`` into at most ``n`` slices of about equal pixel counts.

    Slices are contiguous in sample-id order, so the same samples always cut the same way.

    Args:
        sample_collection: a dataset or view
        n: the number of slices wanted (fewer when there are fewer samples)
        compute_metadata: fill in missing metadata first (see :func:`sample_weights`)
    """
    ids, weights = sample_weights(sample_collection, compute_metadata=compute_metadata)
    return [
        Slice(k, ids[a:b], int(round(sum(weights[a:b]))))
        for k, (a, b) in enumerate(plan_slices(weights, n))
    ]


# --------------------------------------------------------------------------------------------
# Scheduling


@dataclass
class ShardedJob:
    """A scheduled job: its id and name, and one delegated operation id per shard."""

    job_id: str
    name: str
    operator: str
    dataset: str
    op_ids: list[str]


def shard_label(name: str, index: int, count: int, attempt: int = 1) -> str:
    """The operation label FiftyOne lists (``fiftyone delegated list``, the App's runs)."""
    label = f"{name} · shard {index + 1} of {count}"
    return f"{label} · attempt {attempt}" if attempt > 1 else label


def _attempt(label: str | None) -> int:
    match = _ATTEMPT.search(label or "")
    return int(match.group(1)) if match else 1


def _operator_uri(operator: str) -> str:
    return operator if operator.startswith("@") else f"{PLUGIN}/{operator}"


def schedule_sharded(
    sample_collection,
    operator: str,
    params: dict[str, Any],
    shards: int,
    name: str | None = None,
    compute_metadata: bool = True,
    delegation_target: str | None = None,
) -> ShardedJob:
    """Queue ``operator`` on ``sample_collection`` as ``shards`` delegated operations.

    Each operation runs the operator with ``params`` on a ``select(ids)`` view of its slice
    (see :func:`split_view`); any worker started with ``fiftyone delegated launch`` on the
    same database runs them. Follow the job with :func:`job_status` or :func:`wait_for_job`.

    Args:
        sample_collection: a dataset or view of a persistent dataset
        operator: an operator of this plugin, by name (``"anonymize_images"``) or URI
        params: the operator's parameters, as for an unsharded run
        shards: the number of slices (fewer when there are fewer samples)
        name: a name for the job in labels (default: ``"<operator> <dataset>"``)
        compute_metadata: compute missing metadata to balance the slices by pixels
        delegation_target: an optional FiftyOne delegation target (orchestrator)
    """
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    uri = _operator_uri(operator)
    op_name = uri.rsplit("/", 1)[-1]
    if op_name not in SHARDABLE:
        raise ValueError(f"'{op_name}' does not split by sample; shardable: {SHARDABLE}")
    if op_name == "audit_anonymization" and params.get("gt_field"):
        raise ValueError(
            "an audit with gt_field runs one evaluation over the whole view: "
            "shard the audit without gt_field, then evaluate once"
        )
    dataset = sample_collection._dataset
    if not dataset.persistent:
        raise ValueError(
            f"dataset '{dataset.name}' is not persistent: workers in other "
            "processes could not load it"
        )
    # a form's target (the view is the slice) and a form's shard count (no shard re-shards)
    params = {
        k: v for k, v in params.items() if k not in ("view_target", "custom_view_target", "shards")
    }
    _declare_fields(dataset, op_name, params)
    slices = split_view(sample_collection, shards, compute_metadata=compute_metadata)
    job_id = uuid.uuid4().hex[:12]
    name = name or f"{op_name} {dataset.name}"
    service = DelegatedOperationService()
    op_ids = []
    for piece in slices:
        shard = {
            "job_id": job_id,
            "job_name": name,
            "index": piece.index,
            "count": len(slices),
            "samples": len(piece.ids),
            "pixels": piece.pixels,
        }
        ctx: dict[str, Any] = {
            "view": sample_collection.select(piece.ids),
            "params": params,
            SHARD_KEY: shard,
        }
        if delegation_target:
            ctx["delegation_target"] = delegation_target
        queued = foo.execute_operator(uri, ctx, request_delegation=True)
        op_id = queued.result["id"]
        service.set_label(op_id, shard_label(name, piece.index, len(slices)))
        op_ids.append(str(op_id))
    return ShardedJob(job_id, name, uri, dataset.name, op_ids)


def _declare_fields(dataset, op_name: str, params: dict[str, Any]) -> None:
    """Add the fields the job writes before its shards start, so that the workers do not all
    change the dataset's schema at the same moment."""
    from . import anonymize, audit, copies, detect, fields

    # The jobs' own field checks, before any shard is queued (a refused name fails once, here).
    if op_name == "detect_faces_and_plates":
        label_field = params.get("label_field") or fields.DEFAULT_LABEL_FIELD
        problems = detect.check_targets(dataset, label_field)
    elif op_name == "anonymize_images":
        output_field = params.get("output_field") or fields.DEFAULT_OUTPUT_FIELD
        problems = anonymize.check_targets(dataset, output_field)
    elif op_name == "audit_anonymization":
        problems = audit.check_targets(
            dataset,
            params.get("output_field") or fields.DEFAULT_OUTPUT_FIELD,
            params.get("residual_field") or audit.DEFAULT_RESIDUAL_FIELD,
        )
    else:
        problems = {}
    if problems:
        raise ValueError(next(iter(problems.values())))
    if op_name == "detect_faces_and_plates":
        if dataset.media_type == "video":
            fields.declare_frame_detections_field(dataset, label_field)
        else:
            fields.declare_detections_field(dataset, label_field)
    elif op_name == "anonymize_images":
        copies.declare_copy_fields(dataset, output_field)


# --------------------------------------------------------------------------------------------
# Status


@dataclass
class ShardStatus:
    """One shard: its operation, state and how far it got."""

    index: int
    op_id: str
    state: str  # "queued", "running", "done" or "failed"
    samples: int
    samples_done: int
    progress: float | None = None
    attempt: int = 1
    heartbeat_age_s: float | None = None  # running: seconds since the last progress report
    reason: str | None = None  # failed: the last line of the error


@dataclass
class JobStatus:
    """A sharded job summed up over its shards."""

    job_id: str
    name: str
    operator: str
    dataset: str | None
    shards: list[ShardStatus] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(s.state == state for s in self.shards)

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def samples_done(self) -> int:
        return sum(s.samples_done for s in self.shards)

    @property
    def finished(self) -> bool:
        """No shard is queued or running (every one is done or failed)."""
        return all(s.state in ("done", "failed") for s in self.shards)

    @property
    def succeeded(self) -> bool:
        return bool(self.shards) and all(s.state == "done" for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "name": self.name,
            "operator": self.operator,
            "dataset": self.dataset,
            "shards": len(self.shards),
            **{state: self.count(state) for state in ("queued", "running", "done", "failed")},
            "requeued": sum(s.attempt - 1 for s in self.shards),
            "samples": self.samples,
            "samples_done": self.samples_done,
            "failures": [
                {"shard": s.index + 1, "op_id": s.op_id, "reason": s.reason}
                for s in self.shards
                if s.state == "failed"
            ],
            "shard_states": [asdict(s) for s in self.shards],
        }

    def line(self) -> str:
        """One printable line, e.g. for a terminal or a log."""
        text = (
            f"{self.name} [{self.job_id}]: {self.count('done')}/{len(self.shards)} shards "
            f"done, {self.count('running')} running, {self.count('queued')} queued, "
            f"{self.count('failed')} failed; {self.samples_done}/{self.samples} samples"
        )
        requeued = sum(s.attempt - 1 for s in self.shards)
        if requeued:
            text += f"; {requeued} requeued"
        failures = [f"shard {s.index + 1}: {s.reason}" for s in self.shards if s.state == "failed"]
        if failures:
            text += " (" + "; ".join(failures) + ")"
        return text


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # FiftyOne stores naive UTC


def _heartbeat(doc) -> datetime | None:
    """When a running operation last showed life: its last progress report, else its start.

    Not ``updated_at``: FiftyOne's ``--monitor`` parent pings it while the child process is
    alive, even when the child is stuck.
    """
    beats = [doc.started_at, getattr(doc.status, "updated_at", None) if doc.status else None]
    beats = [b for b in beats if b is not None]
    return max(beats) if beats else None


def _error_line(doc) -> str | None:
    error = getattr(doc.result, "error", None) if doc.result is not None else None
    if not error:
        return None
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _shard_ops(job_id: str | None = None, run_state: str | None = None) -> list:
    """Every shard operation (of ``job_id``; in ``run_state``), without FiftyOne's default
    limit of 1000 operations per listing."""
    from fiftyone.factory import DelegatedOperationPagingParams
    from fiftyone.operators.delegated import DelegatedOperationService

    key = f"context.request_params.{SHARD_KEY}" + (".job_id" if job_id else "")
    query = {key: job_id} if job_id else {key: {"$exists": True}}
    return DelegatedOperationService().list_operations(
        run_state=run_state,
        paging=DelegatedOperationPagingParams(limit=0),
        include_archived=True,
        **query,
    )


def _shard_info(doc) -> dict[str, Any]:
    return doc.context.request_params[SHARD_KEY]


def _shard_status(doc, now: datetime) -> ShardStatus:
    from fiftyone.operators.executor import ExecutionRunState as S

    info = _shard_info(doc)
    samples = int(info.get("samples", 0))
    state = {S.COMPLETED: "done", S.FAILED: "failed", S.RUNNING: "running"}.get(
        doc.run_state, "queued"
    )
    progress = getattr(doc.status, "progress", None) if doc.status else None
    status = ShardStatus(
        index=int(info["index"]),
        op_id=str(doc.id),
        state=state,
        samples=samples,
        samples_done=0,
        attempt=_attempt(doc.label),
    )
    if state == "done":
        status.samples_done, status.progress = samples, 1.0
    elif state == "running":
        status.progress = progress
        status.samples_done = int(samples * min(1.0, max(0.0, progress or 0.0)))
        beat = _heartbeat(doc)
        status.heartbeat_age_s = (now - beat).total_seconds() if beat else None
    elif state == "failed":
        status.reason = _error_line(doc) or "failed"
    return status


def list_jobs() -> list[str]:
    """Ids of every sharded job in the database, oldest first."""
    seen: dict[str, datetime] = {}
    for doc in _shard_ops():
        job = _shard_info(doc)["job_id"]
        queued = doc.queued_at or _utcnow()
        seen[job] = min(seen.get(job, queued), queued)
    return sorted(seen, key=lambda job: seen[job])


def job_status(
    job_id: str,
    requeue: bool = False,
    timeout_s: float | None = None,
    log: Callable[[str], None] | None = None,
) -> JobStatus:
    """The state of every shard of ``job_id``, and the totals.

    Args:
        job_id: the id returned by :func:`schedule_sharded`
        requeue: first requeue this job's dead shards (see :func:`requeue_dead`)
        timeout_s: seconds without progress after which a shard is dead (default: see
            :func:`dead_timeout`)
        log: called with one line per shard requeued
    """
    if requeue:
        requeue_dead(timeout_s=timeout_s, job_id=job_id, log=log)
    docs = _shard_ops(job_id)
    if not docs:
        raise ValueError(f"no sharded job '{job_id}'")
    info = _shard_info(docs[0])
    now = _utcnow()
    shards = sorted((_shard_status(d, now) for d in docs), key=lambda s: s.index)
    return JobStatus(
        job_id,
        info.get("job_name", job_id),
        docs[0].operator,
        docs[0].context.request_params.get("dataset_name"),
        shards,
    )


# --------------------------------------------------------------------------------------------
# Dead shards


@dataclass
class Requeued:
    """What :func:`requeue_dead` did to one dead shard."""

    op_id: str
    job_id: str
    index: int
    action: str  # "requeued" or "failed" (after MAX_ATTEMPTS deaths)
    silent_s: float
    adopted: int = 0  # copies finished by the dead worker and recorded for it
    removed_partials: int = 0


def find_dead(
    timeout_s: float | None = None, job_id: str | None = None, now: datetime | None = None
) -> list:
    """Running shard operations whose last progress report is older than the timeout.

    Args:
        timeout_s: seconds without progress (default: see :func:`dead_timeout`)
        job_id: only this job's shards (default: every sharded job)
        now: the time to judge at (naive UTC; default: now)
    """
    from fiftyone.operators.executor import ExecutionRunState

    limit = dead_timeout(timeout_s)
    now = now or _utcnow()
    dead = []
    for doc in _shard_ops(job_id, run_state=ExecutionRunState.RUNNING):
        beat = _heartbeat(doc)
        if beat is not None and (now - beat).total_seconds() > limit:
            dead.append(doc)
    return dead


def requeue_dead(
    timeout_s: float | None = None,
    job_id: str | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    now: datetime | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Requeued]:
    """Put the shards of dead workers back in the queue (see the module notes).

    Safe to run from any number of processes at once: each requeue is a compare-and-set on
    the operation's state (FiftyOne's ``set_queued(required_state=RUNNING)``), so only one
    caller wins, and a shard that finished meanwhile stays finished.

    Args:
        timeout_s: seconds without progress after which a shard is dead (default: see
            :func:`dead_timeout`)
        job_id: only this job's shards (default: every sharded job)
        max_attempts: fail a shard (``set_failed``) instead once it has died this many times
        now: the time to judge at (naive UTC; default: now)
        log: called with one line per shard handled
    """
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionResult, ExecutionRunState

    limit = dead_timeout(timeout_s)
    now = now or _utcnow()
    service = DelegatedOperationService()
    done = []
    for doc in find_dead(limit, job_id, now):
        info = _shard_info(doc)
        beat = cast(datetime, _heartbeat(doc))  # find_dead keeps only shards with a heartbeat
        silent = (now - beat).total_seconds()
        attempt = _attempt(doc.label)
        reason = (
            f"{_DEAD_REASON} {silent:.0f} s (timeout {limit:.0f} s): worker presumed "
            f"dead on attempt {attempt}"
        )
        record = Requeued(str(doc.id), info["job_id"], int(info["index"]), "requeued", silent)
        if attempt >= max_attempts:
            failed = service.set_failed(
                doc.id,
                result=ExecutionResult(error=f"{reason}; gave up after {attempt} attempts"),
                required_state=ExecutionRunState.RUNNING,
            )
            if failed is None:
                continue  # finished, or handled by another watcher, meanwhile
            record.action = "failed"
        else:
            if doc.operator.endswith("/anonymize_images"):
                record.adopted, record.removed_partials = _salvage_anonymize(doc)
            if service.set_queued(doc.id, required_state=ExecutionRunState.RUNNING) is None:
                continue
            service.set_label(
                doc.id,
                shard_label(
                    info.get("job_name", info["job_id"]),
                    record.index,
                    int(info["count"]),
                    attempt + 1,
                ),
            )
        done.append(record)
        if log is not None:
            log(
                f"shard {record.index + 1} of job {record.job_id} ({record.op_id}): {reason}; "
                f"{record.action} (adopted {record.adopted} finished copies, removed "
                f"{record.removed_partials} partial files)"
            )
    return done


def _salvage_anonymize(doc) -> tuple[int, int]:
    """Record the copies a dead ``anonymize_images`` attempt finished and remove its partial
    files (``copies.adopt_finished``), from the attempt's own parameters and start time.
    Returns ``(adopted, partial files removed)``."""
    from fiftyone.operators.executor import ExecutionContext

    from . import copies

    ctx = ExecutionContext(request_params=doc.context.request_params)
    if not ctx.params.get("output_dir") or doc.started_at is None:
        return 0, 0
    since = doc.started_at.replace(tzinfo=timezone.utc).timestamp()
    return copies.adopt_finished(ctx.target_view(), ctx.params, since)


def wait_for_job(
    job_id: str,
    timeout_s: float | None = None,
    poll_s: float = 2.0,
    max_wait_s: float | None = None,
    on_change: Callable[[JobStatus], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> JobStatus:
    """Wait until every shard of ``job_id`` is done or failed, requeueing dead ones meanwhile.

    Args:
        job_id: the id returned by :func:`schedule_sharded`
        timeout_s: seconds without progress after which a shard is dead (default: see
            :func:`dead_timeout`)
        poll_s: seconds between looks
        max_wait_s: give up (``TimeoutError``) after this long
        on_change: called with the status whenever its printable line changes
        log: called with one line per shard requeued
    """
    start = time.monotonic()
    last = None
    while True:
        status = job_status(job_id, requeue=True, timeout_s=timeout_s, log=log)
        if on_change is not None and status.line() != last:
            last = status.line()
            on_change(status)
        if status.finished:
            return status
        if max_wait_s is not None and time.monotonic() - start > max_wait_s:
            raise TimeoutError(
                f"job {job_id} not finished after {max_wait_s:.0f} s: {status.line()}"
            )
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------
# In the operator: progress reports that double as heartbeat and fence


@contextmanager
def progress_reporter(
    ctx, startup_beat_s: float = 10.0, max_startup_s: float | None = None
) -> Iterator[Callable[[float, str], None]]:
    """The progress callback for an operator's ``execute``, as a context manager::

        with shards.progress_reporter(ctx) as progress:
            report = anonymize_images(view, ..., progress=progress)

    It reports through ``ctx.set_progress`` (the heartbeat :func:`find_dead` reads) and, in a
    delegated run, raises :class:`ShardSuperseded` when this attempt was requeued or failed
    meanwhile (the operation is no longer running, or runs under a newer ``started_at``), so
    a worker that was wrongly presumed dead stops instead of racing the next attempt
    (FiftyOne's own ``ctx.set_progress`` swallows errors, so the check is made here).

    Until the job's first report, a background thread reports ``"starting"`` every
    ``startup_beat_s`` seconds: importing TensorFlow and loading the models on a busy core can
    take longer than the dead-shard timeout, and a slow start is not a death. It stops at the
    first real report, at the end of the block, or after ``max_startup_s`` (default: the
    dead-shard timeout), so a start-up that hangs still ends in silence and a requeue.

    Args:
        ctx: the operator's execution context
        startup_beat_s: seconds between start-up reports
        max_startup_s: longest start-up covered by them
    """
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    op_id = ctx.request_params.get("run_doc") if ctx.delegated else None
    service = DelegatedOperationService() if op_id is not None else None
    started = service.get(op_id).started_at if service is not None else None
    first = threading.Event()

    def report(fraction: float, label: str) -> None:
        first.set()
        ctx.set_progress(progress=fraction, label=label)
        if service is None:
            return
        try:
            doc = service.get(op_id)
        except ValueError as exc:  # deleted
            raise ShardSuperseded(f"operation {op_id} was deleted") from exc
        if doc.run_state != ExecutionRunState.RUNNING or doc.started_at != started:
            raise ShardSuperseded(
                f"operation {op_id} was requeued or failed by another "
                f"process (now {doc.run_state}); this attempt stops"
            )

    def beat() -> None:
        limit = time.monotonic() + (dead_timeout() if max_startup_s is None else max_startup_s)
        while not first.wait(startup_beat_s) and time.monotonic() < limit:
            ctx.set_progress(progress=0.0, label="starting")

    ctx.set_progress(progress=0.0, label="starting")
    beater = None
    if service is not None:
        beater = threading.Thread(target=beat, name="shard-start-up-heartbeat", daemon=True)
        beater.start()
    try:
        yield report
    finally:
        first.set()
        if beater is not None:
            beater.join()


# --------------------------------------------------------------------------------------------
# Command line: python -m fiftyone_anonymizer.jobs.shards {status,watch,requeue}


def _print_status(job_id: str, requeue: bool, timeout_s: float | None) -> bool:
    status = job_status(job_id, requeue=requeue, timeout_s=timeout_s)
    print(status.line(), flush=True)
    return status.finished


def main(argv: Sequence[str] | None = None) -> int:
    """``status [JOB]``: one line per job; ``watch``: requeue dead shards every few seconds
    (run one beside the workers; any number of copies is safe); ``requeue``: one pass."""
    parser = argparse.ArgumentParser(
        prog="python -m fiftyone_anonymizer.jobs.shards", description=main.__doc__
    )
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="one line per sharded job")
    status.add_argument("job", nargs="?", help="a job id (default: every job)")
    watch = sub.add_parser("watch", help="requeue dead shards until stopped")
    watch.add_argument("--job", help="only this job; with it, stop when the job is finished")
    watch.add_argument("--interval", type=float, default=15.0, help="seconds between passes")
    sub.add_parser("requeue", help="one pass of dead-shard requeueing")
    for p in (status, watch, sub.choices["requeue"]):
        p.add_argument(
            "--timeout",
            type=float,
            default=None,
            help=f"seconds without progress = dead (default ${TIMEOUT_ENV} or "
            f"{DEFAULT_TIMEOUT_S:.0f})",
        )
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, flush=True)

    if args.command == "status":
        for job in [args.job] if args.job else list_jobs():
            _print_status(job, requeue=False, timeout_s=args.timeout)
        return 0
    if args.command == "requeue":
        requeue_dead(timeout_s=args.timeout, log=log)
        return 0
    while True:
        requeue_dead(timeout_s=args.timeout, job_id=args.job, log=log)
        if args.job and _print_status(args.job, requeue=False, timeout_s=args.timeout):
            return 0
        time.sleep(max(0.5, args.interval))


if __name__ == "__main__":
    sys.exit(main())
