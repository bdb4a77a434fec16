"""FiftyOne operators: thin forms over the jobs in :mod:`jobs`.

Each operator builds its form in a module-level ``_<name>_inputs(ctx, inputs)`` helper, and its
``execute`` is one library call with progress. Each also has a documented ``__call__`` so the
same work runs from Python through FiftyOne's operator machinery
(``foo.get_operator(uri)(view, ...)``), immediately or delegated.
"""

from __future__ import annotations

import os
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .jobs import schema

PLUGIN_NAME = "@fiftyone-anonymizer/anonymize"
_EXPORT_TYPES = ("FiftyOneDataset", "COCODetectionDataset", "YOLOv5Dataset",
                 "VOCDetectionDataset", "ImageDirectory")


# --------------------------------------------------------------------------------------------
# Shared pieces


def _config(name: str, label: str, description: str):
    """Every operator here: a dynamic form, run now or by a delegated worker."""
    return foo.OperatorConfig(
        name=name, label=label, description=description, dynamic=True,
        allow_immediate_execution=True, allow_delegated_execution=True,
    )


def _execute(uri: str, sample_collection, params: dict[str, Any], delegate: bool):
    ctx = {"view": sample_collection.view(), "params": params}
    return foo.execute_operator(uri, ctx, request_delegation=delegate)


def _progress(ctx):
    def report(fraction: float, label: str) -> None:
        ctx.set_progress(progress=fraction, label=label)

    return report


def _reload(ctx) -> None:
    if not ctx.delegated:
        ctx.trigger("reload_dataset")


def _detections_fields(ctx) -> list[str]:
    import fiftyone as fo

    if ctx.dataset is None:
        return []
    return sorted(ctx.dataset.get_field_schema(embedded_doc_type=fo.Detections))


def _label_fields(ctx) -> list[str]:
    import fiftyone.core.labels as fol

    if ctx.dataset is None:
        return []
    return sorted(ctx.dataset.get_field_schema(embedded_doc_type=fol.Label))


def _report_outputs(outputs: types.Object) -> None:
    outputs.int("samples", label="Samples in target")
    outputs.int("processed", label="Samples processed")
    outputs.int("skipped", label="Samples skipped")
    outputs.int("failed", label="Samples failed")
    outputs.obj("boxes_per_class", label="Boxes per class", view=types.JSONView())
    outputs.list("failures", types.Object(), label="Failures (file and reason)",
                 view=types.JSONView())


def _missing_copies(ctx, inputs: types.Object) -> bool:
    """The copies field chooser; True (and an error shown) when it does not exist."""
    output_field = ctx.params.get("output_field") or schema.DEFAULT_OUTPUT_FIELD
    inputs.str("output_field", default=schema.DEFAULT_OUTPUT_FIELD, label="Anonymized field")
    if ctx.dataset is not None and not ctx.dataset.has_field(output_field):
        prop = inputs.view("no_copies", types.Error(
            label=f"No field '{output_field}'", description="Run 'anonymize images' first"))
        prop.invalid = True
        return True
    return False


def _detector_inputs(inputs: types.Object, face_default: float, plate_default: float,
                     multiscale_help: str) -> None:
    from .detectors import FACE_BACKENDS, PLATE_BACKENDS

    inputs.enum("faces", [*FACE_BACKENDS, "none"], default=FACE_BACKENDS[0], label="Face model",
                view=types.DropdownView())
    inputs.enum("plates", [*PLATE_BACKENDS, "none"], default=PLATE_BACKENDS[0],
                label="Plate model", view=types.DropdownView())
    inputs.float("face_threshold", default=face_default, min=0.001, max=1.0,
                 label="Face threshold", description="Keep faces scoring at least this")
    inputs.float("plate_threshold", default=plate_default, min=0.001, max=1.0,
                 label="Plate threshold", description="Keep plates scoring at least this")
    inputs.bool("multiscale", default=True, label="Extra passes", description=multiscale_help)


def detector_config_from_params(params: dict[str, Any]):
    """The ``DetectorConfig`` a form (or ``__call__``) describes; missing keys take defaults."""
    from .detectors import DetectorConfig

    return DetectorConfig.from_dict(params)


def blur_settings_from_params(params: dict[str, Any]):
    """Blur settings from operator parameters; the seed's ``"21,2,9"`` wins when given."""
    from .blur import BlurSettings

    common: dict[str, Any] = {
        "mode": params.get("mode", "blur"),
        "shape": params.get("shape", "auto"),
        "feather": int(params.get("feather", BlurSettings().feather)),
    }
    if params.get("box_scale") is not None:
        common["box_scale"] = float(params["box_scale"])
    seed = (params.get("seed_kernel") or "").strip()
    if seed:
        common.pop("feather")
        return BlurSettings.from_seed_kernel(seed, **common)
    if params.get("strength") is not None:
        common["strength"] = float(params["strength"])
    return BlurSettings(**common)


# --------------------------------------------------------------------------------------------
# Detect


def _detect_inputs(ctx, inputs: types.Object) -> None:
    from .detectors import DEFAULT_THRESHOLDS

    inputs.view_target(ctx)
    inputs.str("label_field", label="Label field", default=schema.DEFAULT_LABEL_FIELD,
               description="Field in which to store the detections")
    _detector_inputs(inputs, DEFAULT_THRESHOLDS["face"], DEFAULT_THRESHOLDS["plate"],
                     "Mirrored view for faces (fewer false alarms, same recall) and tiles for "
                     "plates on large photos; off is about twice as fast")
    inputs.bool("overwrite", default=False, label="Overwrite",
                description="Run again on samples that already have the field")
    if ctx.params.get("faces") == "none" and ctx.params.get("plates") == "none":
        prop = inputs.view("nothing", types.Warning(label="Choose at least one model"))
        prop.invalid = True


class DetectFacesAndPlates(foo.Operator):
    """Find faces and licence plates and store them as ``fo.Detections``."""

    @property
    def config(self):
        return _config("detect_faces_and_plates", "Anonymizer: detect faces and plates",
                       "Find faces and licence plates and store them as detections")

    def __call__(self, sample_collection, label_field: str = schema.DEFAULT_LABEL_FIELD,
                 faces: str = "centerface", plates: str = "yolov8-plates",
                 face_threshold: float | None = None, plate_threshold: float | None = None,
                 multiscale: bool = True, overwrite: bool = False, delegate: bool = False):
        """Detect faces and plates in ``sample_collection`` through the operator.

        Example usage::

            import fiftyone as fo
            import fiftyone.operators as foo

            dataset = fo.load_dataset("street-photos")
            detect = foo.get_operator("@fiftyone-anonymizer/anonymize/detect_faces_and_plates")
            detect(dataset, face_threshold=0.1, delegate=True)

        Args:
            sample_collection: a dataset or view
            label_field: where to store the ``fo.Detections``
            faces: ``"centerface"``, ``"mtcnn"`` or ``"none"``
            plates: ``"yolov8-plates"`` or ``"none"``
            face_threshold: minimum face score (None: the default)
            plate_threshold: minimum plate score (None: the default)
            multiscale: extra passes (mirrored view for faces, tiles for plates on large
                photos); False is about twice as fast at the same face recall
            overwrite: redo samples that already have ``label_field``
            delegate: queue it for a delegated worker instead of running now
        """
        params = {"label_field": label_field, "faces": faces, "plates": plates,
                  "face_threshold": face_threshold, "plate_threshold": plate_threshold,
                  "multiscale": multiscale, "overwrite": overwrite}
        return _execute(self.uri, sample_collection, params, delegate)

    def resolve_input(self, ctx):
        inputs = types.Object()
        _detect_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Detect faces and plates"))

    def execute(self, ctx):
        from .jobs.detect import detect_faces_and_plates

        p = ctx.params
        report = detect_faces_and_plates(
            ctx.target_view(),
            label_field=p.get("label_field") or schema.DEFAULT_LABEL_FIELD,
            detector=detector_config_from_params(p),
            overwrite=bool(p.get("overwrite", False)),
            progress=_progress(ctx),
        )
        _reload(ctx)
        return report.to_dict()

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("label_field", label="Label field")
        _report_outputs(outputs)
        return types.Property(outputs, view=types.View(label="Detection finished"))


# --------------------------------------------------------------------------------------------
# Anonymize


def _default_output_dir(ctx) -> str:
    if ctx.dataset is None:
        return ""
    first = ctx.dataset.first() if len(ctx.dataset) else None
    root = os.path.dirname(first.filepath) if first is not None else os.getcwd()
    return os.path.join(os.path.dirname(root), "anonymized")


def _anonymize_inputs(ctx, inputs: types.Object) -> bool:
    """The anonymize form; False when the dataset has no detections field to obscure."""
    from .blur import MODES, SHAPES, BlurSettings
    from .core.images import DEFAULT_JPEG_QUALITY
    from .jobs.anonymize import check_output_dir

    defaults = BlurSettings()
    inputs.view_target(ctx)
    fields = _detections_fields(ctx)
    if not fields:
        prop = inputs.view("no_fields", types.Error(
            label="No detection fields",
            description="Run 'detect faces and plates' first, or add a Detections field"))
        prop.invalid = True
        return False
    default_fields = ([schema.DEFAULT_LABEL_FIELD] if schema.DEFAULT_LABEL_FIELD in fields
                      else fields[:1])
    inputs.list("label_fields", types.String(), default=default_fields,
                label="Detection fields to obscure",
                view=types.AutocompleteView(choices=[types.Choice(f, label=f) for f in fields]))
    inputs.list("classes", types.String(), default=["face", "plate"], label="Classes",
                description="Labels to obscure; empty means every label")
    inputs.float("min_confidence", default=None, label="Minimum confidence",
                 description="Ignore boxes scoring below this (boxes without a score always count)")
    default_dir = _default_output_dir(ctx)
    out = inputs.str("output_dir", default=default_dir, required=True, label="Output folder",
                     description="Copies mirror the source tree here")
    output_dir = ctx.params.get("output_dir") or default_dir
    if output_dir and ctx.dataset is not None:
        reason = check_output_dir(output_dir, ctx.dataset.values("filepath"))
        if reason:
            out.invalid = True
            out.error_message = reason
    inputs.str("output_field", default=schema.DEFAULT_OUTPUT_FIELD, label="Output field")
    inputs.enum("mode", list(MODES), default=defaults.mode, label="Mode", view=types.RadioGroup())
    inputs.enum("shape", list(SHAPES), default=defaults.shape, label="Shape",
                description="auto: ellipses for faces, rectangles for plates",
                view=types.DropdownView())
    inputs.float("box_scale", default=defaults.box_scale, min=0.5, max=4.0, label="Box scale",
                 description="Grow each box around its centre")
    inputs.float("strength", default=defaults.strength, label="Strength",
                 description="Blur sigma as a fraction of each box's size")
    inputs.int("feather", default=defaults.feather, label="Feather (px)",
               description="Smoothing kernel for soft edges; 0 for hard edges")
    inputs.str("seed_kernel", default="", label="Seed kernel (optional)",
               description="The original tool's obfuscation kernel, e.g. 21,2,9; overrides strength")
    inputs.int("jpeg_quality", default=DEFAULT_JPEG_QUALITY, min=1, max=100,
               label="JPEG quality")
    inputs.bool("overwrite", default=False, label="Overwrite",
                description="Redo copies that are already up to date")
    return True


class AnonymizeImages(foo.Operator):
    """Write anonymized copies of the images into a new field."""

    @property
    def config(self):
        return _config("anonymize_images", "Anonymizer: anonymize images",
                       "Blur, pixelate or fill the boxes of detection fields into new copies")

    def __call__(self, sample_collection, output_dir: str,
                 label_fields: list[str] | None = None, classes: list[str] | None = None,
                 min_confidence: float | None = None,
                 output_field: str = schema.DEFAULT_OUTPUT_FIELD, mode: str = "blur",
                 shape: str = "auto", box_scale: float | None = None,
                 strength: float | None = None, feather: int | None = None,
                 seed_kernel: str = "", jpeg_quality: int | None = None,
                 overwrite: bool = False, delegate: bool = False):
        """Write anonymized copies of ``sample_collection`` through the operator.

        Example usage::

            import fiftyone as fo
            import fiftyone.operators as foo

            dataset = fo.load_dataset("street-photos")
            anonymize = foo.get_operator("@fiftyone-anonymizer/anonymize/anonymize_images")
            anonymize(dataset, "/data/anonymized", seed_kernel="21,2,9")

        Args:
            sample_collection: a dataset or view
            output_dir: folder for the copies (mirrors the source tree)
            label_fields: ``fo.Detections`` fields whose boxes are obscured
            classes: labels to obscure (None: all)
            min_confidence: ignore boxes scoring below this
            output_field: field that receives each copy's path
            mode: ``"blur"``, ``"pixelate"`` or ``"fill"``
            shape: ``"auto"``, ``"ellipse"`` or ``"rectangle"``
            box_scale: grow each box around its centre (None: the default)
            strength: blur sigma as a fraction of each box's size (None: the default)
            feather: soft edge width in pixels (None: the default)
            seed_kernel: the original tool's kernel, e.g. ``"21,2,9"``
            jpeg_quality: quality of JPEG copies (None: the default)
            overwrite: redo copies that are up to date
            delegate: queue it for a delegated worker instead of running now
        """
        params: dict[str, Any] = {
            "output_dir": str(output_dir),
            "label_fields": label_fields or [schema.DEFAULT_LABEL_FIELD],
            "classes": classes or [], "min_confidence": min_confidence,
            "output_field": output_field, "mode": mode, "shape": shape,
            "seed_kernel": seed_kernel, "overwrite": overwrite,
        }
        for key, value in (("box_scale", box_scale), ("strength", strength),
                           ("feather", feather), ("jpeg_quality", jpeg_quality)):
            if value is not None:
                params[key] = value
        return _execute(self.uri, sample_collection, params, delegate)

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not _anonymize_inputs(ctx, inputs):
            return types.Property(inputs)
        return types.Property(inputs, view=types.View(label="Anonymize images"))

    def execute(self, ctx):
        from .core.images import DEFAULT_JPEG_QUALITY
        from .jobs.anonymize import anonymize_images

        p = ctx.params
        report = anonymize_images(
            ctx.target_view(),
            output_dir=p["output_dir"],
            label_fields=p.get("label_fields") or [schema.DEFAULT_LABEL_FIELD],
            classes=p.get("classes") or None,
            min_confidence=p.get("min_confidence"),
            settings=blur_settings_from_params(p),
            output_field=p.get("output_field") or schema.DEFAULT_OUTPUT_FIELD,
            overwrite=bool(p.get("overwrite", False)),
            jpeg_quality=int(p.get("jpeg_quality") or DEFAULT_JPEG_QUALITY),
            progress=_progress(ctx),
        )
        _reload(ctx)
        return report.to_dict()

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("output_field", label="Output field")
        outputs.str("output_dir", label="Output folder")
        _report_outputs(outputs)
        return types.Property(outputs, view=types.View(label="Anonymization finished"))


# --------------------------------------------------------------------------------------------
# Share


def _share_inputs(ctx, inputs: types.Object) -> bool:
    """The share form; False when there are no copies to share."""
    import fiftyone as fo

    inputs.view_target(ctx)
    if _missing_copies(ctx, inputs):
        return False
    default_name = f"{ctx.dataset.name}-anonymized" if ctx.dataset else "anonymized"
    name = inputs.str("name", default=default_name, label="New dataset name")
    inputs.bool("overwrite", default=False, label="Replace a dataset of that name")
    chosen = ctx.params.get("name") or default_name
    if fo.dataset_exists(chosen) and not ctx.params.get("overwrite", False):
        name.invalid = True
        name.error_message = f"A dataset named '{chosen}' exists; choose another name or replace it"
    label_fields = _label_fields(ctx)
    inputs.list("label_fields", types.String(), default=label_fields, label="Label fields to keep",
                view=types.AutocompleteView(choices=[types.Choice(f, label=f) for f in label_fields]))
    inputs.str("export_dir", default=None, label="Also export to folder (optional)")
    inputs.enum("dataset_type", list(_EXPORT_TYPES), default="FiftyOneDataset",
                label="Export format", view=types.DropdownView())
    return True


class ShareAnonymized(foo.Operator):
    """Clone the anonymized samples into a shareable dataset, or export them."""

    @property
    def config(self):
        return _config("share_anonymized", "Anonymizer: share anonymized dataset",
                       "New dataset (or export) whose media are the anonymized copies")

    def __call__(self, sample_collection, name: str | None = None,
                 label_fields: list[str] | None = None, export_dir: str | None = None,
                 dataset_type: str = "FiftyOneDataset",
                 output_field: str = schema.DEFAULT_OUTPUT_FIELD, overwrite: bool = False,
                 delegate: bool = False):
        """Clone the anonymized samples of ``sample_collection`` into dataset ``name``.

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
            label_fields: label fields to keep (None: all)
            export_dir: optionally also export there, in ``dataset_type`` format
            dataset_type: the export format, e.g. ``"COCODetectionDataset"``
            output_field: the field holding the anonymized copies' paths
            overwrite: replace an existing dataset of that name
            delegate: queue it for a delegated worker instead of running now
        """
        params = {"name": name, "label_fields": label_fields, "export_dir": export_dir,
                  "dataset_type": dataset_type, "output_field": output_field,
                  "overwrite": overwrite}
        return _execute(self.uri, sample_collection, params, delegate)

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not _share_inputs(ctx, inputs):
            return types.Property(inputs)
        return types.Property(inputs, view=types.View(label="Share anonymized dataset"))

    def execute(self, ctx):
        from .jobs.share import share_anonymized

        p = ctx.params
        _, report = share_anonymized(
            ctx.target_view(),
            name=p.get("name"),
            label_fields=p.get("label_fields"),
            export_dir=p.get("export_dir") or None,
            dataset_type=p.get("dataset_type", "FiftyOneDataset"),
            output_field=p.get("output_field") or schema.DEFAULT_OUTPUT_FIELD,
            overwrite=bool(p.get("overwrite", False)),
        )
        return report.to_dict()

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("dataset", label="New dataset")
        outputs.int("processed", label="Samples shared")
        outputs.int("skipped", label="Samples left out (no anonymized copy)")
        outputs.list("label_fields", types.String(), label="Label fields kept")
        outputs.str("export_dir", label="Exported to")
        return types.Property(outputs, view=types.View(label="Shared"))


# --------------------------------------------------------------------------------------------
# Audit


def _audit_inputs(ctx, inputs: types.Object) -> bool:
    """The audit form; False when there are no copies to audit."""
    from .jobs import audit

    inputs.view_target(ctx)
    if _missing_copies(ctx, inputs):
        return False
    _detector_inputs(inputs, audit.AUDIT_THRESHOLDS["face"], audit.AUDIT_THRESHOLDS["plate"],
                     "Mirrored view for faces, tiles for plates on large photos: slower, fewer "
                     "misses and false alarms")
    inputs.str("residual_field", default=audit.DEFAULT_RESIDUAL_FIELD, label="Residual field",
               description="Detections outside the obscured regions")
    inputs.str("tag", default=audit.DEFAULT_TAG, label="Review tag")
    residual_field = ctx.params.get("residual_field") or audit.DEFAULT_RESIDUAL_FIELD
    fields = [f for f in _detections_fields(ctx) if f != residual_field]
    if fields:
        inputs.enum("gt_field", fields, default=None, label="Ground truth (optional)",
                    description="Evaluate recall and coverage against these boxes",
                    view=types.DropdownView())
    if ctx.params.get("gt_field"):
        inputs.str("eval_key", default=audit.DEFAULT_EVAL_KEY, label="Evaluation key")
    return True


class AuditAnonymization(foo.Operator):
    """Search the anonymized copies for faces and plates the first pass missed."""

    @property
    def config(self):
        return _config("audit_anonymization", "Anonymizer: audit anonymization",
                       "Find faces and plates left visible in the anonymized copies, tag them "
                       "for review, and evaluate against ground truth")

    def __call__(self, sample_collection, output_field: str = schema.DEFAULT_OUTPUT_FIELD,
                 gt_field: str | None = None, eval_key: str | None = None,
                 residual_field: str | None = None, tag: str | None = None,
                 face_threshold: float | None = None, plate_threshold: float | None = None,
                 multiscale: bool = True, delegate: bool = False):
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
            multiscale: extra passes (mirrored view for faces, tiles for plates on large
                photos)
            delegate: queue it for a delegated worker instead of running now
        """
        params: dict[str, Any] = {"output_field": output_field, "gt_field": gt_field,
                                  "multiscale": multiscale}
        for key, value in (("eval_key", eval_key), ("residual_field", residual_field),
                           ("tag", tag), ("face_threshold", face_threshold),
                           ("plate_threshold", plate_threshold)):
            if value is not None:
                params[key] = value
        return _execute(self.uri, sample_collection, params, delegate)

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not _audit_inputs(ctx, inputs):
            return types.Property(inputs)
        return types.Property(inputs, view=types.View(label="Audit anonymization"))

    def execute(self, ctx):
        from .jobs import audit

        p = ctx.params
        view = ctx.target_view()
        output_field = p.get("output_field") or schema.DEFAULT_OUTPUT_FIELD
        recipe = schema.AnonymizeRecipe.read(view, output_field)
        detector = audit.audit_detector(view, recipe, p.get("face_threshold"),
                                        p.get("plate_threshold"))
        chosen = {k: None if p[k] == "none" else p[k]
                  for k in ("faces", "plates", "multiscale") if k in p}
        report = audit.audit_anonymization(
            view,
            output_field=output_field,
            gt_field=p.get("gt_field") or None,
            eval_key=p.get("eval_key") or audit.DEFAULT_EVAL_KEY,
            residual_field=p.get("residual_field") or audit.DEFAULT_RESIDUAL_FIELD,
            tag=p.get("tag") or audit.DEFAULT_TAG,
            detector=detector.replace(**chosen),
            progress=_progress(ctx),
        )
        _reload(ctx)
        out = report.to_dict()
        out["summary"] = report.summary()
        return out

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Summary")
        outputs.int("audited", label="Samples audited")
        outputs.int("flagged", label="Samples tagged for review")
        outputs.int("not_anonymized", label="Samples without a copy (not audited)")
        outputs.int("stale", label="Copies older than their boxes")
        outputs.obj("residuals_per_class", label="Residual detections per class",
                    view=types.JSONView())
        outputs.obj("per_class", label="Against ground truth (recall, coverage)",
                    view=types.JSONView())
        outputs.list("worst", types.Object(), label="Samples to review first",
                     view=types.JSONView())
        outputs.list("failures", types.Object(), label="Failures (file and reason)",
                     view=types.JSONView())
        return types.Property(outputs, view=types.View(label="Audit finished"))


OPERATORS = [DetectFacesAndPlates, AnonymizeImages, ShareAnonymized, AuditAnonymization]
