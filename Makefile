# mpsciml developer commands. Everything runs through .venv/bin/..., no activation needed.
#
#   make train                      train the default (Burgers PINN) run
#   make train ARGS="precision=mixed problem=navier_stokes"
#   make test                       fast test suite (slow tests deselected by pyproject)
#   make install TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
#
# torch is installed FIRST from $(TORCH_SPEC), then the package: pyproject only asks for
# torch>=2.4, which the already installed wheel satisfies, so pip never swaps it for a
# multi-GB default build.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Interpreter used to create the venv: python3.11 if present, else python3.
BASE_PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV        := .venv
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed

# Left unquoted in the recipe on purpose so extra pip words (--index-url ...) pass through.
TORCH_SPEC  ?= torch==2.13.0
ARGS        ?=
PYTEST_ARGS ?=

# Never upload to Weights & Biases unless asked to (WANDB_MODE=online make train).
export WANDB_MODE ?= offline

.PHONY: help install .venv train test test-all lint clean

help: ## Show this help
	@echo "Usage: make <target> [ARGS=...] [PYTEST_ARGS=...] [TORCH_SPEC=...]"
	@echo
	@grep -E '^[a-zA-Z_.-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'
	@echo
	@echo "Defaults: TORCH_SPEC='$(TORCH_SPEC)'  WANDB_MODE=$(WANDB_MODE)"

# The venv itself: created once, only if its interpreter is missing.
$(BIN)/python:
	@test -n "$(BASE_PYTHON)" || { echo "error: neither python3.11 nor python3 found on PATH" >&2; exit 1; }
	$(BASE_PYTHON) -m venv $(VENV)

# Stamp: (re)install whenever pyproject.toml is newer than the last successful install.
# It records the TORCH_SPEC that was used.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e ".[dev]"
	@echo '$(TORCH_SPEC)' > $@

.venv: $(STAMP) ## Create .venv and install torch + mpsciml[dev] (alias of install)

install: $(STAMP) ## Create .venv and install torch (TORCH_SPEC) first, then mpsciml[dev]
	@if [ "$(origin TORCH_SPEC)" = "command line" ] && [ "$$(cat $(STAMP))" != '$(TORCH_SPEC)' ]; then \
		echo "note: .venv already holds a torch installed from '$$(cat $(STAMP))'; pip keeps it."; \
		echo "      To switch builds: rm -rf $(VENV) && make install TORCH_SPEC=\"$(TORCH_SPEC)\""; \
	fi

train: $(STAMP) ## Train: make train ARGS="precision=mixed problem=navier_stokes"
	$(BIN)/python train.py $(ARGS)

test: $(STAMP) ## Run the test suite (slow tests deselected; extra args via PYTEST_ARGS)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: $(STAMP) ## Run every test, including those marked slow
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check + hadolint Dockerfile + shellcheck of the shell scripts
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/shellcheck .ci/run scripts/*.sh

clean: ## Remove caches and build debris (keeps .venv, outputs/, multirun/, wandb/)
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -print0 | xargs -0 rm -rf
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
