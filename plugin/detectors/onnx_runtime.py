"""onnxruntime sessions shared by the ONNX backends: provider choice, quiet logs, model fix-ups.

``onnxruntime`` and ``onnx`` are imported inside the functions so that importing the detectors
package stays cheap (the FiftyOne App imports it at start-up).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16


def providers_for(device: str = "auto") -> list[str]:
    """Execution providers for ``device`` ("auto", "cpu", "cuda"/"gpu").

    "auto" takes CUDA when the installed onnxruntime offers it (onnxruntime-gpu), else the CPU.
    Asking for "cuda" where it is not available raises instead of silently running on the CPU.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    device = device.lower()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in ("cuda", "gpu") or device.startswith("cuda:"):
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError(
                f"device={device!r} but onnxruntime offers only {available}; "
                "install onnxruntime-gpu instead of onnxruntime for CUDA."
            )
        if ":" in device:
            return [("CUDAExecutionProvider", {"device_id": int(device.split(":")[1])}),
                    "CPUExecutionProvider"]  # type: ignore[list-item]
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(model: bytes | str | Path, device: str = "auto") -> Any:
    """An ``InferenceSession`` with warnings silenced (severity 3: errors only).

    The CenterFace file otherwise prints hundreds of harmless "unused initializer" warnings.
    Intra-op threads follow ``$FO_ANONYMIZER_THREADS`` when set (useful on shared machines).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = os.environ.get("FO_ANONYMIZER_THREADS")
    if threads:
        options.intra_op_num_threads = int(threads)
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=providers_for(device))


def session_provider(session: Any) -> str:
    return session.get_providers()[0]


def dynamic_input_model(path: Path | bytes, input_dims: dict[str, list],
                        output_dims: dict[str, list]) -> bytes:
    """Serialized copy of the model (a file or serialized bytes) whose input/output dims are
    replaced (names for dynamic axes).

    CenterFace's file declares a fixed 10x3x32x32 input although its graph is fully
    convolutional; onnxruntime rejects other shapes unless the declaration is relaxed.
    """
    model = _load_model(path)
    for values, dims in ((model.graph.input, input_dims), (model.graph.output, output_dims)):
        for value in values:
            if value.name not in dims:
                continue
            shape = value.type.tensor_type.shape
            for dim, new in zip(shape.dim, dims[value.name], strict=True):
                if isinstance(new, str):
                    dim.ClearField("dim_value")
                    dim.dim_param = new
                else:
                    dim.ClearField("dim_param")
                    dim.dim_value = int(new)
    del model.graph.value_info[:]  # stale intermediate shapes would contradict the new ones
    return model.SerializeToString()


def float16_to_float32(path: Path) -> bytes:
    """Serialized float32 copy of a float16 model: initializers, constants, casts and I/O.

    CPUs have no fast float16 convolution, so onnxruntime either falls back to slow kernels or
    inserts casts around every node; converting the weights once at load time avoids both.
    The arithmetic is then float32 throughout (slightly *more* precise than the original).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph

    def convert_tensor(tensor: Any) -> None:
        if tensor.data_type == _FLOAT16:
            array = numpy_helper.to_array(tensor).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))

    for init in graph.initializer:
        convert_tensor(init)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                convert_tensor(attr.t)
            elif attr.type == onnx.AttributeProto.TENSORS:
                for t in attr.tensors:
                    convert_tensor(t)
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == _FLOAT16:
                attr.i = _FLOAT
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type == _FLOAT16:
            tensor_type.elem_type = _FLOAT
    return model.SerializeToString()


def keep_outputs(model: bytes | Path, outputs: list[str]) -> bytes:
    """Serialized copy of ``model`` pruned to the nodes that ``outputs`` depend on.

    onnxruntime computes every node of a graph even when a call asks for fewer outputs; the
    YOLOv8-seg plate model spends about a quarter of its time on mask prototypes we never use.
    """
    from onnx import utils

    proto = _load_model(model)
    inputs = [i.name for i in proto.graph.input]
    return utils.Extractor(proto).extract_model(inputs, outputs).SerializeToString()


def _load_model(source: Path | bytes) -> Any:
    """An ``onnx.ModelProto`` from a file or from serialized bytes (an earlier rewrite)."""
    import onnx

    return onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(source))
