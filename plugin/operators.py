"""FiftyOne operators: thin forms over the jobs in :mod:`jobs`.

Each operator builds its form in a module-level ``_<name>_inputs(ctx, inputs)`` helper that
checks every value before Execute (the error shows next to its field), and its ``execute`` is
one library call. Run from the App, the job streams its progress and ends with a readable
result (tables, rounded figures, buttons that open the samples concerned) and a reload of
the dataset; run delegated or from Python, it returns the job's report as a dict. Each also
has a documented ``__call__`` so the same work runs from Python through FiftyOne's operator
machinery (``foo.get_operator(uri)(view, ...)``), immediately or delegated.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .jobs import copies, fields

PLUGIN_NAME = "@fiftyone-anonymizer/anonymize"
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
        from .jobs.shards import progress_reporter

        # Progress is the heartbeat a sharded job's watchdog reads; a shard that was requeued
        # meanwhile stops at its next report instead of racing the new attempt.
        with progress_reporter(ctx) as progress:
            return _readable(job(progress))
    return _stream(ctx, job, outputs, title, after)


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
    from .jobs import shards

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
        from .jobs.shards import schedule_sharded

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
    outputs.view(
        name, types.Button(label=label, operator=f"{PLUGIN_NAME}/open_samples", params=params)
    )


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
    from .core.boxes import count_text

    counted = count_text(results.get("boxes_per_class", {}))
    if results.get("counted") == "tracks" and results.get("boxes_per_class"):
        counted += " (tracks)"
    return (
        f"**{results.get('processed', 0)}** {what}, {results.get('skipped', 0)} already done,"
        f" **{results.get('failed', 0)}** failed; {counted}"
    )


# --------------------------------------------------------------------------------------------
# Form pieces and checks


def _invalid(prop, message: str) -> None:
    prop.invalid = True
    prop.error_message = message


def _check_number(prop, value: Any, low: float, high: float, what: str) -> None:
    """Flag ``prop`` unless ``value`` (when given) lies in ``[low, high]``."""
    if value is None or value == "":
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        _invalid(prop, f"{what} must be a number")
        return
    if not low <= number <= high:
        _invalid(prop, f"{what} must be between {low:g} and {high:g}, not {number:g}")


def _detections_fields(ctx) -> list[str]:
    """The dataset's detections fields (on videos the frames', named without ``frames.``)."""
    return fields.detections_fields(ctx.dataset) if ctx.dataset is not None else []


def _label_fields(ctx) -> list[str]:
    """Every label field but the audit's (on videos frame fields as ``frames.<name>``)."""
    return fields.label_fields(ctx.dataset) if ctx.dataset is not None else []


def _is_video(ctx) -> bool:
    return ctx.dataset is not None and ctx.dataset.media_type == "video"


def _media_word(ctx) -> str:
    """ "videos" or "images", for labels and help that name what the form works on."""
    return "videos" if _is_video(ctx) else "images"


def _flag_fields(inputs: types.Object, problems: dict[str, str], names: dict[str, str]) -> None:
    """Show each problem of ``problems`` (by field name) next to its form field: ``names``
    maps a field name to the form property that chose it; others get an error line."""
    for name, message in problems.items():
        prop = inputs.properties.get(names.get(name, ""))
        if prop is not None:
            _invalid(prop, message)
        else:
            error = inputs.view(name, types.Error(label=message))
            error.invalid = True


def _missing_copies(ctx, inputs: types.Object) -> bool:
    """The copies field chooser; True (and an error shown) when it does not hold copies."""
    output_field = ctx.params.get("output_field") or fields.DEFAULT_OUTPUT_FIELD
    prop = inputs.str("output_field", default=fields.DEFAULT_OUTPUT_FIELD, label="Anonymized field")
    problem = fields.copies_field_problem(ctx.dataset, output_field) if ctx.dataset else None
    if problem is None:
        return False
    if ctx.dataset.has_field(output_field):  # another field: refused next to the chooser
        _invalid(prop, problem)
        return True
    error = inputs.view(
        "no_copies",
        types.Error(
            label=f"No field '{output_field}'",
            description="Run 'anonymize images and videos' first",
        ),
    )
    error.invalid = True
    return True


#: The audit form's extra effort choice: look as the detect job did (its recorded level).
AS_DETECTED = "as detected"


def _detector_inputs(
    ctx,
    inputs: types.Object,
    face_default: float,
    plate_default: float,
    effort_help: str,
    effort_choices: tuple[str, ...] = (),
    threshold_help: str = "Keep boxes scoring at least this (0.001 to 1)",
) -> None:
    """Models, thresholds and the effort level (``effort_choices`` come before the levels)."""
    from .detectors import DEFAULT_EFFORT, EFFORTS, FACE_BACKENDS, PLATE_BACKENDS

    inputs.enum(
        "faces",
        [*FACE_BACKENDS, "none"],
        default=FACE_BACKENDS[0],
        label="Face model",
        view=types.DropdownView(),
    )
    inputs.enum(
        "plates",
        [*PLATE_BACKENDS, "none"],
        default=PLATE_BACKENDS[0],
        label="Plate model",
        view=types.DropdownView(),
    )
    for name, label, default in (
        ("face_threshold", "Face threshold", face_default),
        ("plate_threshold", "Plate threshold", plate_default),
    ):
        prop = inputs.float(
            name,
            default=default,
            min=0.001,
            max=1.0,
            label=label,
            description=threshold_help,
        )
        _check_number(prop, ctx.params.get(name), 0.001, 1.0, label)
    choices = (*effort_choices, *EFFORTS)
    inputs.enum(
        "effort",
        list(choices),
        default=effort_choices[0] if effort_choices else DEFAULT_EFFORT,
        label="Effort",
        description=effort_help,
        view=types.DropdownView(),
    )
    if ctx.params.get("faces") == "none" and ctx.params.get("plates") == "none":
        prop = inputs.view("nothing", types.Warning(label="Choose at least one model"))
        prop.invalid = True


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


def default_output_dir(ctx) -> str:
    """Beside the data, never inside it: ``<folder holding every image>-anonymized``."""
    from .core.paths import common_root

    if ctx.dataset is None or not len(ctx.dataset):
        return ""
    root = common_root(
        ctx.dataset.distinct("filepath")
        if len(ctx.dataset) < 10_000
        else [ctx.dataset.first().filepath]
    )
    if root == root.parent:  # images straight under "/": nothing beside it
        return ""
    return str(root.parent / f"{root.name}-anonymized")


# --------------------------------------------------------------------------------------------
# Detect


def _detect_inputs(ctx, inputs: types.Object) -> None:
    from .detectors import DEFAULT_THRESHOLDS
    from .jobs.detect import check_targets
    from .videos import VIDEO_THRESHOLDS

    inputs.view_target(ctx)
    video = _is_video(ctx)
    label_field = inputs.str(
        "label_field",
        label="Label field",
        default=fields.DEFAULT_LABEL_FIELD,
        description="Field in which to store the detections"
        + (" (per frame: frames.<field>, each box's track in 'index')" if video else ""),
    )
    name = ctx.params.get("label_field") or fields.DEFAULT_LABEL_FIELD
    if ctx.dataset is not None:
        problem = check_targets(ctx.dataset, name).get(name)
        if problem:
            _invalid(label_field, problem)
    if video:
        _detector_inputs(
            ctx,
            inputs,
            VIDEO_THRESHOLDS["face"],
            VIDEO_THRESHOLDS["plate"],
            "balanced: each frame at its own size, frames over 1920 px also in tiles, plate "
            "tiles on frames over 960 px; fast: one look per frame, plate tiles only over "
            "small candidates; thorough: every pass on (the mirror image too, about 2x slower)",
            threshold_help="Keep boxes scoring at least this in a frame (0.001 to 1); on "
            "videos a face or plate becomes a track only where some frame scores the photo "
            "threshold, and the tracker fills the frames between",
        )
    else:
        _detector_inputs(
            ctx,
            inputs,
            DEFAULT_THRESHOLDS["face"],
            DEFAULT_THRESHOLDS["plate"],
            "balanced: every photo seen at 800 px at least, large photos also in tiles at "
            "their own size; fast: one look with gated extra passes, no tiles (misses small "
            "faces on large photos); thorough: every pass on (about 2x slower)",
        )
    inputs.bool(
        "overwrite",
        default=False,
        label="Overwrite",
        description="Run again on samples that already have the field",
    )
    _shards_input(ctx, inputs)


class DetectFacesAndPlates(foo.Operator):
    """Find faces and licence plates and store them as ``fo.Detections``."""

    @property
    def config(self):
        return _config(
            "detect_faces_and_plates",
            "Anonymizer: detect faces and plates",
            "Find faces and licence plates and store them as detections",
            distributed=True,
        )

    def __call__(
        self,
        sample_collection,
        label_field: str = fields.DEFAULT_LABEL_FIELD,
        faces: str = "centerface",
        plates: str = "yolov8-plates",
        face_threshold: float | None = None,
        plate_threshold: float | None = None,
        effort: str = "balanced",
        overwrite: bool = False,
        delegate: bool = False,
        shards: int = 1,
    ):
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
            effort: ``"fast"``, ``"balanced"`` or ``"thorough"`` (how hard the detectors
                look; see ``DetectorConfig`` and the README's effort levels)
            overwrite: redo samples that already have ``label_field``
            delegate: queue it for a delegated worker instead of running now
            shards: queue it as this many delegated operations, balanced by pixels (any
                number of ``fiftyone delegated launch`` workers take them); returns a
                ``jobs.shards.ShardedJob``
        """
        params = {
            "label_field": label_field,
            "faces": faces,
            "plates": plates,
            "face_threshold": face_threshold,
            "plate_threshold": plate_threshold,
            "effort": effort,
            "overwrite": overwrite,
        }
        return _call(self.uri, sample_collection, params, delegate, shards)

    def resolve_input(self, ctx):
        inputs = types.Object()
        _detect_inputs(ctx, inputs)
        label = "Detect and track faces and plates in videos" if _is_video(ctx) else None
        return types.Property(inputs, view=types.View(label=label or "Detect faces and plates"))

    def execute(self, ctx):
        from .jobs.detect import detect_faces_and_plates

        if _own_shards(ctx):
            return _run(
                ctx, lambda progress: _sharded(ctx, self.uri), _sharded_outputs, "Queued as shards"
            )
        p = ctx.params
        view = ctx.target_view()

        def job(progress):
            report = detect_faces_and_plates(
                view,
                label_field=p.get("label_field") or fields.DEFAULT_LABEL_FIELD,
                detector=detector_config_from_params(p),
                overwrite=bool(p.get("overwrite", False)),
                progress=progress,
            ).to_dict()
            report["summary"] = _summary(
                report, "videos searched" if report.get("media") == "video" else "samples searched"
            )
            return report

        return _run(ctx, job, lambda results: _job_outputs(results), "Detection finished")

    def resolve_output(self, ctx):
        return types.Property(
            _job_outputs(ctx.results or {}), view=types.View(label="Detection finished")
        )


# --------------------------------------------------------------------------------------------
# Anonymize


def _anonymize_inputs(ctx, inputs: types.Object) -> bool:
    """The anonymize form; False when the dataset has no detections field to obscure."""
    from .blur import MODES, SHAPES, BlurSettings
    from .core.images import DEFAULT_JPEG_QUALITY
    from .jobs.anonymize import check_targets

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
    operations = [ctx.trigger(f"{PLUGIN_NAME}/show_media", params={"field": output_field})]
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
        from .core.images import DEFAULT_JPEG_QUALITY
        from .jobs.anonymize import anonymize_images

        if _own_shards(ctx):
            return _run(
                ctx, lambda progress: _sharded(ctx, self.uri), _sharded_outputs, "Queued as shards"
            )
        p = ctx.params
        view = ctx.target_view()
        output_field = p.get("output_field") or fields.DEFAULT_OUTPUT_FIELD

        show = bool(p.get("show_copies", True))

        def job(progress):
            report = anonymize_images(
                view,
                output_dir=p["output_dir"],
                label_fields=p.get("label_fields") or [fields.DEFAULT_LABEL_FIELD],
                classes=p.get("classes") or None,
                min_confidence=p.get("min_confidence"),
                settings=blur_settings_from_params(p),
                output_field=output_field,
                overwrite=bool(p.get("overwrite", False)),
                jpeg_quality=int(p.get("jpeg_quality") or DEFAULT_JPEG_QUALITY),
                progress=progress,
                audio=bool(p.get("audio", True)),
                show_copies=show,
            ).to_dict()
            report["summary"] = _summary(report, "copies written") + (
                f"; copies in `{report['output_dir']}`"
            )
            return report

        def show_them(report: dict[str, Any]) -> list:
            if not show or not (report.get("processed") or report.get("skipped")):
                return []
            return show_copies_in_app(ctx, view, output_field)

        return _run(
            ctx, job, lambda results: _job_outputs(results), "Anonymization finished", show_them
        )

    def resolve_output(self, ctx):
        return types.Property(
            _job_outputs(ctx.results or {}), view=types.View(label="Anonymization finished")
        )


# --------------------------------------------------------------------------------------------
# Share


def _share_inputs(ctx, inputs: types.Object) -> bool:
    """The share form; False when there are no copies to share. Every check of the share
    (``jobs.share.share_problems``) shows next to its field before Execute."""
    from .jobs.share import (
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
        from .jobs.share import share_anonymized

        p = ctx.params
        view = ctx.target_view()

        def job(progress):
            progress(0.0, "checking the share")
            _, report = share_anonymized(
                view,
                name=p.get("name"),
                label_fields=p.get("label_fields"),
                export_dir=p.get("export_dir") or None,
                dataset_type=p.get("dataset_type", "FiftyOneDataset"),
                output_field=p.get("output_field") or fields.DEFAULT_OUTPUT_FIELD,
                overwrite=bool(p.get("overwrite", False)),
                include_left_out=bool(p.get("include_left_out", False)),
                progress=progress,
            )
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


# --------------------------------------------------------------------------------------------
# Audit


def _audit_inputs(ctx, inputs: types.Object) -> bool:
    """The audit form; False when there are no copies to audit."""
    from .jobs import audit

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
            tag=results.get("tag") or "needs_review",
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
        from .jobs import audit

        if _own_shards(ctx):
            return _run(
                ctx, lambda progress: _sharded(ctx, self.uri), _sharded_outputs, "Queued as shards"
            )
        p = ctx.params
        view = ctx.target_view()
        output_field = p.get("output_field") or fields.DEFAULT_OUTPUT_FIELD
        tag = p.get("tag") or audit.DEFAULT_TAG

        def job(progress):
            recipe = copies.AnonymizeRecipe.read(view, output_field)
            detector = audit.audit_detector(
                view, recipe, p.get("face_threshold"), p.get("plate_threshold")
            )
            chosen = {
                k: None if p[k] == "none" else p[k]
                for k in ("faces", "plates", "effort")
                if k in p and p[k] != AS_DETECTED
            }
            report = audit.audit_anonymization(
                view,
                output_field=output_field,
                gt_field=p.get("gt_field") or None,
                eval_key=p.get("eval_key") or audit.DEFAULT_EVAL_KEY,
                residual_field=p.get("residual_field") or audit.DEFAULT_RESIDUAL_FIELD,
                tag=tag,
                detector=detector.replace(**chosen),
                progress=progress,
            )
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

        return _run(ctx, job, _audit_outputs, "Audit finished")

    def resolve_output(self, ctx):
        return types.Property(
            _audit_outputs(ctx.results or {}), view=types.View(label="Audit finished")
        )


# --------------------------------------------------------------------------------------------
# Sharded jobs


class ShardedJobStatus(foo.Operator):
    """Where a sharded job stands: shards queued, running, done, failed; samples done. Dead
    shards (no progress for the timeout) are requeued on the way."""

    @property
    def config(self):
        return foo.OperatorConfig(
            name="sharded_job_status", label="Anonymizer: sharded job status", dynamic=True
        )

    def resolve_input(self, ctx):
        from .jobs.shards import list_jobs

        inputs = types.Object()
        jobs = list_jobs()
        if not jobs:
            inputs.view("none", types.Notice(label="No sharded job has been queued"))
            return types.Property(inputs)
        inputs.enum("job_id", jobs, default=jobs[-1], label="Job", view=types.DropdownView())
        return types.Property(inputs, view=types.View(label="Sharded job status"))

    def execute(self, ctx):
        from .jobs.shards import job_status

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
        from fiftyone import ViewField as F

        p = ctx.params
        dataset = ctx.dataset
        if p.get("ids") is not None:
            view = dataset.select(p["ids"], ordered=True)
        elif p.get("tag"):
            view = dataset.match_tags(p["tag"])
        elif p.get("field"):
            view = dataset.match(F(p["field"]) != None)  # noqa: E711 (a MongoDB expression)
        else:
            view = dataset.view()
        ctx.ops.set_view(view=view)
        return {"samples": len(view)}


OPERATORS = [
    DetectFacesAndPlates,
    AnonymizeImages,
    ShareAnonymized,
    AuditAnonymization,
    ShardedJobStatus,
    OpenSamples,
]
