# Set-up and entry points. Every target creates .venv and installs the package on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/copula.py --out results/copula-demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/conditional_sampling.py
	$(PY) benchmarks/pyro_overhead.py

# API reference from the docstrings (docs/api), warnings as errors; open docs/_build/html/index.html.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs/api docs/_build/html

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis docs/_build
