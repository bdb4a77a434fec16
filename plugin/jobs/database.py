"""Database plumbing of the jobs: batched writes, the guard against a lost database, locks on
a field shared by processes on several machines, and the decorator every SDK job wears (unknown
keywords refused, the database guarded)."""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from .fields import closest

T = TypeVar("T")


SAVE_EVERY = 32  # samples per database write: a killed job loses at most this much work
LOCKS_COLLECTION = "fiftyone_anonymizer_locks"


@contextmanager
def field_lock(
    dataset, field_name: str, timeout_s: float = 60.0, stale_after_s: float = 120.0
) -> Iterator[None]:
    """Hold a lock on one field of one dataset, in FiftyOne's own database (so processes on
    other machines sharing it take turns too). A lock older than ``stale_after_s`` belongs to
    a process that died holding it and is taken over.

    Raises:
        TimeoutError: another process held it for ``timeout_s``
    """
    from fiftyone.core.odm.database import get_db_conn
    from pymongo.errors import DuplicateKeyError

    locks = get_db_conn()[LOCKS_COLLECTION]
    key = f"{dataset._doc.id}:{field_name}"
    deadline = time.monotonic() + timeout_s
    while True:
        now = datetime.utcnow()
        try:
            locks.insert_one(
                {"_id": key, "at": now, "host": socket.gethostname(), "pid": os.getpid()}
            )
            break
        except DuplicateKeyError:
            locks.delete_one({"_id": key, "at": {"$lt": now - timedelta(seconds=stale_after_s)}})
            if time.monotonic() > deadline:
                raise TimeoutError(f"field '{field_name}' is locked by another run") from None
            time.sleep(0.05)
    try:
        yield
    finally:
        locks.delete_one({"_id": key})


class SampleWriter:
    """The one place the jobs write sample fields: buffered, one atomic update per sample.

    Each sample's fields (labels, copy path, fingerprint, error) are set in a single database
    update, so a job killed at any moment never leaves a sample with its copy's path from one
    run and its fingerprint or error from another. Writes go out every ``every`` samples and
    when the writer closes (also on an exception: what finished is real work).

    Args:
        collection: the dataset or view the job runs on
        every: samples per database round trip
    """

    def __init__(self, collection, every: int = SAVE_EVERY) -> None:
        self._dataset = collection._dataset
        self._every = every
        self._pending: dict[str, dict[str, Any]] = {}

    def write(self, sample_id: str, values: Mapping[str, Any]) -> None:
        """Set ``values`` (field -> label, string, number or None) on one sample."""
        self._pending.setdefault(sample_id, {}).update(values)
        if len(self._pending) >= self._every:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        from bson import ObjectId
        from pymongo import UpdateOne

        now = datetime.utcnow()
        ops = [
            UpdateOne(
                {"_id": ObjectId(sid)},
                {"$set": {**{k: _to_mongo(v) for k, v in values.items()}, "last_modified_at": now}},
            )
            for sid, values in self._pending.items()
        ]
        ids = list(self._pending)
        self._pending = {}
        with database_guard(DATABASE_TIMEOUT_S):
            self._dataset._bulk_write(ops, ids=ids)

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None and issubclass(exc_type, DatabaseLost):
            return  # nothing more can be written; the error says how to resume
        self.flush()


#: Seconds a database write may take before the job calls the database lost (pymongo's own
#: default waits 30 s for a server that is gone, then prints a page of traceback). A flush
#: takes milliseconds; 10 s was once exceeded on a 2-core machine at load 17, hence 20.
DATABASE_TIMEOUT_S = 20.0


class DatabaseLost(RuntimeError):
    """FiftyOne's database cannot be reached; the message says what happened and how to resume."""


@contextmanager
def database_guard(timeout_s: float | None = None) -> Iterator[None]:
    """Turn a lost database into one plain :class:`DatabaseLost` (within ``timeout_s``, if
    given, instead of pymongo's 30 s)."""
    import pymongo
    from pymongo.errors import ConnectionFailure, PyMongoError

    try:
        with pymongo.timeout(timeout_s) if timeout_s else nullcontext():
            yield
    except PyMongoError as exc:
        if not isinstance(exc, ConnectionFailure) and not getattr(exc, "timeout", False):
            raise
        raise DatabaseLost(
            f"lost the connection to FiftyOne's database ({type(exc).__name__}); the copies "
            f"written so far are complete, the samples' fields are as the last save left them; "
            f"run the same job again once the database is back: it redoes only what is not "
            f"current"
        ) from None


def connect() -> None:
    """Connect to FiftyOne's database, starting the embedded one if need be, one process at a
    time: two processes that start it at the same moment otherwise race for its data folder
    and one fails (``ServiceListenTimeout``). A no-op once connected."""
    import fcntl

    import fiftyone as fo
    from fiftyone.core.odm import database

    if fo.config.database_uri is not None or database._client is not None:
        database.get_db_conn()
        return
    folder = Path(fo.config.database_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".fiftyone-anonymizer-start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        database.get_db_conn()


def _setting_names() -> tuple[set[str], set[str], set[str]]:
    """The keywords that are detector settings, blur settings and engine options."""
    from dataclasses import fields as dataclass_fields

    from ..blur import BLUR_PARAMS
    from ..detectors import DetectorConfig
    from ..engine import EngineOptions

    return (
        {f.name for f in dataclass_fields(DetectorConfig)},
        set(BLUR_PARAMS),
        {f.name for f in dataclass_fields(EngineOptions)},
    )


def accepted_keywords(job: Callable[..., Any]) -> set[str]:
    """Every keyword ``job`` takes: its own parameters, and through its ``**options`` the
    detector's settings (when it takes ``detector``: ``effort``, ``face_threshold``, ...), the
    blur's (when it takes ``settings``: ``mode``, ``strength``, ...) and the engine's options.
    The forms and the operators' ``__call__`` use exactly these names."""
    import inspect

    job = inspect.unwrap(job)
    params = inspect.signature(job).parameters.values()
    named = {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    detector, blur, engine = _setting_names()
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        return named
    return (
        named
        | (detector if "detector" in named else set())
        | (blur if "settings" in named else set())
        | engine
    )


def split_options(
    options: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A job's ``**options`` split into detector settings, blur settings and engine options.
    None takes the default, except for ``faces`` and ``plates``, where it means no such
    detector."""
    detector, blur, _ = _setting_names()
    given = {k: v for k, v in options.items() if v is not None or k in ("faces", "plates")}
    return (
        {k: v for k, v in given.items() if k in detector},
        {k: v for k, v in given.items() if k in blur},
        {k: v for k, v in given.items() if k not in detector | blur},
    )


def check_keywords(job: Callable[..., Any], given: Mapping[str, Any]) -> None:
    """Refuse a keyword ``job`` does not take (a misspelt option must not run the defaults
    without a word): ``TypeError`` naming it and the closest valid name.

    Args:
        job: the job
        given: the keyword arguments of the call
    """
    valid = sorted(accepted_keywords(job))
    for key in given:
        if key not in valid:
            raise TypeError(
                f"{job.__name__}() got an unexpected keyword argument '{key}'{closest(key, valid)}"
            )


def guarded(job: Callable[..., T]) -> Callable[..., T]:
    """A job whose lost database ends in :class:`DatabaseLost` (see :func:`database_guard`),
    which connects without racing another process's first start (:func:`connect`), and which
    refuses keywords it does not know (:func:`check_keywords`)."""

    @functools.wraps(job)
    def run(*args: Any, **kwargs: Any) -> T:
        check_keywords(job, kwargs)
        with database_guard():
            connect()
            return job(*args, **kwargs)

    return run


def _to_mongo(value: Any) -> Any:
    return value.to_mongo() if hasattr(value, "to_mongo") else value


def detector_from_options(job: str, detector: Any, settings: Mapping[str, Any], base: Any = None):
    """The detector a job runs: ``detector`` (a ``DetectorConfig`` or a ready detector), or
    the ``DetectorConfig`` its detector ``settings`` describe (on top of ``base``, default
    ``DetectorConfig()``; ``"none"`` is None, the forms' spelling).

    Raises:
        TypeError: both a detector and detector settings were given
    """
    from ..detectors import DetectorConfig

    if not settings:
        return detector if detector is not None else base
    if detector is not None:
        raise TypeError(
            f"{job}() got detector= and detector settings ({', '.join(sorted(settings))}): "
            f"put them in detector=DetectorConfig(...), or leave detector out"
        )
    return (base or DetectorConfig()).replace(
        **{k: (None if v == "none" else v) for k, v in settings.items()}
    )
