"""Where copies and exports may go: one folder rule for every front end (form, SDK, command line).

A copy must never replace or sit among originals: an output folder inside any folder that holds
source media (or inside the tree they share) would mix copies into the tree a user shares or
backs up as "the originals", and a later run could read the copies as inputs; an output folder
that holds the sources' tree would mirror copies onto the files around it. System folders, and
anything inside the system's own trees (``/etc``, ``/usr``, ``/root``, ...), are refused
outright. Share's export folder follows the same rule, and must be new or empty.
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


#: Trees that hold the system (or the superuser's home): no folder inside them takes copies.
SYSTEM_TREES = frozenset(
    {
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/snap",
        "/sys",
        "/usr",
        "/var",
        "/System",
        "/Library",
        "/private/etc",
        "/private/var",
    }
)
#: Scratch folders inside those trees that are meant for users' files.
SCRATCH_TREES = frozenset({"/var/tmp", "/private/var/tmp", "/private/var/folders"})


def system_folder_problem(folder: str | os.PathLike, what: str = "output folder") -> str | None:
    """Why ``folder`` is a system folder, lies inside a system tree or is the home folder, or
    None."""
    out = _real(folder)
    if str(out) in SYSTEM_FOLDERS or out == _real(Path.home()):
        return f"the {what} {out} is a system or home folder; choose a folder of its own"
    for tree in (out, *out.parents):
        if str(tree) in SCRATCH_TREES:
            return None
        if str(tree) in SYSTEM_TREES:
            return (
                f"the {what} {out} is inside the system folder {tree}; choose a folder "
                f"beside your data"
            )
    return None


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def source_folders(source_paths: Iterable[str | os.PathLike]) -> set[Path]:
    """The folders (resolved) that hold the given source files, and the tree they share (their
    deepest common folder) unless that is a system or home folder (sources on two disks)."""
    folders = {_real(p).parent for p in source_paths}
    if len(folders) > 1:
        tree = Path(os.path.commonpath([str(f) for f in folders]))
        if system_folder_problem(tree) is None:
            folders.add(tree)
    return folders


def output_dir_problem(
    output_dir: str | os.PathLike,
    folders: Iterable[str | os.PathLike],
    what: str = "output folder",
) -> str | None:
    """Why copies may not go to ``output_dir``, or None when they may.

    Args:
        output_dir: the folder asked for
        folders: the folders holding the job's source media (see :func:`source_folders`), or
            the input folder of a folder job (every folder under it holds sources)
        what: how the folder is named in the reason ("output folder", "export folder")

    Returns:
        a one-line reason naming the folder, or None
    """
    out = _real(output_dir)
    problem = system_folder_problem(out, what)
    if problem:
        return problem
    for folder in sorted({_real(f) for f in folders}):
        if out == folder:
            return (
                f"the {what} {out} is a source folder: its files would replace or sit "
                f"among the originals"
            )
        if folder in out.parents:
            return (
                f"the {what} {out} is inside the source folder {folder}: its files would "
                f"sit among the originals; choose a folder beside it"
            )
        if out in folder.parents:
            return (
                f"the {what} {out} holds the source folder {folder}: files written into it "
                f"could land on the originals around it; choose a folder beside it"
            )
    if out.exists() and not out.is_dir():
        return f"the {what} {out} is a file, not a folder"
    return None


def export_dir_problem(
    export_dir: str | os.PathLike, folders: Iterable[str | os.PathLike]
) -> str | None:
    """Why share may not export into ``export_dir``, or None: :func:`output_dir_problem`'s rule
    (``folders``: the originals' folders and the copies' folder), and the folder must be new
    or empty, so that a failed export can take away everything it wrote."""
    if not os.path.isabs(os.path.expanduser(os.fspath(export_dir))):
        return f"give the export folder as an absolute path, not {os.fspath(export_dir)!r}"
    problem = output_dir_problem(export_dir, folders, what="export folder")
    if problem:
        return problem
    out = _real(export_dir)
    if out.is_dir() and any(out.iterdir()):
        return f"the export folder {out} is not empty; choose a new or empty folder"
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


def distinct_targets(sources: Sequence[str | os.PathLike], targets: Sequence[Path]) -> list[Path]:
    """``targets`` (one per source, e.g. ``x.mp4`` for ``x.webm``) with no two sources on one
    copy: where several sources land on one target, each whose name the target changed keeps
    its own name before the new extension (``x.webm`` -> ``x.webm.mp4``), so ``x.mp4`` and
    ``x.webm`` in one folder get two copies.

    Raises:
        ValueError: two sources would still share a copy (naming both)
    """
    owners: dict[str, set[str]] = {}
    for source, target in zip(sources, targets, strict=True):
        owners.setdefault(os.path.normcase(os.fspath(target)), set()).add(os.fspath(source))
    out = []
    for source, target in zip(sources, targets):
        name = Path(source).name
        if len(owners[os.path.normcase(os.fspath(target))]) > 1 and target.name != name:
            target = target.with_name(name + target.suffix)
        out.append(target)
    taken: dict[str, str] = {}
    for source, target in zip(sources, out):
        key = os.path.normcase(os.fspath(target))
        other = taken.setdefault(key, os.fspath(source))
        if other != os.fspath(source):
            raise ValueError(
                f"{other} and {os.fspath(source)} would both be copied to {target}; rename one"
            )
    return out


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


#: Suffix of the hidden temporary file an atomic write fills before its rename.
PART_SUFFIX = ".part"


def partial_file(target: str | os.PathLike) -> tuple[int, str]:
    """A new hidden temporary file beside ``target`` (``.<name>.<random>.part``), open for
    writing, and its path: every atomic write of the plugin fills one and renames it onto
    ``target``, so a write cut short leaves this file, never half a ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=PART_SUFFIX)


def partial_target(name: str) -> str | None:
    """The file name the temporary file ``name`` (see :func:`partial_file`) was going to
    become, or None for any other name."""
    if not (name.startswith(".") and name.endswith(PART_SUFFIX)):
        return None
    target, dot, random_part = name[1 : -len(PART_SUFFIX)].rpartition(".")
    return target if dot and target and random_part else None
