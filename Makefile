# Quick start: `make run` (sample through the real model) and `make test` (the test suite).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MODEL ?= isnet-general-use
SAMPLE ?= examples/sample/manifest.csv
OUT ?= out

.PHONY: run test lint clean

$(BIN)/matteflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/matteflow
	$(BIN)/matteflow models fetch $(MODEL)
	$(BIN)/matteflow run --manifest $(SAMPLE) --output $(OUT) --model $(MODEL)
	@echo "Cutouts in $(OUT)/cutouts, masks in $(OUT)/masks, metrics in $(OUT)/metrics, summary in $(OUT)/run.json"

test: $(BIN)/matteflow
	$(BIN)/pytest

lint: $(BIN)/matteflow
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy --strict pipelines transforms models

clean:
	rm -rf $(OUT)
