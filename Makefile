# Targets match the README. Everything installs into ./.venv (created when missing).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
SCIFACT ?= ../shared/eval/scifact

.PHONY: install install-dev serve test lint format eval bench smoke clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned to the CPU build first so nothing pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)

install-dev: $(DEV_STAMP)

serve: $(STAMP)  ## install and run the API + embedded workers on http://127.0.0.1:8000
	$(BIN)/lorebase serve

test: $(DEV_STAMP)  ## install and run the test suite
	$(BIN)/pytest -q

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

eval: $(STAMP)  ## SciFact train queries: builds the KB on first run (~10 min on 2 cores)
	LOREBASE_DATA_DIR=$${LOREBASE_DATA_DIR:-./lorebase-eval} $(BIN)/lorebase eval --kb scifact \
		--corpus $(SCIFACT)/corpus.jsonl --queries $(SCIFACT)/queries-train.jsonl --qrels $(SCIFACT)/qrels-train.tsv

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/finalize.py

smoke: $(STAMP)  ## the shared HTTP contract check against a live server
	bash .ci/contract-smoke

clean:
	rm -rf $(VENV) lorebase-data lorebase-eval
