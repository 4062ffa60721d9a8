# The two commands: `make run` (start the whole mesh here) and `make test` (the gates, then the whole suite).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install lock run demo lint test prometheus deploy-tools bench bench-all bench-handlers bench-engines bench-decision bench-mesh bench-tracing bench-limits bench-paths bench-resilience bench-deciders bench-partition evaluate clean

# constraints.txt pins every package of every extra (the lock; the Docker images install from it too).
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Refresh the lock after editing pyproject.toml's dependencies: uv resolves every extra for the images'
# platform (CPython 3.11, x86_64 manylinux), keeping the pinned versions that still fit (delete a line to
# upgrade that package). uv is installed in a venv of its own: it is a tool, not a dependency.
UV_VERSION ?= 0.13.9
lock:
	python3 -m venv .venv-lock
	.venv-lock/bin/pip install --quiet "uv==$(UV_VERSION)"
	.venv-lock/bin/uv pip compile pyproject.toml --all-extras --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 --no-emit-package autoscale-mesh \
	    --custom-compile-command "make lock" -o constraints.txt

run: install
	$(VENV)/bin/autoscale up

# The live testbed, about 10 minutes on the shared 2-core host: calibrate this CPU, start the mesh pinned around
# it, real co-runners, every policy (README "Calibrate and testbed"); results in results/testbed-demo.
# `autoscale testbed --full` makes the README's figures.
demo: install
	$(VENV)/bin/autoscale testbed --out results/testbed-demo

# Prometheus (and promtool) from Debian's package: the metrics tests run against the real thing.
prometheus:
	bash .ci/install-prometheus.sh

# docker-compose (the `config` check of docker-compose.yml; no engine needed), shellcheck (the Termux and
# GPU-server scripts) and systemd-analyze (the GPU server's units), from Debian's packages: tests/test_deploy*.py.
deploy-tools:
	bash .ci/install-deploy-tools.sh

# The gates (also in .pre-commit-config.yaml): formatting, lint, types, the layering contracts in pyproject.toml,
# module and function sizes. Each fails on any finding, so a regression fails `make test` and CI.
lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) scripts/check_sizes.py

test: install prometheus deploy-tools lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The front door, side by side in one run: bench/results/<timestamp>.json and .md (a few minutes).
bench: install
	$(PY) -m bench.bench_front

bench-all: bench bench-handlers bench-engines bench-decision bench-mesh bench-tracing bench-limits bench-paths bench-resilience bench-deciders bench-partition evaluate

# Each service's hot handler in process, CPU per request (and cProfile's top functions): bench/handlers.md.
bench-handlers: install
	$(PY) -m bench.bench_handlers --profile 15

bench-engines: install
	$(PY) bench/bench_engines.py

bench-decision: install
	$(PY) -m bench.bench_decision

bench-mesh: install
	$(PY) -m bench.bench_mesh

bench-tracing: install
	$(PY) -m bench.bench_tracing

bench-limits: install
	$(PY) -m bench.bench_limits

bench-paths: install
	$(PY) -m bench.bench_paths

bench-resilience: install
	$(PY) -m bench.bench_resilience

bench-deciders: install
	$(PY) -m bench.bench_deciders

bench-partition: install
	$(PY) -m bench.bench_partition

evaluate: install
	$(VENV)/bin/autoscale evaluate --out results

clean:
	rm -rf var results .pytest_cache
