# Two commands: `make demo` (set up, build the demo index through Dagster, query it) and
# `make test` (set up, run the whole suite). Everything else is optional.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint constraints ui bench quality clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The local CPU wheel first: any other torch requirement pulls GBs of CUDA packages.
	$(BIN)/python -m pip install -q torch==2.13.0
	# constraints.txt: the versions CI tested, so a fresh machine gets the same ones.
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,dev]'
	touch $@

setup: $(VENV)/.installed
	@# OCR runs the tesseract program (Debian packages; no PyPI wheel). sudo only when not root.
	@command -v tesseract >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "tesseract is missing: install tesseract-ocr (with English data) by hand" >&2; exit 1; }; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y tesseract-ocr tesseract-ocr-eng; }
	@# The search page's browser tests drive Debian's Chromium (Playwright never downloads one).
	@test -x /usr/bin/chromium || { \
	  command -v apt-get >/dev/null || { echo "chromium is missing: install it as /usr/bin/chromium" >&2; exit 1; }; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }
	@mkdir -p $(DAGSTER_HOME)
	@test -f $(DAGSTER_HOME)/dagster.yaml || cp rag_pipeline/config/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: setup
	$(BIN)/rag-pipeline demo

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check rag_pipeline serving evals benchmarks rag_pipeline_tests
	$(BIN)/ruff format --check rag_pipeline serving evals benchmarks rag_pipeline_tests
	$(BIN)/mypy
	$(BIN)/lint-imports

constraints: setup
	{ head -n 2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch=='; } > constraints.new
	mv constraints.new constraints.txt

# Unit and contract tests only: no Dagster runs, no pipeline subprocesses or servers (`slow`).
.PHONY: test-fast
test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

ui: setup
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

bench: setup
	$(BIN)/python benchmarks/ingest_scifact.py
	$(BIN)/python benchmarks/search_latency.py

quality: setup
	$(BIN)/python benchmarks/quality_scifact.py

clean:
	rm -rf var
