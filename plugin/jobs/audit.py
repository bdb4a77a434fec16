"""Audit an anonymization before the data leaves: what may the first pass have missed?

The anonymized copies are searched again with the detectors at a low threshold and with every
scale, and each detection is compared with the region that was actually obscured, rebuilt from
the boxes, classes, confidence floor and blur settings that ``anonymize_images`` recorded in its
output field's ``info``.

Residual rule: a detection on the copy is a *residual* (a face or plate the first pass missed)
when less than ``RESIDUAL_MIN_COVERED`` (70 %) of its box lies inside
``blur.obscured_region(...)``. It is the coverage rule of :mod:`metrics` applied to the audit's
own boxes: a residual is a box that coverage would call uncovered if it were a true one. A
detector that still fires on a blurred face draws its box over the blurred blob, which the
grown (``box_scale``) region covers, so it is not a residual.

Samples with a residual, an uncovered true box, or a copy that no longer matches its boxes are
tagged for review; an audit run removes the tag from audited samples that have none of these.
With a ground-truth field, FiftyOne's ``evaluate_detections`` (IoU 0.3, classwise) is run so the
App's evaluation views work, and per-sample counts of uncovered true boxes are stored.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import engine, metrics
from ..core.boxes import Detection
from ..core.images import read_image
from ..detectors import DEFAULT_THRESHOLDS
from . import copies, database, fields, labels
from .audit_tiers import LIKELY, RULES, CropOpinion, TieredResidual, needs_review, tier_residuals
from .fields import DEFAULT_ERROR_FIELD, DEFAULT_LABEL_FIELD, DEFAULT_OUTPUT_FIELD
from .report import Progress, notify_progress, with_progress

DEFAULT_RESIDUAL_FIELD = "anonymizer_residual"
DEFAULT_UNCOVERED_FIELD = "anonymizer_uncovered"
DEFAULT_TAG = fields.REVIEW_TAG
#: On videos, every this-many-th frame of each copy is searched.
AUDIT_EVERY = 10
DEFAULT_EVAL_KEY = "anonymizer_eval"
#: A detection on a copy is a residual when less than this share of its box is obscured.
RESIDUAL_MIN_COVERED = metrics.MIN_COVERED
#: Evaluation IoU: hand boxes and model boxes frame faces differently (see metrics).
EVAL_IOU = metrics.IOU_THRESHOLD
#: Audit thresholds: half the detection defaults (face 0.1, plate 0.05). The same threshold as
#: the first pass would mostly find what it already found; a reviewer dismisses a false alarm
#: in a second, while a face left visible in a shared dataset cannot be taken back.
AUDIT_THRESHOLDS = {label: value / 2 for label, value in DEFAULT_THRESHOLDS.items()}
WORST_SAMPLES = 10


@dataclass
class AuditReport:
    """What the audit found, for the operator's output, the command line and Python callers."""

    samples: int = 0
    audited: int = 0
    not_anonymized: int = 0  # samples of the view without a usable copy (never shared)
    failed: dict[str, str] = field(default_factory=dict)  # filepath -> reason
    failed_ids: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # ids whose copy predates their current boxes
    flagged: int = 0  # samples tagged for review
    residuals_per_class: Counter = field(default_factory=Counter)
    likely_per_class: Counter = field(default_factory=Counter)  # residuals that tag the sample
    possible_per_class: Counter = field(default_factory=Counter)  # stored, not tagged
    residual_samples: int = 0
    gt_field: str | None = None
    pred_field: str | None = None
    eval_key: str | None = None
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    worst: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": "audit",
            "samples": self.samples,
            "audited": self.audited,
            "not_anonymized": self.not_anonymized,
            "failed": len(self.failed),
            "failures": [{"filepath": k, "reason": v} for k, v in self.failed.items()],
            "failed_ids": list(self.failed_ids),
            "stale": len(self.stale),
            "stale_ids": list(self.stale),
            "flagged": self.flagged,
            "residual_samples": self.residual_samples,
            "residuals_per_class": dict(self.residuals_per_class),
            "likely_per_class": dict(self.likely_per_class),
            "possible_per_class": dict(self.possible_per_class),
            "residuals": sum(self.residuals_per_class.values()),
            "gt_field": self.gt_field,
            "pred_field": self.pred_field,
            "eval_key": self.eval_key,
            "per_class": self.per_class,
            "worst": self.worst,
            "settings": json.loads(json.dumps(self.settings, default=str)),
        }

    def summary(self) -> str:
        likely = ", ".join(f"{n} {k}" for k, n in sorted(self.likely_per_class.items()))
        possible = sum(self.possible_per_class.values())
        text = (
            f"audit: {self.audited} audited, {self.flagged} flagged for review; "
            f"likely misses: {likely or 'none'}; {possible} possible (stored, not tagged)"
        )
        for label, row in sorted(self.per_class.items()):
            recall = "n/a" if row["recall"] is None else f"{row['recall']:.3f}"
            text += (
                f"; {label}: recall {recall}, coverage {row['coverage']:.3f}, "
                f"{row['uncovered']} uncovered"
            )
        return text


# --------------------------------------------------------------------------------------------
# The residual rule, per image


def uncovered_truths(
    truths: Sequence[Detection], obscured: np.ndarray, min_covered: float = metrics.MIN_COVERED
) -> np.ndarray:
    """Bool per truth: less than ``min_covered`` of it was obscured (a leak)."""
    if not truths:
        return np.zeros(0, dtype=bool)
    return metrics.covered_fractions(list(truths), obscured) < min_covered


def possible_field(residual_field: str) -> str:
    """Where the possible misses go beside the likely ones (``<residual_field>_possible``):
    the App shows the likely ones by default, the possible ones when asked (sidebar)."""
    return f"{residual_field}_possible"


def split_tiers(
    found: Sequence[TieredResidual],
) -> tuple[list[TieredResidual], list[TieredResidual]]:
    """``(likely, possible)``: the residuals that tag the sample, and the others."""
    likely = [r for r in found if r.tier == LIKELY]
    return likely, [r for r in found if r.tier != LIKELY]


def evaluation_key_problem(sample_collection, eval_key: Any) -> str | None:
    """Why the audit may not run FiftyOne's evaluation under ``eval_key``, or None: the key
    must be a valid name, and an evaluation (or its ``<key>_tp``/``_fp``/``_fn`` fields) under
    it must be the audit's own (the audit deletes it first)."""
    problem = fields.field_name_problem(eval_key, "evaluation key")
    if problem:
        return problem
    dataset = sample_collection._dataset
    ours = eval_key == DEFAULT_EVAL_KEY or any(
        (dataset.get_field(name).info or {}).get("eval_key") == eval_key
        for name in fields.audit_fields(dataset)
        if not name.startswith("frames.")
    )
    if ours:
        return None
    if eval_key in dataset.list_evaluations():
        return (
            f"an evaluation '{eval_key}' exists and was not run by the audit; it would be "
            f"replaced: choose another evaluation key"
        )
    taken = [f"{eval_key}_{s}" for s in ("tp", "fp", "fn") if dataset.has_field(f"{eval_key}_{s}")]
    if taken:
        return (
            f"the evaluation key '{eval_key}' would overwrite the fields {taken}: choose "
            f"another evaluation key"
        )
    return None


def check_targets(
    sample_collection,
    output_field: str = DEFAULT_OUTPUT_FIELD,
    residual_field: str = DEFAULT_RESIDUAL_FIELD,
    uncovered_field: str = DEFAULT_UNCOVERED_FIELD,
    gt_field: str | None = None,
    eval_key: str = DEFAULT_EVAL_KEY,
) -> dict[str, str]:
    """The problems (by name) of what an audit reads and writes: the copies' field must hold
    copies; the residual fields (likely and possible misses; on videos frame fields), the
    uncovered counts and the evaluation (with ``gt_field``) may replace only the audit's own.
    Empty when none."""
    problems: dict[str, str] = {}
    problem = fields.copies_field_problem(sample_collection, output_field)
    if problem:
        problems[output_field] = problem
    video = sample_collection.media_type == "video"
    targets = [
        (residual_field, fields.RESIDUALS, video),
        (possible_field(residual_field), fields.POSSIBLE_RESIDUALS, video),
    ]
    if gt_field and not video:
        targets.append((uncovered_field, fields.UNCOVERED, False))
    problems.update(fields.check_target_fields(sample_collection, targets))
    if gt_field and not video:
        problem = evaluation_key_problem(sample_collection, eval_key)
        if problem:
            problems[eval_key] = problem
    return problems


def residual_labels(found: Sequence[TieredResidual]):
    """Residuals as ``fo.Detections``: each with its covered share, tier ("likely" tags the
    sample, "possible" does not), the second opinion if one was asked, and why."""
    return labels.to_fo_detections(
        [r.detection for r in found],
        [
            {
                "covered": round(r.covered, 4),
                "tier": r.tier,
                "reason": r.reason,
                "opinion": None if r.opinion is None else round(r.opinion, 4),
            }
            for r in found
        ],
    )


# --------------------------------------------------------------------------------------------
# The audit


@dataclass
class _SampleResult:
    sid: str
    filepath: str
    residuals: list[TieredResidual]
    truths: dict[str, int]  # per class
    uncovered: dict[str, int]  # per class
    stale: bool


def _audit_sample(
    sid: str,
    filepath: str,
    height: int,
    width: int,
    found: Sequence[Detection],
    used: Sequence[Detection],
    truths: Sequence[Detection],
    recipe: copies.AnonymizeRecipe,
    stale: bool,
    min_covered: float = RESIDUAL_MIN_COVERED,
    opinion: Any = None,
) -> _SampleResult:
    """Apply the residual rule (with its tiers) and the coverage rule to one copy of
    ``height`` x ``width`` pixels; ``opinion`` is asked about the undecided residuals."""
    from ..blur import obscured_region

    mask = np.asarray(obscured_region(height, width, list(used), recipe.settings), dtype=bool)
    if recipe.classes:
        found = [d for d in found if d.label in recipe.classes]
    leaks = uncovered_truths(truths, mask)
    return _SampleResult(
        sid,
        filepath,
        tier_residuals(found, mask, opinion, min_covered=min_covered),
        truths=Counter(d.label for d in truths),
        uncovered=Counter(d.label for d, leak in zip(truths, leaks) if leak),
        stale=stale,
    )


def _default_pred_field(
    recipe: copies.AnonymizeRecipe, gt_field: str | None, dataset
) -> str | None:
    """The label field to evaluate: the first one anonymize used that is not the ground truth;
    else (anonymized with the ground truth itself) our detections, if the dataset has them."""
    for name in recipe.label_fields:
        if name != gt_field:
            return name
    return DEFAULT_LABEL_FIELD if dataset.has_field(DEFAULT_LABEL_FIELD) else None


def _confidence_filter(recipe: copies.AnonymizeRecipe):
    """A ``filter_labels`` expression keeping the boxes anonymize kept (None: keep all)."""
    from fiftyone import ViewField as F

    conds = []
    if recipe.classes:
        conds.append(F("label").is_in(list(recipe.classes)))
    floor = recipe.min_confidence
    no_score = F("confidence") == None  # noqa: E711 (a MongoDB expression)
    if isinstance(floor, dict) and floor:
        per_class = [(F("label") == k) & (F("confidence") < float(v)) for k, v in floor.items()]
        below = per_class[0]
        for cond in per_class[1:]:
            below = below | cond
        conds.append(no_score | ~below)
    elif isinstance(floor, (int, float)):
        conds.append(no_score | (F("confidence") >= float(floor)))
    if not conds:
        return None
    expr = conds[0]
    for cond in conds[1:]:
        expr = expr & cond
    return expr


def _evaluate(
    view, gt_field: str, pred_field: str, eval_key: str, recipe: copies.AnonymizeRecipe
) -> dict[str, dict[str, int]]:
    """FiftyOne's own evaluation of the obscured boxes; true positives and truths per class."""
    dataset = view._dataset
    if eval_key in dataset.list_evaluations():
        dataset.delete_evaluation(eval_key)
    expr = _confidence_filter(recipe)
    target = view.filter_labels(pred_field, expr, only_matches=False) if expr is not None else view
    target.evaluate_detections(
        pred_field,
        gt_field=gt_field,
        eval_key=eval_key,
        iou=EVAL_IOU,
        classwise=True,
        classes=list(recipe.classes) if recipe.classes else None,
        progress=False,
    )
    labels, outcomes = view.values(
        [f"{gt_field}.detections.label", f"{gt_field}.detections.{eval_key}"]
    )
    counts: dict[str, dict[str, int]] = {}
    for sample_labels, sample_outcomes in zip(labels, outcomes):
        for label, outcome in zip(sample_labels or [], sample_outcomes or []):
            if recipe.classes and label not in recipe.classes:
                continue
            row = counts.setdefault(label, {"truths": 0, "tp": 0})
            row["truths"] += 1
            row["tp"] += outcome == "tp"
    return counts


def _ensure_fields(dataset, residual_field: str, uncovered_field: str | None) -> None:
    import fiftyone as fo

    fields.declare_detections_field(dataset, residual_field, fields.RESIDUALS)
    fields.declare_detections_field(
        dataset, possible_field(residual_field), fields.POSSIBLE_RESIDUALS
    )
    if uncovered_field:
        if not dataset.has_field(uncovered_field):
            dataset.add_sample_field(uncovered_field, fo.IntField)
        fields.mark_field(dataset, uncovered_field, fields.UNCOVERED)


def _worst(results: Sequence[_SampleResult], limit: int) -> list[dict[str, Any]]:
    """The samples a reviewer should open first: most uncovered true boxes, then likely
    residuals, then possible ones."""
    rows: list[dict[str, Any]] = [
        {
            "id": r.sid,
            "filepath": r.filepath,
            "residuals": sum(t.tier == LIKELY for t in r.residuals),
            "possible": sum(t.tier != LIKELY for t in r.residuals),
            "uncovered": sum(r.uncovered.values()),
            "stale": r.stale,
        }
        for r in results
    ]
    rows = [r for r in rows if r["residuals"] or r["uncovered"] or r["stale"]]
    rows.sort(key=lambda r: (-r["uncovered"], -r["residuals"], -r["possible"], r["filepath"]))
    return rows[:limit]


def audit_detector(sample_collection, recipe: copies.AnonymizeRecipe, **settings: Any) -> Any:
    """The audit's ``DetectorConfig``: the models, effort level, tiles and device recorded on
    the detections field anonymize used (so the audit looks with the same eyes; a field
    recorded before effort levels reads as its closest level), the audit's own low thresholds
    (:data:`AUDIT_THRESHOLDS`), and any ``DetectorConfig`` field given in ``settings`` over
    them (``effort="thorough"``; ``"none"`` is None, the forms' spelling)."""
    from ..detectors import DetectorConfig

    base = DetectorConfig()
    for name in recipe.label_fields:
        fld = sample_collection.get_field(fields.labels_path(sample_collection, name))
        recorded = ((fld.info or {}) if fld is not None else {}).get("config")
        if recorded:
            base = DetectorConfig.from_dict(recorded)
            break
    chosen = {k: (None if v == "none" else v) for k, v in settings.items()}
    for label in ("face", "plate"):
        if chosen.get(f"{label}_threshold") is None:
            chosen[f"{label}_threshold"] = AUDIT_THRESHOLDS[label]
    return base.replace(**chosen)


@database.guarded
def audit_anonymization(
    sample_collection,
    output_field: str = DEFAULT_OUTPUT_FIELD,
    gt_field: str | None = None,
    pred_field: str | None = None,
    eval_key: str = DEFAULT_EVAL_KEY,
    residual_field: str = DEFAULT_RESIDUAL_FIELD,
    uncovered_field: str = DEFAULT_UNCOVERED_FIELD,
    tag: str = DEFAULT_TAG,
    detector: Any = None,
    min_covered: float = RESIDUAL_MIN_COVERED,
    error_field: str = DEFAULT_ERROR_FIELD,
    worst: int = WORST_SAMPLES,
    progress: Progress | None = None,
    every: int = AUDIT_EVERY,
    **options: Any,
) -> AuditReport:
    """Search the anonymized copies of ``sample_collection`` for faces and plates left visible.

    Every detection on a copy less than ``min_covered`` inside the obscured region is stored
    in ``residual_field`` (with its ``covered`` share). Samples with a residual, with an
    uncovered true box or with a stale copy are tagged ``tag``; audited samples without are
    untagged. With ``gt_field``, FiftyOne's ``evaluate_detections`` is run on ``pred_field``
    (default: the first label field anonymize used) under ``eval_key``, and per-sample counts
    of uncovered true boxes go to ``uncovered_field``. Samples without a copy are counted and
    left alone.

    Example usage::

        import fiftyone_anonymizer as anon

        report = anon.audit_anonymization(dataset, gt_field="ground_truth")
        print(report.summary())
        review = dataset.match_tags("needs_review")

    Args:
        sample_collection: a dataset or view that was anonymized
        output_field: the field holding the copies' paths (and the recipe in its info)
        gt_field: optional ground-truth ``fo.Detections`` field to evaluate against
        pred_field: the field evaluated against ``gt_field`` (default: see above)
        eval_key: FiftyOne evaluation key
        residual_field: where residual detections go
        uncovered_field: per-sample count of uncovered true boxes (with ``gt_field``)
        tag: the review tag
        detector: a ``DetectorConfig`` or a ready detector; default :func:`audit_detector`
        min_covered: a detection less obscured than this share is a residual
        error_field: the error field anonymize wrote (failed samples are not audited)
        worst: how many samples to list in the report, worst first
        progress: ``progress(fraction, label)`` callback
        every: on videos, search every ``every``-th frame of each copy
        **options: ``DetectorConfig`` fields over :func:`audit_detector`'s (``effort``,
            ``face_threshold``, ...: the audit form's own names) and ``engine.EngineOptions``
            fields

    Returns:
        an :class:`AuditReport`
    """
    from fiftyone import ViewField as F

    settings, _, engine_options = database.split_options(options)
    if detector is not None and settings:
        raise TypeError(
            f"audit_anonymization() got detector= and detector settings "
            f"({', '.join(sorted(settings))}): put them in detector=DetectorConfig(...), or "
            f"leave detector out"
        )
    kind = labels.media_type(sample_collection)
    problems = check_targets(
        sample_collection, output_field, residual_field, uncovered_field, gt_field, eval_key
    )
    if problems:
        raise ValueError(next(iter(problems.values())))
    recipes = copies.AnonymizeRecipe.read_all(sample_collection, output_field)
    recipe = recipes[""]  # the latest
    if kind == "video":
        return _audit_videos(
            sample_collection,
            recipes,
            output_field,
            residual_field,
            tag,
            detector or audit_detector(sample_collection, recipe, **settings),
            min_covered,
            every,
            progress,
        )
    label_fields = _label_fields_present(sample_collection, recipes, gt_field)
    detector = detector or audit_detector(sample_collection, recipe, **settings)
    config, built, run_options = engine.prepare(detector, **engine_options)
    if progress is not None:  # a heartbeat: loading the models can take a while
        progress(0.0, "models loaded")
    dataset = sample_collection._dataset
    has_err = sample_collection.has_field(error_field)
    report = AuditReport(gt_field=gt_field)
    todo = _copies_to_search(
        sample_collection, recipes, output_field, error_field, gt_field, label_fields, report
    )
    _ensure_fields(dataset, residual_field, uncovered_field if gt_field else None)
    results: list[_SampleResult] = []
    second = CropOpinion(device=getattr(config, "device", "auto"))
    for result in with_progress(
        engine.run(todo, engine.Steps(detector=built), run_options), len(todo), "audited", progress
    ):
        sid, path, used, gt, stale, own = result.item.key
        if result.error is not None:
            report.failed[str(result.item.source)] = result.error
            report.failed_ids.append(sid)
            continue
        copy = str(result.item.source)
        results.append(
            _audit_sample(
                sid,
                path,
                result.height,
                result.width,
                result.detections,
                used,
                gt,
                own,
                stale,
                min_covered,
                opinion=lambda dets, copy=copy: second(read_image(copy), dets),
            )
        )

    report.flagged = _store_results(
        sample_collection, results, residual_field, uncovered_field if gt_field else None, tag
    )
    _summarize(report, results, worst)
    if gt_field and results:
        pred_field = pred_field or _default_pred_field(recipe, gt_field, dataset)
        counts: dict[str, dict[str, int]] = {}
        if pred_field is not None:
            audited_view = sample_collection.exists(output_field)
            if has_err:
                audited_view = audited_view.match(F(error_field) == None)  # noqa: E711
            counts = _evaluate(audited_view, gt_field, pred_field, eval_key, recipe)
            report.pred_field, report.eval_key = pred_field, eval_key
        _per_class_rows(report, results, counts)
    report.settings = {
        "output_field": output_field,
        "residual_field": residual_field,
        "possible_field": possible_field(residual_field),
        "tag": tag,
        "uncovered_field": uncovered_field if gt_field else None,
        "eval_key": eval_key if report.eval_key else None,
        "min_covered": min_covered,
        "eval_iou": EVAL_IOU,
        "tiers": {label: asdict(rule) for label, rule in RULES.items()},
        "detector": fields.detection_provenance(config, built),
    }
    _record_audit_provenance(dataset, report, residual_field, uncovered_field if gt_field else None)
    return report


def _label_fields_present(
    sample_collection, recipes: dict[str, copies.AnonymizeRecipe], gt_field: str | None
) -> list[str]:
    """The label fields every recorded recipe obscured; refused when one (or ``gt_field``) is
    gone, since the audit measures each copy against the boxes it was made from."""
    if gt_field is not None and not sample_collection.has_field(gt_field):
        raise ValueError(f"ground-truth field '{gt_field}' is not on the dataset")
    label_fields = list(dict.fromkeys(f for r in recipes.values() for f in r.label_fields))
    missing = [f for f in label_fields if not sample_collection.has_field(f)]
    if missing:
        raise ValueError(f"label field(s) used by anonymize are gone: {missing}")
    return label_fields


def _copies_to_search(
    sample_collection,
    recipes: dict[str, copies.AnonymizeRecipe],
    output_field: str,
    error_field: str,
    gt_field: str | None,
    label_fields: list[str],
    report: AuditReport,
) -> list[engine.Item]:
    """One engine item per existing copy, keyed by what judging it needs (the boxes its own
    recipe obscured, the true boxes, whether it is stale); the samples counted in
    ``report.samples``, those without a copy in ``report.not_anonymized``."""
    fp_field = copies.fingerprint_field(output_field)
    ids, paths, copy_paths, *label_values = sample_collection.values(
        ["id", "filepath", output_field, *label_fields]
    )
    by_field = dict(zip(label_fields, label_values))
    report.samples = len(ids)
    none = [None] * len(ids)
    stored_fps = (
        sample_collection.values(fp_field) if sample_collection.has_field(fp_field) else none
    )
    errors = (
        sample_collection.values(error_field) if sample_collection.has_field(error_field) else none
    )
    truths = sample_collection.values(gt_field) if gt_field else none
    todo = []
    for i, (sid, path, copy) in enumerate(zip(ids, paths, copy_paths)):
        if not copy or errors[i] or not os.path.isfile(copy):
            report.not_anonymized += 1
            continue
        own = copies.recipe_of(recipes, stored_fps[i])  # this copy's recipe
        used = own.boxes([by_field[name][i] for name in own.label_fields])
        gt = labels.from_fo_detections(truths[i], own.classes) if gt_field else []
        stale = stored_fps[i] != own.fingerprint(used, copy)
        todo.append(engine.Item((sid, path, used, gt, stale, own), source=copy))
    return todo


def _store_results(
    sample_collection,
    results: list[_SampleResult],
    residual_field: str,
    uncovered_field: str | None,
    tag: str,
) -> int:
    """Writes each audited sample's residuals (likely and possible apart) and uncovered count,
    tags the samples a reviewer must open and untags the audited rest; returns how many were
    tagged."""
    with database.SampleWriter(sample_collection) as writer:
        for r in results:
            likely, possible = split_tiers(r.residuals)
            values: dict[str, Any] = {
                residual_field: residual_labels(likely),
                possible_field(residual_field): residual_labels(possible),
            }
            if uncovered_field:
                values[uncovered_field] = sum(r.uncovered.values())
            writer.write(r.sid, values)
    flagged = [
        r.sid for r in results if needs_review(r.residuals) or r.stale or any(r.uncovered.values())
    ]
    flagged_set = set(flagged)
    clear = [r.sid for r in results if r.sid not in flagged_set]
    if flagged:
        sample_collection.select(flagged).tag_samples(tag)
    if clear:
        sample_collection.select(clear).untag_samples(tag)
    return len(flagged)


def _summarize(report: AuditReport, results: list[_SampleResult], worst: int) -> None:
    """The report's counts of audited samples, stale copies and residuals per class and tier."""
    report.audited = len(results)
    report.stale = [r.sid for r in results if r.stale]
    report.residual_samples = sum(1 for r in results if r.residuals)
    report.residuals_per_class = Counter(t.detection.label for r in results for t in r.residuals)
    report.likely_per_class = Counter(
        t.detection.label for r in results for t in r.residuals if t.tier == LIKELY
    )
    report.possible_per_class = Counter(
        t.detection.label for r in results for t in r.residuals if t.tier != LIKELY
    )
    report.worst = _worst(results, worst)


def _per_class_rows(
    report: AuditReport, results: list[_SampleResult], counts: dict[str, dict[str, int]]
) -> None:
    """Per class: true boxes, recall (from FiftyOne's evaluation, when run), coverage, residuals."""
    truth_totals: Counter = Counter()
    uncovered_totals: Counter = Counter()
    for r in results:
        truth_totals.update(r.truths)
        uncovered_totals.update(r.uncovered)
    for label in sorted(set(truth_totals) | set(counts)):
        n = truth_totals.get(label, 0)
        row = counts.get(label, {"truths": 0, "tp": 0})
        recall = None
        if report.eval_key is not None:
            recall = row["tp"] / row["truths"] if row["truths"] else 1.0
        report.per_class[label] = {
            "truths": n,
            "recall": recall,
            "coverage": (n - uncovered_totals.get(label, 0)) / n if n else 1.0,
            "uncovered": uncovered_totals.get(label, 0),
            "residuals": report.residuals_per_class.get(label, 0),
        }


def _record_audit_provenance(
    dataset, report: AuditReport, residual_field: str, uncovered_field: str | None
) -> None:
    """What produced the audit's fields, in their ``info``."""
    produced = {"produced_by": fields.AUDIT_PRODUCER, **report.settings}
    fields.record_provenance(
        dataset,
        residual_field,
        "Likely misses: faces and plates found on the anonymized copy outside the obscured "
        "regions that tag the sample for review (fiftyone-anonymizer audit)",
        produced,
    )
    fields.record_provenance(
        dataset,
        possible_field(residual_field),
        "Possible misses: faint or small detections outside the obscured regions, stored "
        "but not tagged; hidden in the App until switched on (fiftyone-anonymizer audit)",
        produced,
    )
    fields.show_review_fields(dataset, residual_field, possible_field(residual_field))
    if uncovered_field:
        fields.record_provenance(
            dataset,
            uncovered_field,
            "True boxes left less than 70 % obscured (fiftyone-anonymizer audit)",
            produced,
        )


def _audit_videos(
    sample_collection,
    recipes,
    output_field,
    residual_field,
    tag,
    detector,
    min_covered,
    every,
    progress,
) -> AuditReport:
    """The audit on video copies (:func:`_search_video_copies`), as an ``AuditReport``."""
    detector = detector or audit_detector(sample_collection, recipes[""])
    counts = _search_video_copies(
        sample_collection,
        recipes,
        output_field,
        residual_field,
        tag,
        detector,
        min_covered,
        every,
        progress,
    )
    report = AuditReport(samples=len(sample_collection))
    report.audited = len(counts["audited"])
    report.flagged = len(counts["flagged"])
    report.residual_samples = report.flagged
    report.likely_per_class = Counter(counts["likely_per_class"])
    report.possible_per_class = Counter(counts["possible_per_class"])
    report.residuals_per_class = report.likely_per_class + report.possible_per_class
    report.failed = dict(counts["failed"])
    report.not_anonymized = report.samples - report.audited - len(report.failed)
    report.settings = {
        "output_field": output_field,
        "residual_field": f"frames.{residual_field}",
        "possible_field": f"frames.{possible_field(residual_field)}",
        "tag": tag,
        "every": every,
        "min_covered": min_covered,
        "detector": counts["detector"],
    }
    dataset = sample_collection._dataset
    produced = {"produced_by": fields.AUDIT_PRODUCER, **report.settings}
    for name, description in (
        (residual_field, "Likely misses on the copy's frames (fiftyone-anonymizer audit)"),
        (
            possible_field(residual_field),
            "Possible misses on the copy's frames, stored but not tagged "
            "(fiftyone-anonymizer audit)",
        ),
    ):
        fields.record_provenance(dataset, f"frames.{name}", description, produced)
    fields.show_review_fields(
        dataset, f"frames.{residual_field}", f"frames.{possible_field(residual_field)}"
    )
    return report


def _search_video_copies(
    sample_collection,
    recipes: dict[str, copies.AnonymizeRecipe],
    output_field: str,
    residual_field: str,
    tag: str,
    detector: Any,
    min_covered: float,
    every: int,
    progress: Progress | None,
) -> dict[str, Any]:
    """The audit on video copies: every ``every``-th frame searched; residuals stored per frame
    (``frames.<residual_field>``), samples with one tagged. Returns the counts."""
    from ..blur import obscured_region
    from ..core.images import LoadedImage
    from ..core.video import iter_frames

    config, built, options = engine.prepare(detector)
    dataset = sample_collection._dataset
    fields.declare_frame_detections_field(dataset, residual_field, fields.RESIDUALS)
    fields.declare_frame_detections_field(
        dataset, possible_field(residual_field), fields.POSSIBLE_RESIDUALS
    )
    fp_field = copies.fingerprint_field(output_field)
    ids, copy_paths, fps = sample_collection.values(["id", output_field, fp_field])
    counts: dict[str, Any] = {
        "audited": [],
        "flagged": [],
        "likely_per_class": {},
        "possible_per_class": {},
        "failed": {},
    }
    second = CropOpinion(device=getattr(config, "device", "auto"))
    for n, (sid, copy, fp) in enumerate(zip(ids, copy_paths, fps)):
        if not copy or not Path(copy).is_file():
            continue
        own = copies.recipe_of(recipes, fp)
        boxes = copies.frame_boxes(sample_collection, sid, own)
        sampled = (
            engine.Item(frame, image=LoadedImage(frame.rgb, "", copy))
            for frame in iter_frames(copy)
            if frame.index % every == 0
        )
        found_frames: dict[int, Any] = {}
        possible_frames: dict[int, Any] = {}
        likely = False
        try:
            for result in engine.run(sampled, engine.Steps(detector=built), options):
                frame = result.item.key
                height, width = frame.rgb.shape[:2]
                used = boxes[frame.index] if frame.index < len(boxes) else []
                mask = np.asarray(obscured_region(height, width, used, own.settings), bool)
                found = [d for d in result.detections if not own.classes or d.label in own.classes]
                left = tier_residuals(found, mask, second.bind(frame.rgb), min_covered=min_covered)
                if left:
                    sure, maybe = split_tiers(left)
                    found_frames[frame.index + 1] = residual_labels(sure)
                    possible_frames[frame.index + 1] = residual_labels(maybe)
                    likely = likely or needs_review(left)
                    for r in left:
                        key = "likely_per_class" if r.tier == LIKELY else "possible_per_class"
                        counts[key][r.detection.label] = counts[key].get(r.detection.label, 0) + 1
        except Exception as exc:
            counts["failed"][copy] = engine.failure_reason(exc)
            continue
        counts["audited"].append(sid)
        for name, frames in (
            (residual_field, found_frames),
            (possible_field(residual_field), possible_frames),
        ):
            # every audited frame gets its value (an empty one clears an earlier audit's)
            cleared = {i + 1: residual_labels([]) for i in range(0, len(boxes), every)}
            sample_collection.select(sid).set_values(
                f"frames.{name}", {sid: {**cleared, **frames}}, key_field="id"
            )
        if likely:
            counts["flagged"].append(sid)
        notify_progress(progress, n + 1, len(ids), "audited")
    flagged = counts["flagged"]
    if flagged:
        sample_collection.select(flagged).tag_samples(tag)
    clear = [sid for sid in counts["audited"] if sid not in set(flagged)]
    if clear:
        sample_collection.select(clear).untag_samples(tag)
    counts["detector"] = fields.detection_provenance(config, built)
    return counts
