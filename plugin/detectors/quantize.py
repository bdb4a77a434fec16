"""int8 copies of the ONNX detectors, built on the user's machine from committed range tables.

Static quantization needs the range of every activation. Those ranges were measured once on
real photos by ``scripts/calibrate_int8.py`` and committed as small JSON tables
(``models/<model>-int8.json``), so building an int8 model here needs no images and takes a few
seconds: the fetched float model is rewritten exactly as the float backend rewrites it
(the ``prepare_graph`` the backend passes in), then quantized in QDQ form (uint8 activations, int8 weights,
per channel where the table says so; nodes the table lists stay in float) by onnxruntime's own
quantizer. The result is cached beside the fetched weights under a name that carries a hash
of everything it was made from (source model, table, onnx and onnxruntime versions), so a new
table or a new runtime gives a new file; derived weights are never committed or downloaded.

    python -m fiftyone_anonymizer.detectors      # build and cache both int8 models

This module knows no backend: each backend hands it the function that prepares its float
graph, so the arrows point one way (backends -> quantize).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "INT8_MODELS",
    "QuantizeError",
    "int8_model",
    "load_table",
    "quantize_graph",
    "table_path",
]

#: Models with a committed range table, i.e. with an int8 variant.
INT8_MODELS = ("centerface", "yolov8-plates")

#: Bumped when the code that turns a table into a model changes its output (part of the hash).
RECIPE = "qdq-u8s8-1"


class QuantizeError(RuntimeError):
    """An int8 model cannot be built (no table for this model file, or an incomplete table)."""


def table_path(name: str) -> Path:
    """``models/<name>-int8.json``, beside the manifest."""
    from ..core.weights import manifest_path

    return manifest_path().parent / f"{name}-int8.json"


def load_table(name: str) -> dict[str, Any]:
    """The committed range table of model ``name`` (see ``scripts/calibrate_int8.py``)."""
    if name not in INT8_MODELS:
        raise QuantizeError(f"no int8 variant of {name!r}; there is one of {INT8_MODELS}")
    path = table_path(name)
    if not path.is_file():
        raise QuantizeError(f"{path} is missing; run scripts/calibrate_int8.py --model {name}")
    return json.loads(path.read_text())


def quantize_graph(model: bytes, table: dict[str, Any]) -> bytes:
    """QDQ int8 copy of the serialized float ``model`` with the activation ranges of ``table``.

    Args:
        model: a float32 graph, as the backend's ``prepare_graph`` returns it.
        table: ``{"ranges": {tensor: [low, high]}, "per_channel": bool, "float_nodes": [...]}``.
    """
    import numpy as np
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    proto = onnx.shape_inference.infer_shapes(onnx.load_from_string(model))
    produced = {out for node in proto.graph.node for out in node.output}
    produced |= {value.name for value in proto.graph.input}
    missing = sorted(produced - set(table["ranges"]) - _integer_tensors(proto))
    if missing:
        raise QuantizeError(
            f"the range table has no entry for {len(missing)} tensors of the "
            f"graph, e.g. {missing[:3]}; it was made for another graph"
        )
    ranges = TensorsData(
        CalibrationMethod.MinMax,
        {
            name: TensorData(lowest=np.float32(low), highest=np.float32(high))
            for name, (low, high) in table["ranges"].items()
            if name in produced
        },
    )
    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # all it can (as quantize_static)
    quantizer = QDQQuantizer(
        proto,
        bool(table["per_channel"]),
        False,
        QuantType.QInt8,
        QuantType.QUInt8,
        ranges,
        [],
        list(table.get("float_nodes", [])),
        op_types,
        {},
    )
    with _quiet_quantizer():
        quantizer.quantize_model()
    return quantizer.model.model.SerializeToString()


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Drop the quantizer's advice-level warnings (it logs through the root logger: "consider
    pre-processing", per-channel axis notes on 1-d weights); they are about its own choices,
    which the tables fix, and would alarm a user on first use."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "quantization" not in record.pathname

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _integer_tensors(proto: Any) -> set[str]:
    """Tensors that are not float (shapes, indices): they have no activation range."""
    floats = (1, 10)  # FLOAT, FLOAT16
    typed = list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input)
    out = {v.name for v in typed if v.type.tensor_type.elem_type not in floats}
    out |= {
        o for node in proto.graph.node if node.op_type in ("Shape", "Constant") for o in node.output
    }
    return out


def int8_model(
    name: str, source: Path, float_graph: Callable[[Path], bytes], cache: Path | None = None
) -> Path:
    """Path of the cached int8 copy of model file ``source``, built from the table if missing.

    Args:
        name: ``"centerface"`` or ``"yolov8-plates"``.
        source: the float model file the table was made for (its sha256 is checked).
        float_graph: the backend's own load-time rewrite of ``source`` into the float32
            graph it runs (its module's ``prepare_graph``).
        cache: folder for the built file (default: the weights cache).

    Raises:
        QuantizeError: no table, or the table was made for a different model file.
    """
    from ..core.weights import derived_file, sha256_of

    table = load_table(name)
    table_bytes = table_path(name).read_bytes()
    source_sha = sha256_of(Path(source))
    if table["source_sha256"] != source_sha:
        raise QuantizeError(
            f"{table_path(name).name} was calibrated for the {name} file with sha256 "
            f"{table['source_sha256'][:12]}, not {source_sha[:12]} ({source}); use "
            "precision='float32' or run scripts/calibrate_int8.py for this file"
        )
    key: list[bytes | str] = [
        RECIPE,
        source_sha,
        table_bytes,
        _version("onnx"),
        _version("onnxruntime"),
    ]
    return derived_file(
        f"{name}-int8",
        key,
        lambda: quantize_graph(float_graph(Path(source)), table),
        cache=cache,
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # onnxruntime-gpu provides the same module
        return metadata.version("onnxruntime-gpu") if package == "onnxruntime" else "none"
