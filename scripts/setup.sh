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

# The real-browser test drives Debian's Chromium; Playwright never downloads a browser.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Debian's chromium for the browser test"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser test will be skipped"
  else
    echo "note: chromium is not installed; the browser test will be skipped"
  fi
fi
echo "== set-up done"
