# Two entry points for a fresh machine: `make run` (the dashboard on the demo market) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint bench clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(VENV)/bin/streamlit run dashboard/app.py

test: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: $(VENV)/.dev
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_files.py
	$(PY) benchmarks/bench_dashboard.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
