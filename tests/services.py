"""Processes for multi-worker tests and benchmarks: a private ``mongod``, FiftyOne delegated
workers pointed at it, and Python snippets run against it.

The test process itself stays on the suite's embedded database (FiftyOne binds its database
at import), so everything that must see the private database runs in a child process with
``FIFTYONE_DATABASE_URI`` set. Every process started here is started in its own session and
stopped (its whole process group) by :meth:`Cluster.stop`, also when a test fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
# One CPU thread per worker process: onnxruntime (detectors), TensorFlow (blur), OpenMP.
ONE_THREAD = {
    "FO_ANONYMIZER_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}

# Loaded by the workers through PYTHONPATH when FO_TEST_WRITE_LOG is set: every rename that
# makes a copy visible is logged (pid and path) just before it happens, and each fsync of a
# copy's temporary file is followed by FO_TEST_WRITE_DELAY seconds, so that a kill lands
# with a half-written ".part" file on disk, the way a real crash mid-write would. Only the
# anonymizer's image module sees this (its own reference to ``os`` is replaced).
_SITECUSTOMIZE = textwrap.dedent("""
    import os
    import time

    if os.environ.get("FO_TEST_WRITE_LOG"):
        from fiftyone_anonymizer.core import images as _images

        class _InstrumentedOs:
            def __getattr__(self, name):
                return getattr(os, name)

            def fsync(self, fd):
                os.fsync(fd)
                time.sleep(float(os.environ.get("FO_TEST_WRITE_DELAY", "0")))

            def replace(self, src, dst):
                line = f"{os.getpid()} {os.fspath(dst)}\\n".encode()
                fd = os.open(os.environ["FO_TEST_WRITE_LOG"],
                             os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
                os.replace(src, dst)

        _images.os = _InstrumentedOs()
""")


def mongod_binary() -> Path:
    """FiftyOne's embedded ``mongod`` (located without importing fiftyone)."""
    spec = importlib.util.find_spec("fiftyone")
    if spec is None or spec.origin is None:
        raise RuntimeError("fiftyone is not installed")
    return Path(spec.origin).parent / "db" / "bin" / "mongod"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class Cluster:
    """A private ``mongod`` on 127.0.0.1 plus any number of ``fiftyone delegated launch``
    workers, all under ``root``; a context manager that stops everything on exit."""

    def __init__(self, root: Path, plugins_dir: Path, extra_env: dict[str, str] | None = None):
        self.root = Path(root)
        self.plugins_dir = Path(plugins_dir)
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}"
        self.extra_env = dict(extra_env or {})
        self.mongod: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._started = 0
        self.site_dir = self.root / "site"

    # -- environment

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a FiftyOne process on this cluster's database."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_DATABASE")}
        env.update(
            {
                "FIFTYONE_DATABASE_URI": self.uri,
                "FIFTYONE_PLUGINS_DIR": str(self.plugins_dir),
                "FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS": "true",
                "FIFTYONE_DO_NOT_TRACK": "true",
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    # -- processes

    def start_mongod(self, timeout_s: float = 60.0) -> None:
        dbpath = self.root / "db"
        dbpath.mkdir(parents=True, exist_ok=True)
        log = self.root / "mongod.log"
        self.mongod = subprocess.Popen(
            [
                str(mongod_binary()),
                "--dbpath",
                str(dbpath),
                "--port",
                str(self.port),
                "--bind_ip",
                "127.0.0.1",
                "--wiredTigerCacheSizeGB",
                "0.25",
                "--quiet",
                "--logpath",
                str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.mongod.poll() is not None:
                raise RuntimeError(f"mongod exited with {self.mongod.returncode}; see {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"mongod did not listen on port {self.port} within {timeout_s} s")

    def start_worker(self, cpus: str | None = None, **extra_env: str) -> subprocess.Popen:
        """One ``fiftyone delegated launch`` worker (log: ``worker-<n>.log``), pinned to the
        CPUs ``cpus`` (``taskset -c`` syntax) when given."""
        env = self.env(**extra_env)
        if env.get("FO_TEST_WRITE_LOG"):
            self.site_dir.mkdir(parents=True, exist_ok=True)
            (self.site_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.site_dir), env.get("PYTHONPATH")) if p
            )
        self._started += 1
        log_path = self.root / f"worker-{self._started}.log"
        command = [str(VENV_BIN / "fiftyone"), "delegated", "launch"]
        if cpus is not None:
            command = ["taskset", "-c", cpus, *command]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        proc.log_path = log_path  # type: ignore[attr-defined]
        self.workers.append(proc)
        return proc

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until every worker started so far polls the queue."""
        deadline = time.monotonic() + timeout_s
        for proc in self.workers:
            path = proc.log_path  # type: ignore[attr-defined]
            while "service running" not in path.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker not ready:\n{self.worker_logs()}")
                time.sleep(0.2)

    def stop_workers(self) -> None:
        for proc in self.workers:
            _stop(proc)
        self.workers = []

    def kill(self, proc: subprocess.Popen) -> None:
        """``kill -9`` a worker (and anything it started)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def python(self, code: str, *args: str, timeout_s: float = 300.0, **extra_env: str) -> Any:
        """Run ``code`` in a child Python on this database; return the JSON it prints last.

        The code's arguments are in ``sys.argv[1:]``; it must print one JSON document as its
        last line of output.
        """
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(
                f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            )
        return json.loads(lines[-1])

    def worker_logs(self) -> str:
        texts = []
        for proc in self.workers:
            path = proc.log_path  # type: ignore[attr-defined]
            text = path.read_text(errors="replace") if path.exists() else ""
            texts.append(f"--- {path.name} (pid {proc.pid}, exit {proc.poll()})\n{text[-4000:]}")
        return "\n".join(texts)

    def stop(self) -> None:
        self.stop_workers()
        if self.mongod is not None:
            _stop(self.mongod, grace_s=20.0)

    def __enter__(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.start_mongod()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
