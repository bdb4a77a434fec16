"""Where copies may go: one output-folder rule for every front end (form, SDK, command line).

A copy must never replace or sit among originals: an output folder inside any folder that holds
source media would mix copies into the tree a user shares or backs up as "the originals", and a
later run could read the copies as inputs. System folders are refused outright.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

#: Folders no job may write copies into (nor be asked to: a typo like "/" must not start a job).
SYSTEM_FOLDERS = frozenset(
    {
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
        "/Users",
        "/Volumes",
        "/System",
        "/Library",
        "/Applications",
        "/private",
    }
)


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def source_folders(source_paths: Iterable[str | os.PathLike]) -> set[Path]:
    """The folders (resolved) that hold the given source files."""
    return {_real(p).parent for p in source_paths}


def output_dir_problem(
    output_dir: str | os.PathLike, folders: Iterable[str | os.PathLike]
) -> str | None:
    """Why copies may not go to ``output_dir``, or None when they may.

    Args:
        output_dir: the folder asked for
        folders: the folders holding the job's source media (see :func:`source_folders`), or
            the input folder of a folder job (every folder under it holds sources)

    Returns:
        a one-line reason naming the folder, or None
    """
    out = _real(output_dir)
    if str(out) in SYSTEM_FOLDERS or out == _real(Path.home()):
        return f"the output folder {out} is a system or home folder; choose a folder of its own"
    for folder in sorted({_real(f) for f in folders}):
        if out == folder:
            return (
                f"the output folder {out} is a source folder: copies would replace or sit "
                f"among the originals"
            )
        if folder in out.parents:
            return (
                f"the output folder {out} is inside the source folder {folder}: copies would "
                f"sit among the originals; choose a folder beside it"
            )
    if out.exists() and not out.is_dir():
        return f"the output folder {out} is a file, not a folder"
    return None


def common_root(paths: Sequence[str]) -> Path:
    """The deepest folder holding every one of ``paths``."""
    dirs = {os.path.dirname(os.path.abspath(p)) for p in paths}
    return Path(os.path.commonpath(list(dirs))) if dirs else Path("/")


def mirrored_path(source: str | os.PathLike, source_root: Path, output_dir: Path) -> Path:
    """``source``'s place under ``output_dir``, mirroring its path relative to ``source_root``
    (files outside the root keep their whole path, so no two copies collide)."""
    rel = os.path.relpath(os.path.abspath(source), source_root)
    if rel.startswith(".."):
        rel = os.path.abspath(source).lstrip(os.sep)
    return output_dir / rel


#: Below this much free space an output folder is refused up front (a job that would fail on
#: its first copies should not start).
MIN_FREE_BYTES = 64 * 1024 * 1024


def output_dir_unwritable(output_dir: str | os.PathLike) -> str | None:
    """Why no copy could be written into ``output_dir`` (it cannot be created, is read-only,
    or its disk is full), or None. Creates the folder: a job calls this just before it starts.
    """
    out = Path(output_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".anonymizer-probe-")
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
        free = shutil.disk_usage(out).free
    except OSError as exc:
        return f"cannot write into the output folder {out}: {exc.strerror or exc}"
    if free < MIN_FREE_BYTES:
        return (
            f"only {free / 2**20:.0f} MB free on the disk of the output folder {out}; "
            f"free some space first"
        )
    return None
