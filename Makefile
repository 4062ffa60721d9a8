# The two commands: `make run` (start the whole mesh here) and `make test` (the whole suite).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test prometheus bench bench-engines bench-decision bench-mesh evaluate clean

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

test: install prometheus
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: bench-engines bench-decision bench-mesh evaluate

bench-engines: install
	$(PY) bench/bench_engines.py

bench-decision: install
	$(PY) bench/bench_decision.py

bench-mesh: install
	$(PY) bench/bench_mesh.py

evaluate: install
	$(VENV)/bin/autoscale evaluate --out results

clean:
	rm -rf var results .pytest_cache
