# headstream: `make demo` runs the main job on a bundled example, `make test` runs the tests.
# Both create .venv (python3 -m venv) when it is missing and install the pinned requirements.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench venv clean

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline.demo

# Chromium lets tests/test_report.py open report.html headless; where it cannot be installed
# (no root, no apt) those checks skip with the reason.
test: $(STAMP)
	-@scripts/install_chromium.sh >/dev/null 2>&1 || echo "make test: chromium not installed; the browser checks of the report will be skipped"
	$(PY) -m pytest -q

# Slow and large checks too (CI runs them when they fit its time).
test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
