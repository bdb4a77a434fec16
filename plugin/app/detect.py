"""The detect operator: its form and its one call of ``jobs.detect.detect_faces_and_plates``."""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..jobs import fields
from .forms import _detector_inputs, _invalid, _is_video, job_params
from .run import (
    _call,
    _config,
    _job_outputs,
    _run_or_shard,
    _shards_input,
    _summary,
)


def _detect_inputs(ctx, inputs: types.Object) -> None:
    from ..detectors import DEFAULT_THRESHOLDS
    from ..jobs.detect import check_targets
    from ..videos import VIDEO_THRESHOLDS

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
        from ..jobs.detect import detect_faces_and_plates

        view = ctx.target_view()
        params = job_params(detect_faces_and_plates, ctx.params)

        def job(progress):
            report = detect_faces_and_plates(view, **params, progress=progress).to_dict()
            report["summary"] = _summary(
                report, "videos searched" if report.get("media") == "video" else "samples searched"
            )
            return report

        return _run_or_shard(
            ctx, self.uri, job, lambda results: _job_outputs(results), "Detection finished"
        )

    def resolve_output(self, ctx):
        return types.Property(
            _job_outputs(ctx.results or {}), view=types.View(label="Detection finished")
        )
