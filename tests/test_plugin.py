"""The plugin as FiftyOne sees it: manifest, loader, operator registry, embedded database."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from conftest import PLUGIN_NAME, REPO_ROOT

EXPECTED = {
    "detect_faces_and_plates",
    "anonymize_images",
    "share_anonymized",
    "audit_anonymization",
}


def test_manifest_declares_every_operator_the_code_registers():
    from fiftyone_anonymizer import app as ops

    meta = yaml.safe_load((REPO_ROOT / "fiftyone.yml").read_text())
    assert meta["name"] == PLUGIN_NAME
    assert (REPO_ROOT / meta["py_entry"]).is_file()
    registered = {cls().config.name for cls in ops.OPERATORS}
    assert set(meta["operators"]) == registered
    assert registered >= EXPECTED - {"audit_anonymization"}


def test_operators_are_found_through_fiftyones_registry(make_dataset):
    import fiftyone as fo
    import fiftyone.operators as foo
    import fiftyone.plugins as fop

    dataset = make_dataset([fo.Sample(filepath="/nonexistent/a.jpg")])
    assert dataset.count() == 1  # the embedded database really runs

    plugin = fop.get_plugin(PLUGIN_NAME)
    assert Path(plugin.directory).resolve() == REPO_ROOT
    uris = {op.uri for op in foo.list_operators(builtin=False)}
    meta = yaml.safe_load((REPO_ROOT / "fiftyone.yml").read_text())
    for name in meta["operators"]:
        assert f"{PLUGIN_NAME}/{name}" in uris
    op = foo.get_operator(f"{PLUGIN_NAME}/anonymize_images")
    assert op.config.allow_delegated_execution
    for name in meta["panels"]:  # panels are operators too, registered the same way
        assert f"{PLUGIN_NAME}/{name}" in uris

    # The loader bound the checkout's plugin/ folder as the one fiftyone_anonymizer package:
    # the operator classes it registered are the ones Python imports (no second copy).
    from fiftyone_anonymizer import app as ops

    assert type(op) in ops.OPERATORS
    assert (
        Path(sys.modules["fiftyone_anonymizer"].__file__).resolve()
        == REPO_ROOT / "plugin" / "__init__.py"
    )
