# Targets match the README. Everything installs into ./.venv (created when missing).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
SCIFACT ?= ../shared/eval/scifact

.PHONY: install install-dev serve test test-postgres test-scale faults lint format eval bench smoke schema-fuzz clean test-site
PYDOCS := /usr/share/doc/python3.11/html

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

#: with JUNIT_DIR set (.ci/run does), every pytest run writes a JUnit XML report there
junit = $(if $(JUNIT_DIR),--junitxml=$(JUNIT_DIR)/$(1).xml)

test: $(DEV_STAMP) test-site  ## install and run the test suite
	$(BIN)/pytest -q $(call junit,test)

# The crawl tests serve Debian's python3.11-doc (530 real HTML pages) on loopback; the dashboard
# tests drive Debian's chromium; the OCR tests run Debian's tesseract-ocr with its English data.
# Installed when apt can be used without a password; otherwise those tests skip (and fail under
# CI=true).
test-site:
	@missing=""; [ -d $(PYDOCS) ] || missing=" python3.11-doc"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/tesseract ] || missing="$$missing tesseract-ocr"; \
	[ -f /usr/share/tesseract-ocr/5/tessdata/eng.traineddata ] || missing="$$missing tesseract-ocr-eng"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
		if [ "$$SUDO" != none ] && command -v apt-get >/dev/null; then \
			echo "installing$$missing for the crawl and dashboard tests"; \
			$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
		else echo "note:$$missing missing and apt-get is not usable here: the tests that need it will skip"; fi; \
	fi

#: the suites that run on PostgreSQL 16 + pgvector too (started by pgserver for the session)
POSTGRES_SUITES := tests/integration/jobs/test_job_queue.py tests/integration/jobs/test_dispatch.py \
	tests/integration/jobs/test_claim_ahead.py tests/integration/jobs/test_tenant_tiers.py \
	tests/integration/test_api_e2e.py tests/integration/test_idempotency.py \
	tests/integration/test_pipeline_control.py tests/integration/test_drafts_api.py \
	tests/integration/test_pipeline_events.py tests/integration/test_isolation.py \
	tests/integration/services/test_settle_invariant.py tests/integration/test_query_log.py \
	tests/integration/test_kb_versions.py tests/integration/test_evaluations.py \
	tests/integration/test_openai_embedder.py tests/integration/test_retention.py \
	tests/integration/test_blob_gc.py tests/integration/test_scheduler.py

test-postgres: $(DEV_STAMP)  ## the API and job-queue suites on PostgreSQL + pgvector
	LOREBASE_TEST_DATABASE=postgres $(BIN)/pytest -q $(call junit,test-postgres) $(POSTGRES_SUITES)

#: the suites that run in the scaled mode: PostgreSQL + pgvector, Redis, Celery worker processes;
#: the Celery run keeps every blob in S3 (moto_server, started for the session).
#: Not tests/contract: each store and embedder there brings its own backend (pgvector on
#: pgserver, Qdrant, Chroma), whatever LOREBASE_TEST_DATABASE/EXECUTOR say, so `make test`
#: already runs exactly those cases (334 of them, ~2 min).
SCALE_SUITES := tests/integration/test_api_e2e.py tests/integration/test_idempotency.py \
	tests/integration/test_pipeline_control.py tests/integration/test_drafts_api.py \
	tests/integration/test_drafts_redis.py tests/integration/test_external_stores.py \
	tests/integration/test_pipeline_events.py tests/integration/test_isolation.py \
	tests/faults

test-scale: $(DEV_STAMP)  ## the API, store-contract and fault suites with Celery workers on PostgreSQL + Redis
	LOREBASE_TEST_DATABASE=postgres LOREBASE_TEST_EXECUTOR=celery LOREBASE_TEST_BLOB_STORE=s3 \
		$(BIN)/pytest -q $(call junit,test-scale-celery) $(SCALE_SUITES)
	LOREBASE_TEST_DATABASE=postgres LOREBASE_TEST_EXECUTOR=rq $(BIN)/pytest -q $(call junit,test-scale-rq) \
		tests/integration/test_api_e2e.py

faults: $(DEV_STAMP)  ## the fault-injection suite alone (also part of `make test`)
	$(BIN)/pytest -q tests/faults

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

#: the embedding model of the eval KB (one KB per model): make eval MODEL=local:all-MiniLM-L6-v2-int8
MODEL ?= local:all-MiniLM-L6-v2
EVAL_KB = scifact$(if $(findstring -int8,$(MODEL)),-int8,)

eval: $(STAMP)  ## SciFact train queries: builds the KB on first run (~10 min on 2 cores; int8: ~5)
	LOREBASE_DATA_DIR=$${LOREBASE_DATA_DIR:-./lorebase-eval} $(BIN)/lorebase eval --kb $(EVAL_KB) --model $(MODEL) \
		--corpus $(SCIFACT)/corpus.jsonl --queries $(SCIFACT)/queries-train.jsonl --qrels $(SCIFACT)/qrels-train.tsv

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/finalize.py
	$(BIN)/python benchmarks/crawl.py
	$(BIN)/python benchmarks/queue.py
	$(BIN)/python benchmarks/scale.py

smoke: $(STAMP)  ## the shared HTTP contract check against a live server
	bash .ci/contract-smoke

schema-fuzz: $(DEV_STAMP)  ## schemathesis from /openapi.json against a live server: no 5xx
	bash .ci/schemathesis

clean:
	rm -rf $(VENV) lorebase-data lorebase-eval
