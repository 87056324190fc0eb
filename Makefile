# Two commands for a fresh machine: `make demo` and `make test` (README, Quick start).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Label Studio, for the integration tests, lives in its own venv: its pins clash with ours.
LS_VENV ?= .venv-ls
LS_SPEC ?= label-studio>=1.22,<1.24
LS_STAMP := $(LS_VENV)/.installed-stamp

.PHONY: install ls-venv demo test test-fast fuzz lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,openvino]"
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

# The whole pipeline on the bundled demo data (data/raw/demo), through DVC. The stages call `fdpose`,
# so the venv's bin goes first on PATH; a second `make demo` finds everything up to date.
demo: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	@$(BIN)/python -c 'import json; m = json.load(open("reports/eval/metrics.json")); \
	print("\neval ({} split, {} images): OKS mAP {:.3f}, OKS mAP50 {:.3f}, box mAP50 {:.3f}".format( \
	m["split"], m["num_images"], m["oks_map"], m["oks_map50"], m["box_map50"]))'
	@echo "report:  reports/eval/report.html (also report.md; metrics.json, plots/)"
	@echo "package: models/package/ and models/package.zip (check: fdpose package verify models/package.zip)"
	@echo "curves:  dvc plots show  (training curves and PR/PCK plots, written to dvc_plots/index.html)"

# The whole test suite (slow and integration tests included).
test: install ls-venv
	$(BIN)/python -m pytest

# Unit tests only, for quick iterations.
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not integration"

# The property-based fuzzing (tests/fuzz) in depth: FUZZ_EXAMPLES per target (default 2000) from a
# fresh seed, printed first; `make fuzz FUZZ_SEED=N` replays a run. (make test runs 200 per target,
# derandomized.)
FUZZ_SEED ?= $(shell date +%s)
FUZZ_EXAMPLES ?= 2000
fuzz: install
	@echo "fuzz seed $(FUZZ_SEED), $(FUZZ_EXAMPLES) examples per target (replay: make fuzz FUZZ_SEED=$(FUZZ_SEED))"
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/fuzz \
		-p no:cacheprovider --hypothesis-seed=$(FUZZ_SEED) --hypothesis-show-statistics -q

lint: install
	$(BIN)/ruff check pipeline tests

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache .ruff_cache
