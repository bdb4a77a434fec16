"""FiftyOne Enterprise's own fan-out: detect, anonymize and audit declare
``allow_distributed_execution`` and work from ``ctx.target_view()``, so the platform can call
``execute`` once per batch of samples; open-source FiftyOne keeps the flag off and our shards.

Enterprise is not available here. What it changes for an operator is that ``OperatorConfig``
and ``ExecutionOptions`` keep the flag as declared (open source forces it to False: the
"Enterprise only" lines of fiftyone/operators/operator.py and executor.py), and that
``execute`` receives each batch as the target view. The first is emulated by two subclasses
that keep the flag; the second is a real ``execute`` on a view of a slice.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import PLUGIN_NAME

SPLIT_BY_SAMPLES = {"detect_faces_and_plates", "anonymize_images", "audit_anonymization"}


def _context(params: dict, **request):
    from fiftyone.operators.executor import ExecutionContext

    return ExecutionContext(request_params={"params": params, **request})


def _operators():
    from fiftyone_anonymizer import app as ops

    return {cls().config.name: cls() for cls in ops.OPERATORS}


@pytest.fixture
def enterprise_like(monkeypatch):
    """``OperatorConfig`` and ``ExecutionOptions`` keeping the distributed flag as declared."""
    import fiftyone.operators as foo
    import fiftyone.operators.executor as executor

    class Config(foo.OperatorConfig):
        def __init__(self, name, allow_distributed_execution=False, **kwargs):
            super().__init__(name, **kwargs)
            self.allow_distributed_execution = allow_distributed_execution

    class Options(executor.ExecutionOptions):
        def __init__(self, allow_distributed_execution=False, **kwargs):
            super().__init__(**kwargs)
            self._allow_distributed_execution = allow_distributed_execution

    monkeypatch.setattr(foo, "OperatorConfig", Config)
    monkeypatch.setattr(executor, "ExecutionOptions", Options)


def test_open_source_keeps_the_flag_off_and_our_shards():
    from fiftyone_anonymizer.app.run import _own_shards

    for name, op in _operators().items():
        assert op.config.allow_distributed_execution is False, name
        options = op.resolve_execution_options(_context({}))
        assert options.allow_distributed_execution is False, name
        assert options.allow_delegated_execution == (
            name in SPLIT_BY_SAMPLES | {"share_anonymized"}
        )
    assert _own_shards(_context({"shards": 3}))
    assert not _own_shards(_context({"shards": 1}))
    assert not _own_shards(_context({}))


def test_enterprise_fans_out_the_jobs_that_split_by_samples(enterprise_like):
    from fiftyone_anonymizer.app.run import _own_shards

    operators = _operators()
    distributed = {name for name, op in operators.items() if op.config.allow_distributed_execution}
    assert distributed == SPLIT_BY_SAMPLES
    for name in SPLIT_BY_SAMPLES:
        options = operators[name].resolve_execution_options(_context({}))
        assert options.allow_distributed_execution and options.allow_delegated_execution, name
    # an audit with ground truth is one evaluation over the whole view: not split
    audit = operators["audit_anonymization"]
    gt = audit.resolve_execution_options(_context({"gt_field": "ground_truth"}))
    assert not gt.allow_distributed_execution and gt.allow_delegated_execution
    # a batch of the platform's fan-out does not shard again
    assert not _own_shards(_context({"shards": 3}, num_distributed_tasks=4))


@pytest.mark.models
def test_execute_on_a_slice_writes_exactly_that_slice(make_dataset, tmp_path, astronaut):
    """Each job run as one batch would be: ``execute`` with a view of some of the samples
    (what the platform hands each batch) writes those samples and no other."""
    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone import ViewField as F

    src = tmp_path / "src"
    src.mkdir()
    paths = []
    for i in range(5):
        path = src / f"photo{i}.jpg"
        Image.fromarray(np.roll(astronaut, 7 * i, axis=1)).save(path, quality=92)
        paths.append(path)
    dataset = make_dataset([fo.Sample(filepath=str(p)) for p in paths])
    ids = dataset.values("id")

    def execute(name: str, batch: list[str], params: dict) -> dict:
        result = foo.execute_operator(
            f"{PLUGIN_NAME}/{name}", {"view": dataset.select(batch), "params": params}
        )
        result.raise_exceptions()
        return result.result

    def written(field: str) -> set[str]:
        return set(dataset.match(F(field) != None).values("id"))  # noqa: E711

    detect_batch, anonymize_batch, audit_batch = ids[1:4], ids[1:3], ids[2:3]
    report = execute("detect_faces_and_plates", detect_batch, {"label_field": "found"})
    assert report["processed"] == 3 and written("found") == set(detect_batch)

    out = tmp_path / "out"
    report = execute(
        "anonymize_images",
        anonymize_batch,
        {"output_dir": str(out), "label_fields": ["found"], "output_field": "copy"},
    )
    assert report["processed"] == 2 and written("copy") == set(anonymize_batch)
    assert sorted(p.name for p in out.rglob("*.jpg")) == ["photo1.jpg", "photo2.jpg"]

    report = execute(
        "audit_anonymization",
        audit_batch,
        {"output_field": "copy", "residual_field": "residual"},
    )
    assert report["audited"] == 1 and written("residual") == set(audit_batch)
