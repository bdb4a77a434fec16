"""The App's "Anonymization" panel: the dataset's state at a glance, a button per group.

Counts come from :func:`jobs.status.anonymization_status`; each button shows that group of
samples in the grid. "Refresh" reads the state again (after a delegated run, for instance).
"""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..core.boxes import count_text
from ..jobs.status import GROUPS, anonymization_status


class AnonymizationPanel(foo.Panel):
    """Samples detected, anonymized, ready, flagged, failed; boxes per class; open any group."""

    @property
    def config(self):
        return foo.PanelConfig(
            name="anonymization_panel",
            label="Anonymization",
            surfaces="grid",
            help_markdown="Where this dataset stands in the anonymization workflow. Each "
            "button shows that group of samples in the grid.",
        )

    def on_load(self, ctx):
        self._read(ctx)

    def on_change_dataset(self, ctx):
        self._read(ctx)

    def refresh(self, ctx):
        self._read(ctx)
        ctx.ops.reload_dataset()  # fields a delegated run added appear without a page reload

    def _read(self, ctx):
        if ctx.dataset is None:
            return
        status = anonymization_status(ctx.dataset)
        ctx.panel.state.counts = status.counts()
        ctx.panel.state.boxes = dict(status.boxes_per_class)
        ctx.panel.state.unit = "Tracks" if ctx.dataset.media_type == "video" else "Boxes"
        ctx.panel.state.ids = {
            k: v for k, v in status.groups.items() if k in ("ready", "not_current")
        }
        # A state key must not share its name with a property of render(): the App shows the
        # state's value in that property (a list of runs in a Markdown view showed nothing).
        ctx.panel.state.delegated = recent_runs(ctx.dataset.name)

    def open_group(self, ctx):
        from ..jobs.status import group_view

        view = group_view(ctx.dataset, ctx.params.get("group"), ctx.panel.state.ids)
        ctx.ops.set_view(view=view)

    def render(self, ctx):
        panel = types.Object()
        counts = ctx.panel.state.counts or {}
        boxes = ctx.panel.state.boxes or {}
        rows = "\n".join(f"| {label} | {counts.get(key, 0)} |" for key, label in GROUPS)
        panel.md(
            f"| group | samples |\n|---|---|\n{rows}\n\n"
            f"{ctx.panel.state.unit or 'Boxes'} per class: {count_text(boxes)}",
            name="status",
        )
        for key, label in GROUPS:
            if counts.get(key):
                panel.btn(
                    f"open_{key}",
                    label=f"Open: {label.lower()} ({counts[key]})",
                    on_click=self.open_group,
                    params={"group": key},
                )
        runs = ctx.panel.state.delegated or []
        if runs:
            lines = "\n".join(
                f"| {r['operator']} | {r['state']} | {r['when']} | {r['summary']} |" for r in runs
            )
            panel.md(
                f"Delegated runs\n\n| job | state | updated | result |\n|---|---|---|---|\n{lines}",
                name="runs_table",
            )
        panel.btn("refresh", label="Refresh", icon="refresh", on_click=self.refresh)
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=1))


def recent_runs(dataset_name: str, limit: int = 5) -> list[dict]:
    """The plugin's latest delegated runs on this dataset, with the report's summary: a
    delegated run's result is otherwise only readable with ``fiftyone delegated info``."""
    from fiftyone.operators.delegated import DelegatedOperationService

    from ..jobs.shards import PLUGIN

    try:
        ops = DelegatedOperationService().list_operations(dataset_name=dataset_name)
    except Exception:  # no delegated operations store: nothing to show
        return []
    ours = [op for op in ops if str(op.operator).startswith(PLUGIN)]
    ours.sort(key=lambda op: op.updated_at or op.queued_at, reverse=True)
    rows = []
    for op in ours[:limit]:
        result = getattr(op.result, "result", None) or {}
        error = getattr(op.result, "error", None)
        summary = (
            f"failed: {str(error).splitlines()[-1][:120]}"
            if error
            else str(result.get("summary", "")).replace("**", "").replace("|", "/")[:160]
        )
        rows.append(
            {
                "operator": str(op.operator).rsplit("/", 1)[-1],
                "state": str(op.run_state),
                "summary": summary,
                "when": (op.updated_at or op.queued_at).strftime("%Y-%m-%d %H:%M"),
            }
        )
    return rows
