"""Folders as a source of engine items: which images, where their copies and detections go.

The command line (``cli.py``) is a thin layer over :func:`plan_folder` and ``engine.run``;
both are usable from Python::

    plan = plan_folder("photos/", "anonymized/")
    steps = engine.Steps(detector, BlurSettings(), sidecar=seed_detections_file)
    for result in engine.run(plan.items(), steps):
        ...
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .core.boxes import Detection
from .core.images import write_bytes_atomic
from .core.paths import distinct_targets, output_dir_problem
from .engine import Item
from .videos import copy_name

DEFAULT_EXTENSIONS = ("jpg", "png")  # the original tool's default
#: Extensions worth a note when present but not asked for.
IMAGE_EXTENSIONS = (
    "jpg",
    "jpeg",
    "jpe",
    "png",
    "webp",
    "bmp",
    "tif",
    "tiff",
    "gif",
    "heic",
    "heif",
)


class PlanError(ValueError):
    """The folders cannot be processed as asked (missing input, copies would replace originals)."""


@dataclass(frozen=True)
class FileJob:
    """One image to anonymize: where it is, where its copy and detections file go."""

    source: Path
    target: Path
    detections_path: Path | None = None
    video: bool = False


@dataclass
class FolderPlan:
    """The jobs for one input folder."""

    input_dir: Path
    output_dir: Path
    jobs: list[FileJob] = field(default_factory=list)
    # Image files left out because their extension was not asked for, per extension: the
    # command line mentions them so a ".jpeg" folder is not mistaken for an anonymized one.
    unmatched: dict[str, int] = field(default_factory=dict)

    def items(self) -> Iterator[Item]:
        """The engine's items (the images), keyed by their :class:`FileJob`."""
        for job in self.jobs:
            if not job.video:
                yield Item(
                    key=job, source=job.source, target=job.target, sidecar=job.detections_path
                )

    @property
    def videos(self) -> list[FileJob]:
        return [job for job in self.jobs if job.video]


def parse_extensions(spec: str | Iterable[str]) -> tuple[str, ...]:
    """``"jpg,PNG, .jpeg"`` -> ``("jpg", "png", "jpeg")``: lower case, no dots, no blanks."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    exts = tuple(
        dict.fromkeys(p.strip().lstrip(".").lower() for p in parts if p.strip().lstrip("."))
    )
    if not exts:
        raise PlanError(f"no image extensions in {spec!r}")
    return exts


def find_images(
    input_dir: Path, extensions: Sequence[str], unmatched: dict[str, int] | None = None
) -> list[Path]:
    """Files under ``input_dir`` (recursively, symlinked folders entered once) whose extension
    matches case-insensitively, sorted (hidden files too: the original processed them).
    Image files with other extensions are counted per extension into ``unmatched``.

    The original matched case-sensitively and missed ``.JPG`` from cameras: a privacy leak.
    """
    wanted = {f".{e.lower()}" for e in extensions}
    found: list[Path] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(input_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in filenames:
            ext = os.path.splitext(name)[1].lower()
            if ext in wanted:
                found.append(Path(dirpath) / name)
            elif unmatched is not None and ext[1:] in IMAGE_EXTENSIONS:
                unmatched[ext] = unmatched.get(ext, 0) + 1
    return sorted(found)


def detections_paths(targets: Sequence[Path]) -> list[Path]:
    """The original's ``<stem>.json`` beside each copy; ``<name>.json`` (e.g. ``a.jpg.json``)
    for files whose stems collide in one folder (``a.jpg`` and ``a.png``), so none is lost."""
    stems: dict[Path, int] = {}
    for t in targets:
        stems[t.with_suffix(".json")] = stems.get(t.with_suffix(".json"), 0) + 1
    return [
        t.with_suffix(".json")
        if stems[t.with_suffix(".json")] == 1
        else t.with_name(t.name + ".json")
        for t in targets
    ]


def plan_folder(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    write_detections: bool = True,
    video_extensions: Sequence[str] = (),
) -> FolderPlan:
    """Mirror every matching image and video of ``input_dir`` under ``output_dir`` (same
    relative path, same name; videos in containers other than MP4 get ``.mp4``).

    The output folder follows :func:`core.paths.output_dir_problem`: not the input folder, not
    inside it (a later run would read the copies as inputs), not a system folder.

    Args:
        input_dir: the folder of originals, walked recursively
        output_dir: the folder for the copies
        extensions: image file extensions to take, case-insensitively
        write_detections: plan a detections file beside each copy
        video_extensions: video file extensions to take (see ``videos.VIDEO_EXTENSIONS``)

    Raises:
        PlanError: the input is missing, the output folder breaks the rule, or a copy or
            detections file would land on an input file
    """
    src = Path(input_dir).expanduser().absolute()
    out = Path(output_dir).expanduser().absolute()
    if src.exists() and not src.is_dir():
        raise PlanError(
            f"--input takes a folder, and {src} is a file: give the folder that holds it "
            f"({src.parent}); every image and video under it is anonymized"
        )
    if not src.is_dir():
        raise PlanError(f"input folder not found: {src}")
    problem = output_dir_problem(out, [src])
    if problem:
        raise PlanError(problem)
    unmatched: dict[str, int] = {}
    video_exts = {f".{e.lower()}" for e in video_extensions}
    sources = find_images(src, [*extensions, *video_extensions], unmatched)
    is_video = [s.suffix.lower() in video_exts for s in sources]
    try:
        targets = distinct_targets(
            sources,
            [
                copy_name(out / s.relative_to(src)) if v else out / s.relative_to(src)
                for s, v in zip(sources, is_video)
            ],
        )
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    json_paths = detections_paths(targets) if write_detections else [None] * len(targets)
    originals = {os.path.realpath(s): s for s in sources}
    for t, j in zip(targets, json_paths):
        for written in (t, j):
            hit = originals.get(os.path.realpath(written)) if written is not None else None
            if hit is not None:
                raise PlanError(
                    f"writing {written} would replace the input file {hit} (every image under "
                    f"--input is an input; if it is an earlier copy, move the old output away "
                    f"or choose an --image-output outside the input)"
                )
    if not (out / RESUME_LOG).is_file():
        # A folder no run of ours wrote into: its files are someone's, never to be replaced.
        for t, j in zip(targets, json_paths):
            for written in (t, j):
                if written is not None and written.exists():
                    raise PlanError(
                        f"the output folder {out} already holds {written}, which anonymize "
                        f"did not write (no {RESUME_LOG} there); choose a new folder"
                    )
    jobs = [FileJob(s, t, j, v) for s, t, j, v in zip(sources, targets, json_paths, is_video)]
    return FolderPlan(src, out, jobs, unmatched)


def seed_detections(detections: Sequence[Detection], width: int, height: int) -> list[dict]:
    """The original tool's detections file: absolute pixel floats, ``kind`` face or plate."""
    out = []
    for d in detections:
        x0, y0, x1, y1 = d.to_pixels(width, height)
        out.append(
            {
                "y_min": float(y0),
                "x_min": float(x0),
                "y_max": float(y1),
                "x_max": float(x1),
                "score": float(d.score),
                "kind": d.label,
            }
        )
    return out


def seed_detections_file(detections: Sequence[Detection], width: int, height: int) -> bytes:
    """:func:`seed_detections` as the file's bytes (``engine.Steps.sidecar``)."""
    return json.dumps(seed_detections(detections, width, height), indent=2).encode()


# --------------------------------------------------------------------------------------------
# Resuming: which copies of an earlier run are current


RESUME_LOG = ".anonymizer-resume.jsonl"


class ResumeLog:
    """What earlier runs wrote into an output folder, so a rerun skips the copies that are
    current and an interrupted 100 000-image run goes on where it stopped.

    One JSON line per copy, appended after the copy is in place: its path (relative to the
    output folder), a fingerprint of what it was made from (the source file's size and
    modification time, the detector configuration, the blur settings, the JPEG quality and the
    plugin's version, hashed: no original metadata is stored) and the boxes it obscured. A copy
    is current when its line's fingerprint matches and the copy (and its detections file, when
    asked for) exists and is newer than its source. A line cut short by a kill is ignored; the
    log is compacted when a run starts.

    Args:
        output_dir: the run's output folder
        recipe: what every copy of this run depends on besides its source (JSON-safe)
        video_recipe: what a video's copy depends on besides ``recipe`` (its audio)
    """

    def __init__(self, output_dir: Path, recipe: dict, video_recipe: dict | None = None) -> None:
        self.path = Path(output_dir) / RESUME_LOG
        self._recipe = json.dumps(recipe, sort_keys=True, default=str)
        self._video_recipe = json.dumps(
            {**recipe, "video": video_recipe or {}}, sort_keys=True, default=str
        )
        self._entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[entry["path"]] = entry
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill

    def fingerprint(self, job: FileJob) -> str:
        stat = job.source.stat()
        recipe = self._video_recipe if job.video else self._recipe
        payload = f"{recipe}|{stat.st_size}|{stat.st_mtime_ns}|{job.target.name}"
        return hashlib.sha1(payload.encode()).hexdigest()[:20]

    def current(self, plan: FolderPlan, job: FileJob) -> list[Detection] | None:
        """The boxes of ``job``'s copy when it is current, else None."""
        entry = self._entries.get(str(job.target.relative_to(plan.output_dir)))
        try:
            if entry is None or entry.get("fp") != self.fingerprint(job):
                return None
            made = job.target.stat().st_mtime
            if made < job.source.stat().st_mtime:
                return None
            if job.detections_path is not None and not job.detections_path.is_file():
                return None
        except OSError:
            return None
        return [Detection(label, score, tuple(box)) for label, score, box in entry["boxes"]]

    def compact(self, plan: FolderPlan) -> None:
        """Rewrite the log with only the entries of copies that still exist (atomically); this
        also drops a line a kill cut short, which the next line appended would extend. A run's
        first call creates the log: it marks the folder as one anonymize writes into (see
        :func:`plan_folder`) before the first copy is made."""
        if not self.path.exists():
            write_bytes_atomic(self.path, b"")
            return
        kept = [e for rel, e in self._entries.items() if (plan.output_dir / rel).is_file()]
        text = "".join(json.dumps(e) + "\n" for e in kept)
        write_bytes_atomic(self.path, text.encode())

    def record(self, plan: FolderPlan, job: FileJob, boxes: Sequence[Detection]) -> None:
        """Append one copy's line (a single write: lines of concurrent runs never interleave)."""
        entry = {
            "path": str(job.target.relative_to(plan.output_dir)),
            "fp": self.fingerprint(job),
            "boxes": [[d.label, round(d.score, 5), [round(v, 7) for v in d.box]] for d in boxes],
        }
        data = (json.dumps(entry) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
