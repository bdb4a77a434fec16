#!/usr/bin/env bash
# One-shot set-up on a fresh machine: virtual environment, install, database, weights, browser.
# Safe to run again; `make setup` runs it when pyproject.toml or the manifest change.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "== installing the plugin and its dependencies into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"

echo "== checking FiftyOne's database"
.venv/bin/python scripts/ensure_mongod.py

echo "== fetching detection weights (sha256-checked, cached)"
.venv/bin/python -m fiftyone_anonymizer.core.weights
echo "== building the int8 plate model from the committed range table (cached)"
.venv/bin/python -m fiftyone_anonymizer.detectors

# Debian packages: chromium for the real-browser test (Playwright never downloads a browser),
# ffmpeg for FiftyOne's own video tools (video metadata, frames; our video I/O is PyAV's).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v ffprobe >/dev/null 2>&1 || missing="$missing ffmpeg"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Debian's$missing"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null) \
      || echo "warning: could not install$missing; the browser test or video metadata will be skipped"
  else
    echo "note:$missing not installed (needs root); the browser test or video metadata will be skipped"
  fi
fi
echo "== set-up done"
