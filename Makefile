# Two entry points for a fresh machine: `make run` (the dashboard on the demo market) and `make test`.
# Both set up .venv: the pinned requirements, then the project itself, editable and without
# dependencies (`pip install --no-deps -e .`), so `python -m sim`, `python -m data_cache` and
# `covered-call-dashboard` work from any folder.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench clean

$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(VENV)/bin/covered-call-dashboard

test: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: $(VENV)/.dev
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_research.py
	$(PY) benchmarks/bench_files.py
	$(PY) benchmarks/bench_dashboard.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info build
