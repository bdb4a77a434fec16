"""onnxruntime sessions shared by the ONNX backends: provider choice, quiet logs, model fix-ups.

``onnxruntime`` and ``onnx`` are imported inside the functions so that importing the detectors
package stays cheap (the FiftyOne App imports it at start-up).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16


def providers_for(device: str = "auto") -> list[str | tuple[str, dict[str, Any]]]:
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
            return [
                ("CUDAExecutionProvider", {"device_id": int(device.split(":")[1])}),
                "CPUExecutionProvider",
            ]
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


#: The user's setting of onnxruntime's threads per call (useful on shared machines).
THREADS_ENV = "FO_ANONYMIZER_THREADS"
_threads: int | None = None  # chosen by the engine (``set_session_threads``)


def set_session_threads(threads: int | None) -> None:
    """onnxruntime intra-op threads of the sessions made from now on (None: the user's
    ``$FO_ANONYMIZER_THREADS``, else onnxruntime's own default). The engine sets it before
    the models load (``engine.configure_threads``)."""
    global _threads
    _threads = threads


def session_threads() -> int | None:
    """The intra-op threads a new session gets (see :func:`set_session_threads`)."""
    if _threads is not None:
        return _threads
    given = os.environ.get(THREADS_ENV)
    return int(given) if given else None


def make_session(model: bytes | str | Path, device: str = "auto", arena: bool = True) -> Any:
    """An ``InferenceSession`` with warnings silenced (severity 3: errors only).

    The CenterFace file otherwise prints hundreds of harmless "unused initializer" warnings.
    Intra-op threads: :func:`session_threads`.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = arena
    threads = session_threads()
    if threads:
        options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=providers_for(device))


# While this is set (see ``arena_free``), sessions run in a twin without onnxruntime's memory
# arena, so that what a very large photo's look needed (CenterFace at 1920 x 1920: about
# 0.6 GB) goes back to the system before that photo is decoded in full. The arena's run-time
# shrinkage option did not return it. Ordinary photos keep the arena: without it CenterFace
# was 25-50 % slower (1080p 245 -> 370 ms, 4000 x 3000 402 -> 525 ms on this 2-core CPU).
_ARENA_FREE = contextvars.ContextVar("fo_anonymizer_arena_free", default=False)


@contextlib.contextmanager
def arena_free() -> Iterator[None]:
    """Within this block (in this thread), ONNX sessions hand their working memory back."""
    token = _ARENA_FREE.set(True)
    try:
        yield
    finally:
        _ARENA_FREE.reset(token)


class ArenaBoundedSession:
    """An ``InferenceSession`` that can run without keeping its memory (see ``arena_free``).

    Args:
        model: the ONNX model (path or serialized bytes)
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
    """

    def __init__(self, model: bytes | str | Path, device: str = "auto") -> None:
        self.model, self.device = model, device  # kept to build the twin on first need
        self.session = make_session(model, device)
        self._on_cpu = session_provider(self.session) == "CPUExecutionProvider"
        self._twin: Any = None
        self._twin_lock = threading.Lock()  # detect workers may reach a large photo at once

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list:
        """``InferenceSession.run``, in the arena-free twin inside ``arena_free()``."""
        if not (_ARENA_FREE.get() and self._on_cpu):
            return self.session.run(outputs, feeds)
        with self._twin_lock:
            if self._twin is None:
                self._twin = make_session(self.model, self.device, arena=False)
        try:
            return self._twin.run(outputs, feeds)
        finally:
            # A huge photo's tiles run the twin a thousand times: hand each run's freed
            # working memory back, so the heap does not grow with the tiles' count.
            _trim_heap()

    def __getattr__(self, name: str) -> Any:  # get_inputs, get_providers, ...
        if name == "session":
            raise AttributeError(name)
        return getattr(self.session, name)


def _trim_heap() -> None:
    """Returns freed heap pages to the system where glibc allows it (a no-op elsewhere)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
        except OSError:  # not glibc (macOS, Windows, musl): nothing to trim
            _libc = False
    if _libc:
        with contextlib.suppress(AttributeError):
            _libc.malloc_trim(0)


_libc: Any = None


def session_provider(session: Any) -> str:
    return session.get_providers()[0]


def dynamic_input_model(
    path: Path | bytes, input_dims: dict[str, list], output_dims: dict[str, list]
) -> bytes:
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
    # The real inputs only: older exporters (CenterFace's) also list every initializer, and
    # some declared inputs feed nothing, which would stay behind as required feeds.
    weights = {init.name for init in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in weights]
    return utils.Extractor(proto).extract_model(inputs, outputs).SerializeToString()


def convert_opset(model: bytes | Path, version: int) -> bytes:
    """Serialized copy of ``model`` converted to opset ``version`` (no-op when it already is).

    Quantization needs opset 13 at least (per-channel QuantizeLinear/DequantizeLinear);
    CenterFace ships as opset 9. The arithmetic is unchanged.
    """
    from onnx import version_converter

    proto = _load_model(model)
    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), version)
    if current >= version:
        return proto.SerializeToString()
    return version_converter.convert_version(proto, version).SerializeToString()


def _load_model(source: Path | bytes) -> Any:
    """An ``onnx.ModelProto`` from a file or from serialized bytes (an earlier rewrite)."""
    import onnx

    return onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(source))


def name_nodes(model: bytes | Path) -> bytes:
    """Serialized copy of ``model`` in which every unnamed node is called after its op and
    first output (``Conv:365``), so quantization can keep chosen nodes in float by name.

    Output names are unique within a graph, so the names are too, and the same source file
    always gives the same names.
    """
    proto = _load_model(model)
    for node in proto.graph.node:
        if not node.name:
            node.name = f"{node.op_type}:{node.output[0]}"
    return proto.SerializeToString()


def fold_batch_norms(model: bytes | Path) -> bytes:
    """Serialized copy of ``model`` with each BatchNormalization that directly follows a
    ConvTranspose (and is its only consumer) folded into it: scaled weights and a bias.

    onnxruntime folds batch norms into Conv at load time but not into ConvTranspose; left in,
    each stays a float island between dequantize and quantize nodes in the int8 graph.
    """
    from onnx import numpy_helper

    proto = _load_model(model)
    graph = proto.graph
    inits = {init.name: init for init in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    producer = {out: node for node in graph.node for out in node.output}
    drop = []
    for bn in graph.node:
        conv = producer.get(bn.input[0]) if bn.op_type == "BatchNormalization" else None
        if (
            conv is None
            or conv.op_type != "ConvTranspose"
            or consumers[bn.input[0]] != 1
            or not all(name in inits for name in bn.input[1:5])
            or conv.input[1] not in inits
            or consumers[conv.input[1]] != 1
            or len(bn.output) != 1
        ):
            continue
        group = next((a.i for a in conv.attribute if a.name == "group"), 1)
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (
            numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5]
        )
        factor = gamma / np.sqrt(var + eps)
        weight = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        # ConvTranspose weights are [C_in, C_out / group, kH, kW]; output channel
        # o = g * (C_out / group) + j sits at [g * C_in / group + i, j] for each group g.
        c_in, per_group = weight.shape[:2]
        w = weight.reshape(group, c_in // group, per_group, *weight.shape[2:])
        w = w * factor.reshape(group, 1, per_group, *([1] * (weight.ndim - 2)))
        bias = (
            numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
            if len(conv.input) > 2
            else 0.0
        )
        new_bias = (bias - mean) * factor + beta
        inits[conv.input[1]].CopyFrom(
            numpy_helper.from_array(w.reshape(weight.shape).astype(np.float32), conv.input[1])
        )
        bias_name = f"{conv.name or conv.output[0]}:folded_bias"
        graph.initializer.append(numpy_helper.from_array(new_bias.astype(np.float32), bias_name))
        del conv.input[2:]
        conv.input.append(bias_name)
        conv.output[0] = bn.output[0]
        drop.append(bn)
    for bn in drop:
        graph.node.remove(bn)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return proto.SerializeToString()
