"""The audit operator: its form and its one call of ``jobs.audit.audit_anonymization``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..jobs import fields
from .forms import (
    AS_DETECTED,
    _detections_fields,
    _detector_inputs,
    _flag_fields,
    _is_video,
    _missing_copies,
    job_params,
)
from .run import (
    _call,
    _config,
    _open_button,
    _run_or_shard,
    _shards_input,
    _table,
)


def _audit_inputs(ctx, inputs: types.Object) -> bool:
    """The audit form; False when there are no copies to audit."""
    from ..jobs import audit

    inputs.view_target(ctx)
    if _missing_copies(ctx, inputs):
        return False
    _detector_inputs(
        ctx,
        inputs,
        audit.AUDIT_THRESHOLDS["face"],
        audit.AUDIT_THRESHOLDS["plate"],
        "How hard the audit looks: as the detect job did (its recorded level), or a "
        "level of its own (thorough finds the most, slowest)",
        (AS_DETECTED,),
    )
    video = _is_video(ctx)
    inputs.str(
        "residual_field",
        default=audit.DEFAULT_RESIDUAL_FIELD,
        label="Residual field",
        description="Likely misses: detections outside the obscured regions that tag the "
        "sample (shown in red); the possible ones go to <field>_possible, hidden until "
        "switched on in the sidebar" + (" (per frame: frames.<field>)" if video else ""),
    )
    inputs.str("tag", default=audit.DEFAULT_TAG, label="Review tag")
    residual_field = ctx.params.get("residual_field") or audit.DEFAULT_RESIDUAL_FIELD
    ours = {residual_field, audit.possible_field(residual_field)}
    gt_choices = [] if video else [f for f in _detections_fields(ctx) if f not in ours]
    if gt_choices:
        inputs.enum(
            "gt_field",
            gt_choices,
            default=None,
            label="Ground truth (optional)",
            description="Evaluate recall and coverage against these boxes",
            view=types.DropdownView(),
        )
    gt_field = ctx.params.get("gt_field") if gt_choices else None
    if gt_field:
        inputs.str("eval_key", default=audit.DEFAULT_EVAL_KEY, label="Evaluation key")
    else:
        _shards_input(ctx, inputs)
    if ctx.dataset is not None:
        problems = audit.check_targets(
            ctx.dataset,
            ctx.params.get("output_field") or fields.DEFAULT_OUTPUT_FIELD,
            residual_field,
            gt_field=gt_field,
            eval_key=ctx.params.get("eval_key") or audit.DEFAULT_EVAL_KEY,
        )
        names = {
            residual_field: "residual_field",
            audit.possible_field(residual_field): "residual_field",
            ctx.params.get("eval_key") or audit.DEFAULT_EVAL_KEY: "eval_key",
        }
        _flag_fields(inputs, problems, names)
    return True


def _audit_outputs(results: dict[str, Any]) -> types.Object:
    outputs = types.Object()
    outputs.str("summary", label="Summary", view=types.MarkdownView())
    outputs.int("audited", label="Samples audited")
    outputs.int("flagged", label="Samples tagged for review")
    outputs.int("not_anonymized", label="Samples without a copy (not audited)")
    outputs.int("stale", label="Copies older than their boxes")
    if results.get("flagged"):
        _open_button(
            outputs,
            "open_review",
            "Open the review queue",
            tag=results.get("tag") or fields.REVIEW_TAG,
        )
    if results.get("per_class_table"):
        _table(
            outputs,
            "per_class_table",
            "Per class",
            [
                ("class", "Class"),
                ("likely", "Likely misses"),
                ("possible", "Possible"),
                ("truths", "True boxes"),
                ("recall", "Recall"),
                ("coverage", "Coverage"),
                ("uncovered", "Left visible"),
            ],
        )
    if results.get("worst"):
        _table(
            outputs,
            "worst",
            "Samples to review first",
            [
                ("file", "File"),
                ("residuals", "Residuals"),
                ("uncovered", "Left visible"),
                ("stale", "Stale"),
            ],
        )
        _open_button(
            outputs, "open_worst", "Open these samples", ids=[row["id"] for row in results["worst"]]
        )
    if results.get("failures"):
        _table(outputs, "failures", "Failures", [("file", "File"), ("reason", "Reason")])
        _open_button(
            outputs, "open_failed", "Open the failed samples", ids=results.get("failed_ids", [])
        )
    return outputs


class AuditAnonymization(foo.Operator):
    """Search the anonymized copies for faces and plates the first pass missed."""

    @property
    def config(self):
        return _config(
            "audit_anonymization",
            "Anonymizer: audit anonymization",
            "Find faces and plates left visible in the anonymized copies, tag them "
            "for review, and evaluate against ground truth",
            distributed=True,
        )

    def __call__(
        self,
        sample_collection,
        output_field: str = fields.DEFAULT_OUTPUT_FIELD,
        gt_field: str | None = None,
        eval_key: str | None = None,
        residual_field: str | None = None,
        tag: str | None = None,
        face_threshold: float | None = None,
        plate_threshold: float | None = None,
        effort: str | None = None,
        delegate: bool = False,
        shards: int = 1,
    ):
        """Audit the anonymized copies of ``sample_collection`` through the operator.

        Example usage::

            import fiftyone as fo
            import fiftyone.operators as foo

            dataset = fo.load_dataset("street-photos")
            audit = foo.get_operator("@fiftyone-anonymizer/anonymize/audit_anonymization")
            audit(dataset, gt_field="ground_truth")
            review = dataset.match_tags("needs_review")

        Args:
            sample_collection: a dataset or view
            output_field: the field holding the anonymized copies' paths
            gt_field: optional ground-truth ``fo.Detections`` field to evaluate against
            eval_key: evaluation key (default ``anonymizer_eval``)
            residual_field: where residual detections go (default ``anonymizer_residual``)
            tag: tag for samples to review (default ``needs_review``)
            face_threshold: audit face threshold (None: the low default)
            plate_threshold: audit plate threshold (None: the low default)
            effort: how hard the audit looks (None: as the detect job did, read back from
                the detections' provenance; else ``"fast"``, ``"balanced"`` or
                ``"thorough"``)
            delegate: queue it for a delegated worker instead of running now
            shards: queue it as this many delegated operations, balanced by pixels (any
                number of ``fiftyone delegated launch`` workers take them); returns a
                ``jobs.shards.ShardedJob``
        """
        params: dict[str, Any] = {
            "output_field": output_field,
            "gt_field": gt_field,
            "effort": effort or AS_DETECTED,
        }
        for key, value in (
            ("eval_key", eval_key),
            ("residual_field", residual_field),
            ("tag", tag),
            ("face_threshold", face_threshold),
            ("plate_threshold", plate_threshold),
        ):
            if value is not None:
                params[key] = value
        return _call(self.uri, sample_collection, params, delegate, shards)

    def resolve_execution_options(self, ctx):
        # With ground truth the audit runs one FiftyOne evaluation over the whole view: no
        # fan-out by samples then (as no sharding, see _audit_inputs)
        options = super().resolve_execution_options(ctx)
        if not ctx.params.get("gt_field"):
            return options
        from fiftyone.operators.executor import ExecutionOptions

        return ExecutionOptions(
            allow_immediate_execution=options.allow_immediate_execution,
            allow_delegated_execution=options.allow_delegated_execution,
            default_choice_to_delegated=options.default_choice_to_delegated,
            allow_distributed_execution=False,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not _audit_inputs(ctx, inputs):
            return types.Property(inputs)
        return types.Property(inputs, view=types.View(label="Audit anonymization"))

    def execute(self, ctx):
        from ..jobs import audit

        view = ctx.target_view()
        params = job_params(audit.audit_anonymization, ctx.params)
        tag = params.get("tag", audit.DEFAULT_TAG)

        def job(progress):
            report = audit.audit_anonymization(view, **params, progress=progress)
            result = report.to_dict()
            result["tag"] = tag
            result["summary"] = report.summary()
            classes = sorted(set(result["per_class"]) | set(result["residuals_per_class"]))
            result["per_class_table"] = [
                {
                    "class": k,
                    "likely": result["likely_per_class"].get(k, 0),
                    "possible": result["possible_per_class"].get(k, 0),
                    **{
                        key: result["per_class"].get(k, {}).get(key)
                        for key in ("truths", "recall", "coverage", "uncovered")
                    },
                }
                for k in classes
            ]
            for row in result["worst"]:
                row["file"] = Path(row["filepath"]).name
            return result

        return _run_or_shard(ctx, self.uri, job, _audit_outputs, "Audit finished")

    def resolve_output(self, ctx):
        return types.Property(
            _audit_outputs(ctx.results or {}), view=types.View(label="Audit finished")
        )
