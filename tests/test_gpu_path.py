"""The GPU path, with onnxruntime's CPU provider standing in for CUDA.

No GPU is lent to this project's CI, so these tests make onnxruntime *report* a CUDA provider
and record what the code asks of it, while the sessions really run on the CPU. They show that
``device="cuda"`` (and ``"auto"`` where CUDA is offered) takes the GPU code path end to end: CUDA
requested first, the backends' GPU precisions (no int8), batches of 8 with one detector call at
a time, and detections equal to the CPU path's at the same precision.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

pytestmark = pytest.mark.models

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class _CudaStandIn:
    """Sessions asked for CUDA run on the CPU but report the providers they were asked for."""

    def __init__(self, ort):
        self.real = ort.InferenceSession
        self.requested: list[list] = []

    def __call__(self, model, sess_options=None, providers=None, **kwargs):
        self.requested.append(list(providers or []))
        session = self.real(model, sess_options=sess_options, providers=[CPU])
        names = [p[0] if isinstance(p, tuple) else p for p in providers or [CPU]]
        return _Reporting(session, names)


class _Reporting:
    def __init__(self, session, providers):
        self._session, self._providers = session, providers

    def get_providers(self):
        return self._providers

    def __getattr__(self, name):
        return getattr(self._session, name)


@pytest.fixture
def cuda_stand_in(monkeypatch):
    import onnxruntime as ort

    from fiftyone_anonymizer import detectors

    stand_in = _CudaStandIn(ort)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", stand_in)
    monkeypatch.setattr(detectors, "_BUILT", OrderedDict())  # no detector built before the patch
    monkeypatch.delenv("FO_ANONYMIZER_THREADS", raising=False)
    return stand_in


def _faces_image() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def test_cuda_device_asks_for_cuda_and_keeps_gpu_precisions(cuda_stand_in):
    from fiftyone_anonymizer.detectors import DetectorConfig
    from fiftyone_anonymizer.engine import prepare, uses_gpu

    config = DetectorConfig(device="cuda")
    _, built, options = prepare(config)
    assert cuda_stand_in.requested, "no session was created"
    assert all(p and p[0] == CUDA for p in cuda_stand_in.requested), cuda_stand_in.requested
    assert uses_gpu(built)
    precisions = {b.name: b.precision for b in built.backends}
    assert "int8" not in precisions.values(), precisions  # int8 is the CPU's choice only
    assert (options.batch_size, options.detect_workers) == (8, 1)
    found = built.detect([_faces_image()] * 2)
    assert [d.label for d in found[0]] == [d.label for d in found[1]]
    assert any(d.label == "face" for d in found[0])


def test_auto_takes_the_gpu_when_onnxruntime_offers_it(cuda_stand_in):
    from fiftyone_anonymizer.detectors import DetectorConfig
    from fiftyone_anonymizer.engine import prepare, uses_gpu

    _, built, options = prepare(DetectorConfig(device="auto"))
    assert uses_gpu(built)
    assert (options.batch_size, options.detect_workers) == (8, 1)


def test_the_gpu_path_finds_what_the_cpu_path_finds(cuda_stand_in, monkeypatch):
    """Same precision on both paths: the same boxes (the GPU path only batches differently)."""
    import onnxruntime as ort

    from fiftyone_anonymizer.detectors import DetectorConfig

    image = _faces_image()
    on_gpu = DetectorConfig(device="cuda", precision="float32").build().detect([image, image])
    monkeypatch.setattr(ort, "InferenceSession", cuda_stand_in.real)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    on_cpu = DetectorConfig(device="cpu", precision="float32").build().detect([image])[0]
    for found in on_gpu:
        assert len(found) == len(on_cpu)
        for a, b in zip(sorted(found, key=lambda d: d.box), sorted(on_cpu, key=lambda d: d.box)):
            assert a.label == b.label
            assert np.allclose(a.box, b.box, atol=1e-3) and abs(a.score - b.score) < 1e-3


def test_thread_counts_reach_the_sessions_without_touching_the_environment(monkeypatch):
    """The engine hands onnxruntime its threads per call directly (no environment variable
    written); an explicit count wins over the user's $FO_ANONYMIZER_THREADS, which wins over
    the engine's own share of the cores; on a GPU onnxruntime keeps its default."""
    import os

    from fiftyone_anonymizer import engine
    from fiftyone_anonymizer.detectors import onnx_runtime

    monkeypatch.setattr(onnx_runtime, "_threads", None)
    monkeypatch.delenv("FO_ANONYMIZER_THREADS", raising=False)
    options = engine.default_options("cpu", cpus=4)
    engine.configure_threads(options)
    assert onnx_runtime.session_threads() == engine.intra_op_threads(options)
    assert "FO_ANONYMIZER_THREADS" not in os.environ
    monkeypatch.setenv("FO_ANONYMIZER_THREADS", "3")
    engine.configure_threads(options)
    assert onnx_runtime.session_threads() == 3
    engine.configure_threads(options, threads=5)
    assert onnx_runtime.session_threads() == 5
    session = onnx_runtime.make_session(_tiny_model(), "cpu")
    assert session.get_session_options().intra_op_num_threads == 5
    monkeypatch.delenv("FO_ANONYMIZER_THREADS")
    engine.configure_threads(options, device="cuda")
    assert onnx_runtime.session_threads() is None


def _tiny_model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
