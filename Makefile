# The two commands: `make run` (start the whole mesh here) and `make test` (the gates, then the whole suite).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run lint test prometheus bench bench-engines bench-decision bench-mesh evaluate clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/autoscale up

# Prometheus (and promtool) from Debian's package: the metrics tests run against the real thing.
prometheus:
	bash .ci/install-prometheus.sh

# The gates (also in .pre-commit-config.yaml): formatting, lint, types, the layering contracts in pyproject.toml,
# module and function sizes. Each fails on any finding, so a regression fails `make test` and CI.
lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) scripts/check_sizes.py

test: install prometheus lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: bench-engines bench-decision bench-mesh evaluate

bench-engines: install
	$(PY) bench/bench_engines.py

bench-decision: install
	$(PY) -m bench.bench_decision

bench-mesh: install
	$(PY) -m bench.bench_mesh

evaluate: install
	$(VENV)/bin/autoscale evaluate --out results

clean:
	rm -rf var results .pytest_cache
