# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint docs venv system-deps

$(BIN)/graceshut: pyproject.toml
	PYTHON=$(PYTHON) scripts/system-deps venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

venv: $(BIN)/graceshut

demo: venv
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
