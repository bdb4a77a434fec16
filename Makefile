# Every target sets the project up first (once; again when its inputs change).
PY := .venv/bin/python
STAMP := .venv/.setup-stamp
LABELS ?= ../shared/data/faces/labels.json

.PHONY: setup demo test lint bench-blur eval bench-e2e clean

setup: $(STAMP)

$(STAMP): pyproject.toml models/manifest.json scripts/setup.sh scripts/ensure_mongod.py
	bash scripts/setup.sh
	touch $@

## The main job on a small built-in example: detect, anonymize, before/after picture.
demo: $(STAMP)
	$(PY) -m fiftyone_anonymizer.demo --output out/demo

## The test suite (CI runs exactly this).
test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	.venv/bin/ruff check plugin tests scripts

bench-blur: $(STAMP)
	$(PY) scripts/bench_blur.py

eval: $(STAMP)
	$(PY) scripts/evaluate.py $(LABELS)

bench-e2e: $(STAMP)
	$(PY) scripts/bench_e2e.py

clean:
	rm -rf out .pytest_cache
