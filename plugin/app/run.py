"""Running a job from the App: launched immediately, delegated or sharded; streamed into the App
with its progress and a readable result (tables, rounded figures, buttons that open samples), or
returned as the job's report to Python and delegated runs."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..jobs.shards import PLUGIN
from .forms import _invalid

#: Set to force (True) or refuse (False) streaming; by default a run from the App streams its
#: progress and shows its result, a run from Python (and a delegated one) returns the report.
STREAM_PARAM = "stream_to_app"


# --------------------------------------------------------------------------------------------
# Running a job: streamed into the App, or returned


def _config(
    name: str, label: str, description: str, unlisted: bool = False, distributed: bool = False
):
    """Every job operator here: a dynamic form, run now (streaming) or by a delegated worker.

    ``distributed``: the job splits by samples, so FiftyOne Enterprise may fan a delegated run
    out over parallel workers, calling ``execute`` once per batch with the batch as
    ``ctx.target_view()`` (which every ``execute`` here works from). Open-source FiftyOne keeps
    the flag off and calls ``execute`` once with the whole target; our own ``shards`` split
    there (:func:`_own_shards`)."""
    return foo.OperatorConfig(
        name=name,
        label=label,
        description=description,
        dynamic=True,
        unlisted=unlisted,
        allow_immediate_execution=True,
        allow_delegated_execution=True,
        execute_as_generator=True,
        allow_distributed_execution=distributed,
    )


def _own_shards(ctx) -> bool:
    """Whether this run queues our own shards: the form asks for more than one, and FiftyOne
    Enterprise is not already running it as one batch of its own fan-out (a batch that
    sharded again would multiply the work)."""
    distributed = getattr(ctx, "num_distributed_tasks", None) or ctx.request_params.get(
        "num_distributed_tasks"
    )
    return int(ctx.params.get("shards") or 1) > 1 and not distributed


def _execute(uri: str, sample_collection, params: dict[str, Any], delegate: bool):
    ctx = {"view": sample_collection.view(), "params": params}
    return foo.execute_operator(uri, ctx, request_delegation=delegate)


def _from_app(ctx) -> bool:
    """Whether the App (not Python) asked for this run: only the App sends its UI state
    (spaces, filters, extended selection) with the request."""
    given = ctx.params.get(STREAM_PARAM)
    if given is not None:
        return bool(given)
    return any(key in ctx.request_params for key in ("spaces", "extended", "filters"))


def _run(
    ctx,
    job: Callable[[Callable[[float, str], None]], dict],
    outputs: Callable[[dict], types.Object],
    title: str,
    after: Callable[[dict], list] | None = None,
):
    """Run ``job(progress)``. In the App: a generator streaming the progress, then a reload,
    the App operations ``after(result)`` returns (e.g. show the copies) and the result as
    ``outputs`` show it. Delegated or from Python: the result dict."""
    if ctx.delegated or not _from_app(ctx):
        from ..jobs.shards import progress_reporter

        # Progress is the heartbeat a sharded job's watchdog reads; a shard that was requeued
        # meanwhile stops at its next report instead of racing the new attempt.
        with progress_reporter(ctx) as progress:
            return _readable(job(progress))
    return _stream(ctx, job, outputs, title, after)


def _run_or_shard(
    ctx,
    uri: str,
    job: Callable[[Callable[[float, str], None]], dict],
    outputs: Callable[[dict], types.Object],
    title: str,
    after: Callable[[dict], list] | None = None,
):
    """:func:`_run` of an operator that can be sharded: queued as our own shards instead when
    the form asks for more than one (:func:`_own_shards`)."""
    if _own_shards(ctx):
        return _run(
            ctx, lambda progress: _sharded(ctx, uri) or {}, _sharded_outputs, "Queued as shards"
        )
    return _run(ctx, job, outputs, title, after)


def _shards_input(ctx, inputs: types.Object) -> None:
    prop = inputs.int(
        "shards",
        default=1,
        min=1,
        label="Shards",
        description="Split into this many delegated operations, one per worker (1: one job)",
    )
    value = ctx.params.get("shards")
    if value is not None and (not isinstance(value, (int, float)) or value < 1):
        _invalid(prop, "at least 1")
    elif (value or 1) > 1 and ctx.dataset is not None and not ctx.dataset.persistent:
        _invalid(prop, "a sharded job needs a persistent dataset (the workers load it by name)")


def _sharded(ctx, uri: str) -> dict[str, Any] | None:
    """Queue the job as shards when the form asks for more than one (and this run is not
    itself a shard): the job's id and shard count, else None."""
    from ..jobs import shards

    count = int(ctx.params.get("shards") or 1)
    if count <= 1 or shards.SHARD_KEY in ctx.request_params:
        return None
    job = shards.schedule_sharded(ctx.target_view(), uri, dict(ctx.params), count)
    return {
        "job_id": job.job_id,
        "shards": len(job.op_ids),
        "summary": f"queued as **{len(job.op_ids)}** delegated operations (job "
        f"`{job.job_id}`); follow it with 'Anonymizer: sharded job status' or "
        f"`python -m fiftyone_anonymizer.jobs.shards watch --job {job.job_id}`",
    }


def _sharded_outputs(results: dict[str, Any]) -> types.Object:
    outputs = types.Object()
    outputs.str("summary", label="Summary", view=types.MarkdownView())
    outputs.str("job_id", label="Sharded job")
    outputs.int("shards", label="Delegated operations queued")
    return outputs


def _call(uri: str, sample_collection, params: dict[str, Any], delegate: bool, shards: int):
    """What every ``__call__`` does: run, delegate, or queue as shards."""
    if shards > 1:
        from ..jobs.shards import schedule_sharded

        return schedule_sharded(sample_collection, uri, params, shards)
    return _execute(uri, sample_collection, params, delegate)


def _stream(ctx, job, outputs, title: str, after=None) -> Iterator[Any]:
    """The job in a thread; its progress reaches the App as it comes."""
    updates: queue.Queue = queue.Queue()
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["value"] = job(lambda f, label: updates.put((f, label)))
        except BaseException as exc:  # re-raised below, where the App shows it
            result["error"] = exc
        finally:
            updates.put(None)

    threading.Thread(target=work, daemon=True, name="anonymizer-job").start()
    yield ctx.ops.set_progress(label="starting ...", progress=0.0)
    while (update := updates.get()) is not None:
        yield ctx.ops.set_progress(label=update[1], progress=update[0])
    if "error" in result:
        raise result["error"]
    yield ctx.ops.reload_dataset()
    if after is not None:
        yield from after(result["value"])
    readable = _readable(result["value"])
    yield ctx.ops.show_output(
        types.Property(outputs(readable), view=types.View(label=title)).to_json(), readable
    )


def _readable(report: dict[str, Any]) -> dict[str, Any]:
    """The report for people: figures rounded, failures as rows with the file's name."""

    def rounded(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, 3)
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return value

    out = rounded(dict(report))
    out["failures"] = [
        {
            "file": Path(f["filepath"]).name,
            "folder": str(Path(f["filepath"]).parent),
            "reason": f["reason"],
        }
        for f in report.get("failures", [])
    ]
    if "boxes_per_class" in report:
        out["boxes_table"] = [
            {"class": k, "boxes": v} for k, v in sorted(report["boxes_per_class"].items())
        ]
    return out


# --------------------------------------------------------------------------------------------
# Results


def _table(outputs: types.Object, name: str, label: str, columns: list[tuple[str, str]]) -> None:
    view = types.TableView()
    for key, column_label in columns:
        view.add_column(key, label=column_label)
    outputs.list(name, types.Object(), label=label, view=view)


def _open_button(outputs: types.Object, name: str, label: str, **params: Any) -> None:
    outputs.view(name, types.Button(label=label, operator=f"{PLUGIN}/open_samples", params=params))


def _job_outputs(
    results: dict[str, Any], extra: Callable[[types.Object], None] | None = None
) -> types.Object:
    outputs = types.Object()
    outputs.str("summary", label="Summary", view=types.MarkdownView())
    unit = "Videos" if results.get("media") == "video" else "Samples"
    outputs.int("samples", label=f"{unit} in target")
    outputs.int("processed", label=f"{unit} processed")
    outputs.int("skipped", label=f"{unit} skipped (already done)")
    outputs.int("failed", label=f"{unit} failed")
    if results.get("boxes_table"):
        if results.get("counted") == "tracks":  # videos: a face in 300 frames is one track
            _table(
                outputs,
                "boxes_table",
                "Tracks per class",
                [("class", "Class"), ("boxes", "Tracks")],
            )
        else:
            _table(
                outputs, "boxes_table", "Boxes per class", [("class", "Class"), ("boxes", "Boxes")]
            )
    for i, warning in enumerate(results.get("warnings", [])):
        outputs.view(f"warning_{i}", types.Warning(label=warning))
    if extra is not None:
        extra(outputs)
    if results.get("failures"):
        _table(
            outputs,
            "failures",
            "Failures",
            [("file", "File"), ("reason", "Reason"), ("folder", "Folder")],
        )
        _open_button(
            outputs, "open_failed", "Open the failed samples", ids=results.get("failed_ids", [])
        )
    return outputs


def _summary(results: dict[str, Any], what: str) -> str:
    """``"**3** copies written, 0 already done, **0** failed; 2 faces"``; on videos the
    classes count tracks (as the detect and anonymize jobs both count them)."""
    from ..core.boxes import count_text

    counted = count_text(results.get("boxes_per_class", {}))
    if results.get("counted") == "tracks" and results.get("boxes_per_class"):
        counted += " (tracks)"
    return (
        f"**{results.get('processed', 0)}** {what}, {results.get('skipped', 0)} already done,"
        f" **{results.get('failed', 0)}** failed; {counted}"
    )
