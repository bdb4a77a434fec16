"""FiftyOne remote model zoo source: the face and plate detectors as zoo models.

This file and ``manifest.json`` beside it make the repository a remote zoo source::

    import fiftyone.zoo as foz

    foz.register_zoo_model_source("https://github.com/fiftyone-anonymizer/fiftyone-anonymizer")
    model = foz.load_zoo_model("fiftyone-anonymizer/faces-and-plates")
    dataset.apply_model(model, label_field="anonymizer_detections")

FiftyOne copies the repository into its zoo folder and calls :func:`download_model` and
:func:`load_model` here; both hand over to the library in ``plugin/``
(``fiftyone_anonymizer.models``). This file is not part of the Python package (that is
``plugin/``) nor of the FiftyOne plugin (``fiftyone.yml`` points at ``plugin/__init__.py``).
"""

import importlib.util
import sys
from pathlib import Path

_PACKAGE = "fiftyone_anonymizer"


def _library():
    """The ``fiftyone_anonymizer`` package: the one already imported in this process, else
    this source's own copy (``plugin/`` beside this file), bound under that name the way the
    FiftyOne plugin binds it, so the code always matches this manifest."""
    package = sys.modules.get(_PACKAGE)
    if package is None:
        folder = Path(__file__).resolve().parent / "plugin"
        spec = importlib.util.spec_from_file_location(
            _PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {_PACKAGE} from {folder}")
        package = importlib.util.module_from_spec(spec)
        sys.modules[_PACKAGE] = package
        try:
            spec.loader.exec_module(package)
        except BaseException:
            del sys.modules[_PACKAGE]
            raise
    return importlib.import_module(f"{_PACKAGE}.models")


def download_model(model_name, model_path):
    """Fetch the model's weights (sha256-checked) and record them at ``model_path``.

    Args:
        model_name: the zoo name, e.g. ``"fiftyone-anonymizer/faces-and-plates"``
        model_path: the file FiftyOne's zoo keeps for the model (its download record)
    """
    _library().download_zoo_model_files(model_name, model_path)


def load_model(model_name, model_path, **kwargs):
    """The model as a ``fiftyone.core.models.Model``.

    Args:
        model_name: the zoo name, e.g. ``"fiftyone-anonymizer/faces"``
        model_path: the file :func:`download_model` wrote
        **kwargs: ``DetectorConfig`` fields, e.g. ``face_threshold=0.1``

    Returns:
        a ``fiftyone_anonymizer.models.AnonymizerModel``
    """
    return _library().load_zoo_model_files(model_name, model_path, **kwargs)
