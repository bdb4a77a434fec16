"""The share operator: its form (every check of ``jobs.share`` before Execute) and its one call
of ``jobs.share.share_anonymized``."""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..jobs import fields
from .forms import _flag_fields, _label_fields, _missing_copies, job_params
from .run import _config, _execute, _open_button, _run, _table


def _share_inputs(ctx, inputs: types.Object) -> bool:
    """The share form; False when there are no copies to share. Every check of the share
    (``jobs.share.share_problems``) shows next to its field before Execute."""
    from ..jobs.share import (
        DEFAULT_REVIEW_TAG,
        EXPORT_FORMATS,
        OVERRIDABLE,
        check_shareable,
        kept_fields,
        share_problems,
    )

    inputs.view_target(ctx)
    if _missing_copies(ctx, inputs):
        return False
    p = ctx.params
    output_field = p.get("output_field") or fields.DEFAULT_OUTPUT_FIELD
    check = check_shareable(
        ctx.target_view(),
        output_field,
        review_tag=p.get("review_tag") or DEFAULT_REVIEW_TAG,
    )
    counts = check.counts()
    include = bool(p.get("include_left_out", False))
    shared = len(check.ready) + (sum(counts.get(r, 0) for r in OVERRIDABLE) if include else 0)
    if counts:
        inputs.view(
            "left_out",
            types.Warning(
                label=f"{shared} sample(s) will be shared; {check.summary()}",
                description="Review them first (the 'Open' button in the anonymization panel), "
                "or include them below",
            ),
        )
        inputs.bool(
            "include_left_out",
            default=False,
            label="Share the samples tagged for review, not current or with nothing "
            "obscured anyway",
            description="Never those without a copy or that failed",
        )
    else:
        inputs.view("ready", types.Notice(label=f"All {shared} sample(s) are ready to share"))
    default_name = f"{ctx.dataset.name}-anonymized" if ctx.dataset else "anonymized"
    inputs.str("name", default=default_name, label="New dataset name")
    inputs.bool("overwrite", default=False, label="Replace a dataset of that name")
    label_fields = _label_fields(ctx)
    inputs.list(
        "label_fields",
        types.String(),
        default=label_fields,
        label="Label fields to keep",
        description="Frame fields of videos are named frames.<field>",
        view=types.AutocompleteView(choices=[types.Choice(f, label=f) for f in label_fields]),
    )
    inputs.str(
        "export_dir",
        default=None,
        label="Also export to folder (optional)",
        description="An absolute path to a new or empty folder, beside the data",
    )
    kind = ctx.dataset.media_type if ctx.dataset is not None else "image"
    formats = [name for name, (media, _) in EXPORT_FORMATS.items() if kind in media]
    inputs.enum(
        "dataset_type",
        formats,
        default="FiftyOneDataset",
        label="Export format",
        description="COCO, YOLOv5 and VOC hold exactly one detections field",
        view=types.DropdownView(),
    )
    keep = p.get("label_fields")
    problems = share_problems(
        ctx.target_view(),
        name=p.get("name") or default_name,
        label_fields=kept_fields(ctx.target_view(), keep) if keep is not None else None,
        export_dir=p.get("export_dir") or None,
        dataset_type=p.get("dataset_type") or "FiftyOneDataset",
        output_field=output_field,
        overwrite=bool(p.get("overwrite", False)),
        shared_count=shared,
    )
    if "nothing" in problems:
        problems["nothing"] = "Nothing to share"
    _flag_fields(inputs, problems, {k: k for k in inputs.properties})
    return True


def _share_outputs(results: dict[str, Any]) -> types.Object:
    outputs = types.Object()
    outputs.str("summary", label="Summary", view=types.MarkdownView())
    outputs.str("dataset", label="New dataset")
    outputs.int("processed", label="Samples shared")
    if results.get("left_out_table"):
        _table(outputs, "left_out_table", "Left out", [("reason", "Why"), ("samples", "Samples")])
        _open_button(
            outputs,
            "open_left_out",
            "Open the samples left out",
            ids=results.get("left_out_ids", []),
        )
    outputs.list("label_fields", types.String(), label="Label fields kept")
    if results.get("export_dir"):
        outputs.str("export_dir", label="Exported to")
    return outputs


class ShareAnonymized(foo.Operator):
    """Clone the anonymized samples into a shareable dataset, or export them."""

    @property
    def config(self):
        return _config(
            "share_anonymized",
            "Anonymizer: share anonymized dataset",
            "New dataset (or export) whose media are the anonymized copies",
        )

    def __call__(
        self,
        sample_collection,
        name: str | None = None,
        label_fields: list[str] | None = None,
        export_dir: str | None = None,
        dataset_type: str = "FiftyOneDataset",
        output_field: str = fields.DEFAULT_OUTPUT_FIELD,
        overwrite: bool = False,
        include_left_out: bool = False,
        delegate: bool = False,
    ):
        """Clone the samples of ``sample_collection`` ready to share into dataset ``name``.

        Example usage::

            import fiftyone as fo
            import fiftyone.operators as foo

            dataset = fo.load_dataset("street-photos")
            share = foo.get_operator("@fiftyone-anonymizer/anonymize/share_anonymized")
            share(dataset, name="street-photos-public", export_dir="/exports/street",
                  dataset_type="COCODetectionDataset")

        Args:
            sample_collection: a dataset or view
            name: the new dataset's name (default: ``<dataset>-anonymized``)
            label_fields: label fields to keep (None: all but the audit's)
            export_dir: optionally also export there, in ``dataset_type`` format
            dataset_type: the export format, e.g. ``"COCODetectionDataset"``
            output_field: the field holding the anonymized copies' paths
            overwrite: replace an existing dataset of that name
            include_left_out: share samples tagged for review, not current or with nothing
                obscured too
            delegate: queue it for a delegated worker instead of running now
        """
        params = {
            "name": name,
            "label_fields": label_fields,
            "export_dir": export_dir,
            "dataset_type": dataset_type,
            "output_field": output_field,
            "overwrite": overwrite,
            "include_left_out": include_left_out,
        }
        return _execute(self.uri, sample_collection, params, delegate)

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not _share_inputs(ctx, inputs):
            return types.Property(inputs)
        return types.Property(inputs, view=types.View(label="Share anonymized dataset"))

    def execute(self, ctx):
        from ..jobs.share import share_anonymized

        view = ctx.target_view()
        params = job_params(share_anonymized, ctx.params)

        def job(progress):
            progress(0.0, "checking the share")
            _, report = share_anonymized(view, **params, progress=progress)
            result = report.to_dict()
            left = result.get("left_out", {})
            result["left_out_table"] = [{"reason": k, "samples": v} for k, v in left.items()]
            result["summary"] = (
                f"**{result['processed']}** samples shared as dataset "
                f"`{result['dataset']}`" + (f"; **{sum(left.values())}** left out" if left else "")
            )
            return result

        return _run(ctx, job, _share_outputs, "Shared")

    def resolve_output(self, ctx):
        return types.Property(_share_outputs(ctx.results or {}), view=types.View(label="Shared"))
