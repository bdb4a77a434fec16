"""The anonymize operator: its form (folders checked by ``jobs.copies``), its one call of
``jobs.anonymize.anonymize_images``, and switching the open App to the copies."""

from __future__ import annotations

import os
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..jobs import copies, fields
from ..jobs.shards import PLUGIN
from .forms import (
    _check_number,
    _detections_fields,
    _invalid,
    _is_video,
    _media_word,
    default_output_dir,
    job_params,
)
from .run import (
    _call,
    _config,
    _job_outputs,
    _run_or_shard,
    _shards_input,
    _summary,
)


def _anonymize_inputs(ctx, inputs: types.Object) -> bool:
    """The anonymize form; False when the dataset has no detections field to obscure."""
    from ..blur import MODES, SHAPES, BlurSettings
    from ..core.images import DEFAULT_JPEG_QUALITY
    from ..jobs.anonymize import check_targets

    defaults = BlurSettings()
    p = ctx.params
    inputs.view_target(ctx)
    video = _is_video(ctx)
    candidates = _detections_fields(ctx)
    if not candidates:
        prop = inputs.view(
            "no_fields",
            types.Error(
                label="No detection fields" + (" on the frames" if video else ""),
                description="Run 'detect faces and plates' first, or add a Detections field"
                + (" to the frames (frames.<field>)" if video else ""),
            ),
        )
        prop.invalid = True
        return False
    default_fields = (
        [fields.DEFAULT_LABEL_FIELD] if fields.DEFAULT_LABEL_FIELD in candidates else candidates[:1]
    )
    chosen = inputs.list(
        "label_fields",
        types.String(),
        default=default_fields,
        label="Detection fields to obscure" + (" (per frame)" if video else ""),
        view=types.AutocompleteView(
            choices=[types.Choice(f, label=f"frames.{f}" if video else f) for f in candidates]
        ),
    )
    unknown = [f for f in (p.get("label_fields") or []) if f not in candidates]
    if unknown:
        _invalid(chosen, f"not a detections field of this dataset: {', '.join(unknown)}")
    elif "label_fields" in p and not p["label_fields"]:
        _invalid(chosen, "choose at least one field")
    inputs.list(
        "classes",
        types.String(),
        default=["face", "plate"],
        label="Classes",
        description="Labels to obscure; empty means every label",
    )
    floor = inputs.float(
        "min_confidence",
        default=None,
        label="Minimum confidence",
        description="Ignore boxes scoring below this, 0 to 1 (boxes without a score always count)",
    )
    _check_number(floor, p.get("min_confidence"), 0.0, 1.0, "Minimum confidence")
    default_dir = default_output_dir(ctx)
    out = inputs.str(
        "output_dir",
        default=default_dir,
        required=True,
        label="Output folder",
        description="Copies mirror the source tree here, beside the originals",
    )
    output_dir = p.get("output_dir") or default_dir
    if output_dir and ctx.dataset is not None:
        if not os.path.isabs(os.path.expanduser(output_dir)):
            _invalid(out, "give an absolute path (the App's server resolves relative ones)")
        else:
            reason = copies.check_output_dir(output_dir, ctx.dataset.distinct("filepath"), video)
            if reason:
                _invalid(out, reason)
    field = inputs.str(
        "output_field",
        default=fields.DEFAULT_OUTPUT_FIELD,
        label="Output field",
        description="Receives each copy's path (a new field, or one an earlier run wrote)",
    )
    if ctx.dataset is not None:
        output_field = p.get("output_field") or fields.DEFAULT_OUTPUT_FIELD
        problems = check_targets(ctx.dataset, output_field)
        if problems:
            _invalid(field, next(iter(problems.values())))
    inputs.bool(
        "show_copies",
        default=True,
        label="Show the copies in the grid and modal",
        description="Make the copies the App's media for this dataset (a video modal plays "
        "the copy) and show the samples that have one",
    )
    if video:
        inputs.bool(
            "audio",
            default=True,
            label="Keep the audio",
            description="Copy the source's audio into the copy unchanged (untick to leave it out)",
        )
    inputs.enum("mode", list(MODES), default=defaults.mode, label="Mode", view=types.RadioGroup())
    inputs.enum(
        "shape",
        list(SHAPES),
        default=defaults.shape,
        label="Shape",
        description="auto: ellipses for faces, rectangles for plates",
        view=types.DropdownView(),
    )
    scale = inputs.float(
        "box_scale",
        default=defaults.box_scale,
        min=0.5,
        max=4.0,
        label="Box scale",
        description="Grow each box around its centre",
    )
    _check_number(scale, p.get("box_scale"), 0.5, 4.0, "Box scale")
    strength = inputs.float(
        "strength",
        default=defaults.strength,
        label="Strength",
        description="Blur sigma as a fraction of each box's size (0.01-1)",
    )
    _check_number(strength, p.get("strength"), 0.01, 1.0, "Strength")
    feather = inputs.int(
        "feather",
        default=defaults.feather,
        label="Feather (px)",
        description="Smoothing kernel for soft edges: 0, 1 or an odd size",
    )
    value = p.get("feather")
    if value is not None and (
        not isinstance(value, (int, float)) or value < 0 or (value > 1 and int(value) % 2 == 0)
    ):
        _invalid(feather, "feather must be 0, 1 or an odd number of pixels")
    seed = inputs.str(
        "seed_kernel",
        default="",
        label="Seed kernel (optional)",
        description="The original tool's obfuscation kernel, e.g. 21,2,9; overrides strength",
    )
    if (p.get("seed_kernel") or "").strip():
        try:
            BlurSettings.from_seed_kernel(p["seed_kernel"].strip())
        except ValueError as exc:
            _invalid(seed, f"{exc} (write it as size,sigma,smoothing, e.g. 21,2,9)")
    quality = inputs.int(
        "jpeg_quality", default=DEFAULT_JPEG_QUALITY, min=1, max=100, label="JPEG quality"
    )
    _check_number(quality, p.get("jpeg_quality"), 1, 100, "JPEG quality")
    inputs.bool(
        "overwrite",
        default=False,
        label="Overwrite",
        description="Redo copies that are already up to date",
    )
    _shards_input(ctx, inputs)
    return True


def show_copies_in_app(ctx, view, output_field: str) -> list:
    """The App operations that show the copies in the open App: its grid and modal switch to
    the copies' field (``plugin/app/show_media.js``; an open App keeps its media field across
    reloads) and, when some samples of the run's view have no copy, the App shows the view's
    samples that have one (the others would be error tiles, read as a failed job)."""
    operations = [ctx.trigger(f"{PLUGIN}/show_media", params={"field": output_field})]
    with_copies = view.exists(output_field)
    if len(with_copies) < len(view) or len(view) < len(view._dataset):
        operations.append(ctx.ops.set_view(view=with_copies))
    return operations


class AnonymizeImages(foo.Operator):
    """Write anonymized copies of the images into a new field."""

    @property
    def config(self):
        return _config(
            "anonymize_images",
            "Anonymizer: anonymize images and videos",
            "Blur, pixelate or fill the boxes of detection fields into new copies of the "
            "images or videos",
            distributed=True,
        )

    def __call__(
        self,
        sample_collection,
        output_dir: str,
        label_fields: list[str] | None = None,
        classes: list[str] | None = None,
        min_confidence: float | None = None,
        output_field: str = fields.DEFAULT_OUTPUT_FIELD,
        mode: str = "blur",
        shape: str = "auto",
        box_scale: float | None = None,
        strength: float | None = None,
        feather: int | None = None,
        seed_kernel: str = "",
        jpeg_quality: int | None = None,
        show_copies: bool = True,
        overwrite: bool = False,
        audio: bool = True,
        delegate: bool = False,
        shards: int = 1,
    ):
        """Write anonymized copies of ``sample_collection`` (images or videos) through the
        operator.

        Example usage::

            import fiftyone as fo
            import fiftyone.operators as foo

            dataset = fo.load_dataset("street-photos")
            anonymize = foo.get_operator("@fiftyone-anonymizer/anonymize/anonymize_images")
            anonymize(dataset, "/data/street-photos-anonymized", seed_kernel="21,2,9")

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
            show_copies: make the copies the App's default media in grid and modal (a
                video modal plays the copy)
            overwrite: redo copies that are up to date
            audio: keep the source's audio in video copies
            delegate: queue it for a delegated worker instead of running now
            shards: queue it as this many delegated operations, balanced by pixels (any
                number of ``fiftyone delegated launch`` workers take them); returns a
                ``jobs.shards.ShardedJob``
        """
        params: dict[str, Any] = {
            "output_dir": str(output_dir),
            "label_fields": label_fields or [fields.DEFAULT_LABEL_FIELD],
            "classes": classes or [],
            "min_confidence": min_confidence,
            "output_field": output_field,
            "mode": mode,
            "shape": shape,
            "seed_kernel": seed_kernel,
            "show_copies": show_copies,
            "overwrite": overwrite,
            "audio": audio,
        }
        for key, value in (
            ("box_scale", box_scale),
            ("strength", strength),
            ("feather", feather),
            ("jpeg_quality", jpeg_quality),
        ):
            if value is not None:
                params[key] = value
        return _call(self.uri, sample_collection, params, delegate, shards)

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not _anonymize_inputs(ctx, inputs):
            return types.Property(inputs)
        return types.Property(inputs, view=types.View(label=f"Anonymize {_media_word(ctx)}"))

    def execute(self, ctx):
        from ..jobs.anonymize import anonymize_images

        view = ctx.target_view()
        params = job_params(anonymize_images, ctx.params)
        output_field = params.get("output_field", fields.DEFAULT_OUTPUT_FIELD)
        show = bool(params.get("show_copies", True))

        def job(progress):
            report = anonymize_images(view, **params, progress=progress).to_dict()
            report["summary"] = _summary(report, "copies written") + (
                f"; copies in `{report['output_dir']}`"
            )
            return report

        def show_them(report: dict[str, Any]) -> list:
            if not show or not (report.get("processed") or report.get("skipped")):
                return []
            return show_copies_in_app(ctx, view, output_field)

        return _run_or_shard(
            ctx,
            self.uri,
            job,
            lambda results: _job_outputs(results),
            "Anonymization finished",
            show_them,
        )

    def resolve_output(self, ctx):
        return types.Property(
            _job_outputs(ctx.results or {}), view=types.View(label="Anonymization finished")
        )
