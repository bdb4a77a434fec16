"""What a job did, and how it tells its progress: shared by every job and front end."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.boxes import count_text
from ..engine import Result

#: ``progress(fraction, label)``; the operators pass FiftyOne's ``ctx.set_progress``.
Progress = Callable[[float, str], None]
PROGRESS_EVERY_S = 0.5


@dataclass
class JobReport:
    """What a job did, for the operator's output, the command line and Python callers."""

    job: str
    samples: int = 0
    processed: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # filepath -> reason
    failed_ids: list[str] = field(default_factory=list)  # the failed samples, to open them
    boxes_per_class: Counter = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)

    def fail(self, filepath: str, reason: str, sample_id: str | None = None) -> str:
        """Count a failed sample; returns the text for its error field (``"<job>: <reason>"``)."""
        self.failed[filepath] = reason
        if sample_id is not None:
            self.failed_ids.append(sample_id)
        return f"{self.job}: {reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "samples": self.samples,
            "processed": self.processed,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "failures": [{"filepath": k, "reason": v} for k, v in self.failed.items()],
            "failed_ids": list(self.failed_ids),
            "boxes_per_class": dict(self.boxes_per_class),
            **self.extra,
        }

    def summary(self) -> str:
        return (
            f"{self.job}: {self.processed} processed, {self.skipped} skipped, "
            f"{len(self.failed)} failed; {count_text(self.boxes_per_class)}"
        )


def notify_progress(progress: Progress | None, done: int, total: int, what: str) -> None:
    if progress is not None:
        progress(done / total if total else 1.0, f"{what} {done}/{total}")


def with_progress(
    results: Iterable[Result],
    total: int,
    what: str,
    progress: Progress | None,
    every_s: float = PROGRESS_EVERY_S,
) -> Iterator[Result]:
    """Pass the engine's results through, reporting ``"<what> <done>/<total>"`` at most every
    ``every_s`` seconds and after the last (a delegated run stores each report in the
    database, so a million samples must not mean a million writes)."""
    last = time.monotonic()
    for done, result in enumerate(results, start=1):
        yield result
        now = time.monotonic()
        if done == total or now - last >= every_s:
            notify_progress(progress, done, total, what)
            last = now
