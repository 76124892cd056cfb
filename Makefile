# The single entry point: `make run` serves the product, `make test` passes the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
HOST ?= 127.0.0.1
PORT ?= 8000
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)
LLAMA_BUILD := $(foreach f,NATIVE=OFF AVX=ON AVX2=ON FMA=ON F16C=ON BMI2=ON,-C cmake.define.GGML_$(f))

.PHONY: run test lint bench contracts migrate lock services clean

$(VENV)/.installed: requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.8
	# llama-cpp-python compiles from source once; uv keeps the built wheel in its cache.
	# Not for the build machine's own CPU (GGML_NATIVE): on CPUs with AMX the native build
	# uses AMX tiles, which crash in sandboxes that do not grant them; AVX2 runs everywhere.
	$(UV) pip sync --python $(PY) $(LLAMA_BUILD) requirements.lock
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

static/vendor/.installed: node_modules/.installed scripts/vendor-static.js
	node scripts/vendor-static.js
	@touch $@

deps: $(VENV)/.installed node_modules/.installed static/vendor/.installed

migrate: deps
	$(PY) manage.py migrate --no-input

run: migrate
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

services:
	@scripts/ensure-services.sh

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	DJANGO_SETTINGS_MODULE=config.settings.test $(PY) manage.py makemigrations --check --dry-run

# The suite runs in TEST_WORKERS processes (pytest-xdist), a test file to each at a time;
# each has its own database, Redis database and var folder (config/settings/test.py).
TEST_WORKERS ?= 2

test: deps services lint
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --durations=40 $(PYTEST_ARGS)

bench: deps services
	$(PY) bench/run.py $(BENCH_ARGS)

contracts: node_modules/.installed
	npm run --silent contracts

lock:
	$(UV) pip compile pyproject.toml --group dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) node_modules static/vendor var/staticfiles
