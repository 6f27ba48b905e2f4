# Two commands do all the set-up: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench figures clean

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

demo: $(VENV)/.deps
	$(PY) app.py

lint: $(VENV)/.test-deps
	$(PY) -m ruff check .

test: $(VENV)/.test-deps
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
