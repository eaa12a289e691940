# MoE-Health: `make demo` runs the whole pipeline on synthetic data; `make test` checks it.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster
export DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME := pipelines.definitions
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MOE_DATA_DIR ?= $(CURDIR)/data

.PHONY: install demo test lint typecheck pytest ui bench clean

install: $(STAMP)

# torch/torchvision first: this pair imports together with torchxrayvision here.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	$(BIN)/python scripts/venv_setup.py $(VENV)
	touch $(STAMP)

# DAGSTER_HOME holds run storage and compute logs (what the steps printed): owner-only,
# and every Dagster process started here runs with an owner-only umask.
$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	umask 077 && mkdir -p $(DAGSTER_HOME)
	chmod go-rwx $(DAGSTER_HOME)
	umask 077 && cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	umask 077 && chmod go-rwx $(DAGSTER_HOME) && $(BIN)/dagster job execute -m pipelines.definitions -j full_pipeline

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	umask 077 && chmod go-rwx $(DAGSTER_HOME) && $(BIN)/dagster dev -h 127.0.0.1 -p 3000

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .dagster
