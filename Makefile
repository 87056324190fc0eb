# Two commands for a fresh machine: `make demo` and `make test` (README, Quick start).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Label Studio, for the integration tests, lives in its own venv: its pins clash with ours.
LS_VENV ?= .venv-ls
LS_SPEC ?= label-studio>=1.22,<1.24
LS_STAMP := $(LS_VENV)/.installed-stamp

.PHONY: install ls-venv demo test test-fast lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

$(LS_STAMP): Makefile
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet "$(LS_SPEC)"
	# A migrated database for the test servers to copy (`label-studio version` migrates first).
	rm -rf $(LS_VENV)/db-template
	LABEL_STUDIO_BASE_DATA_DIR=$(abspath $(LS_VENV)/db-template) HOME=$(abspath $(LS_VENV)/db-template) \
		$(LS_VENV)/bin/label-studio version > $(LS_VENV)/db-template.log 2>&1
	touch $(LS_STAMP)

ls-venv: $(LS_STAMP)

# The whole pipeline on the bundled demo data (data/raw/demo), through DVC.
demo: install
	$(BIN)/python -m pipeline.demo_run

# The whole test suite (slow and integration tests included).
test: install ls-venv
	$(BIN)/python -m pytest

# Unit tests only, for quick iterations.
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not integration"

lint: install
	$(BIN)/ruff check pipeline tests

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache .ruff_cache
