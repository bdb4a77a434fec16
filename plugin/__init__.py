"""FiftyOne anonymizer: find faces and licence plates, store them as labels, write blurred copies.

Importable as ``fiftyone_anonymizer`` from Python (no App needed); FiftyOne's plugin loader
reads this same file through ``fiftyone.yml`` and calls :func:`register`.
Heavy modules (TensorFlow, onnxruntime) are imported only when first used, so the App starts fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

_PACKAGE = "fiftyone_anonymizer"

if __name__ != _PACKAGE:
    # Loaded by FiftyOne's plugin loader straight from this file, under a synthetic module name.
    # Bind this folder as the real package (unless it is already imported) so that every module
    # exists once, whether the App, a delegated worker or a user's script imports it.
    _here = Path(__file__).resolve().parent
    _pkg = sys.modules.get(_PACKAGE)
    if _pkg is None:
        _spec = importlib.util.spec_from_file_location(
            _PACKAGE, _here / "__init__.py", submodule_search_locations=[str(_here)]
        )
        if _spec is None or _spec.loader is None:
            raise ImportError(f"cannot load {_PACKAGE} from {_here}")
        _pkg = importlib.util.module_from_spec(_spec)
        sys.modules[_PACKAGE] = _pkg
        _spec.loader.exec_module(_pkg)
    register = _pkg.register
else:
    __version__ = "0.1.0"

    # Public API, resolved lazily: name -> module that defines it.
    _EXPORTS = {
        "Detection": "core.boxes",
        "BlurSettings": "blur",
        "anonymize_image": "blur",
        "anonymize_batch": "blur",
        "read_image": "core.images",
        "build_detector": "detectors",
        "DetectorConfig": "detectors",
        "detect_faces_and_plates": "jobs.detect",
        "anonymize_images": "jobs.anonymize",
        "share_anonymized": "jobs.share",
        "audit_anonymization": "jobs.audit",
        "anonymization_status": "jobs.status",
        "load_model": "models",
        "AnonymizerModel": "models",
    }

    def __getattr__(name: str):
        if name in _EXPORTS:
            module = importlib.import_module(f"{_PACKAGE}.{_EXPORTS[name]}")
            return getattr(module, name)
        raise AttributeError(f"module {_PACKAGE!r} has no attribute {name!r}")

    def register(p) -> None:
        """Called by FiftyOne's plugin loader: register every operator and panel."""
        from . import app

        for operator_cls in app.OPERATORS:
            p.register(operator_cls)
        for panel_cls in app.PANELS:
            p.register(panel_cls)
