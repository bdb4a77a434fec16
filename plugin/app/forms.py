"""Form pieces and checks shared by the operators: numbers in range, field choosers (frame
fields on videos), the detector's settings, and the one parameter list (``job_params``): a
form field is named after its job's keyword, and ``execute`` hands the values on unchanged."""

from __future__ import annotations

from typing import Any

import fiftyone.operators.types as types

from ..jobs import fields


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
    from ..detectors import DEFAULT_EFFORT, EFFORTS, FACE_BACKENDS, PLATE_BACKENDS

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


#: Form values that say how a run is launched, not what the job does.
LAUNCH_PARAMS = ("shards", "delegate")


def job_params(job, params: dict[str, Any]) -> dict[str, Any]:
    """The form's values ``job`` takes, under the same names: a form field is named after
    the job's keyword (``jobs.database.accepted_keywords``), as FiftyOne's builtin operators
    pass ``ctx.params`` on, so nothing is mapped by hand. Empty values take the job's
    defaults; ``"none"`` (the model choosers) is None; the audit's "as detected" effort means
    the recorded one."""
    from ..jobs.database import accepted_keywords

    accepted = accepted_keywords(job)
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in accepted or value is None or value == "" or value == AS_DETECTED:
            continue
        out[key] = None if value == "none" and key in ("faces", "plates") else value
    return out


def default_output_dir(ctx) -> str:
    """Beside the data, never inside it: ``<folder holding every image>-anonymized``."""
    from ..core.paths import common_root

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
