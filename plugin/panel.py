"""The App's "Anonymization" panel: the dataset's state at a glance, a button per group.

Counts come from :func:`jobs.status.anonymization_status`; each button shows that group of
samples in the grid. "Refresh" reads the state again (after a delegated run, for instance).
"""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .core.boxes import count_text
from .jobs.status import GROUPS, anonymization_status


class AnonymizationPanel(foo.Panel):
    """Samples detected, anonymized, ready, flagged, failed; boxes per class; open any group."""

    @property
    def config(self):
        return foo.PanelConfig(
            name="anonymization_panel", label="Anonymization", surfaces="grid",
            help_markdown="Where this dataset stands in the anonymization workflow. Each "
                          "button shows that group of samples in the grid.")

    def on_load(self, ctx):
        self._read(ctx)

    def on_change_dataset(self, ctx):
        self._read(ctx)

    def refresh(self, ctx):
        self._read(ctx)

    def _read(self, ctx):
        if ctx.dataset is None:
            return
        status = anonymization_status(ctx.dataset)
        ctx.panel.state.counts = status.counts()
        ctx.panel.state.boxes = dict(status.boxes_per_class)
        ctx.panel.state.ids = {k: v for k, v in status.groups.items()
                               if k in ("ready", "not_current")}

    def open_group(self, ctx):
        from fiftyone import ViewField as F

        from .jobs import schema
        from .jobs.share import DEFAULT_REVIEW_TAG

        group = ctx.params.get("group")
        dataset = ctx.dataset
        if group in ("ready", "not_current"):
            view = dataset.select((ctx.panel.state.ids or {}).get(group, []), ordered=True)
        elif group == "detected":
            view = dataset.exists(schema.DEFAULT_LABEL_FIELD)
        elif group == "anonymized":
            view = dataset.exists(schema.DEFAULT_OUTPUT_FIELD)
        elif group == "not_anonymized":
            view = dataset.exists(schema.DEFAULT_OUTPUT_FIELD, False)
        elif group == "flagged":
            view = dataset.match_tags(DEFAULT_REVIEW_TAG)
        elif group == "failed":
            view = dataset.match(F(schema.DEFAULT_ERROR_FIELD) != None)  # noqa: E711
        else:
            view = dataset.view()
        ctx.ops.set_view(view=view)

    def render(self, ctx):
        panel = types.Object()
        counts = ctx.panel.state.counts or {}
        boxes = ctx.panel.state.boxes or {}
        rows = "\n".join(f"| {label} | {counts.get(key, 0)} |" for key, label in GROUPS)
        panel.md(f"| group | samples |\n|---|---|\n{rows}\n\n"
                 f"Boxes per class: {count_text(boxes)}", name="status")
        for key, label in GROUPS:
            if counts.get(key):
                panel.btn(f"open_{key}", label=f"Open: {label.lower()} ({counts[key]})",
                          on_click=self.open_group, params={"group": key})
        panel.btn("refresh", label="Refresh", icon="refresh", on_click=self.refresh)
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=1))
