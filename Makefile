# Two commands for a fresh machine: `make demo` and `make test` (README, Quick start).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on the bundled demo data (data/raw/demo), through DVC.
demo: install
	$(BIN)/python -m pipeline.demo_run

# The whole test suite (slow and integration tests included).
test: install
	$(BIN)/python -m pytest

# Unit tests only, for quick iterations.
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not integration"

lint: install
	$(BIN)/ruff check pipeline tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
