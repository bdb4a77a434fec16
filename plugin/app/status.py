"""Sharded jobs' status, and opening a group of samples (the results' and the panel's buttons)."""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .run import _readable


class ShardedJobStatus(foo.Operator):
    """Where a sharded job stands: shards queued, running, done, failed; samples done. Dead
    shards (no progress for the timeout) are requeued on the way."""

    @property
    def config(self):
        return foo.OperatorConfig(
            name="sharded_job_status", label="Anonymizer: sharded job status", dynamic=True
        )

    def resolve_input(self, ctx):
        from ..jobs.shards import list_jobs

        inputs = types.Object()
        jobs = list_jobs()
        if not jobs:
            inputs.view("none", types.Notice(label="No sharded job has been queued"))
            return types.Property(inputs)
        inputs.enum("job_id", jobs, default=jobs[-1], label="Job", view=types.DropdownView())
        return types.Property(inputs, view=types.View(label="Sharded job status"))

    def execute(self, ctx):
        from ..jobs.shards import job_status

        status = job_status(ctx.params["job_id"], requeue=True)
        return {"summary": status.line(), **_readable(status.to_dict())}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Status")
        return types.Property(outputs, view=types.View(label="Sharded job"))


# --------------------------------------------------------------------------------------------
# Opening samples (the results' and the panel's buttons)


class OpenSamples(foo.Operator):
    """Show some samples in the App: by id, by tag, or the samples with a field set."""

    @property
    def config(self):
        return foo.OperatorConfig(
            name="open_samples", label="Anonymizer: open samples", unlisted=True
        )

    def execute(self, ctx):
        from ..jobs.status import samples_view

        p = ctx.params
        view = samples_view(ctx.dataset, ids=p.get("ids"), tag=p.get("tag"), field=p.get("field"))
        ctx.ops.set_view(view=view)
        return {"samples": len(view)}
