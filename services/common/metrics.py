"""Prometheus metrics of the mesh: one place for every name, unit and label set.

Conventions (design.md): prefix ``autoscale_``, base units (seconds, joules, watts, bytes,
ratios 0-1), ``_total`` counters, low-cardinality labels (model, target id, policy, role,
device, processor, link, reading name -- never a request id or a free-form message).

Each service owns its metrics (``services.decider.metrics``, ``services.runner.metrics``,
``services.telemetry.metrics``); this module holds what they share: the naming rule, the buckets,
the lazily registered ``MetricGroup`` and the ``/metrics`` endpoint. Every metric object is module
level and created exactly once; the facades only bind label values, so building several apps in
one process (tests) never registers a name twice.

Multiprocess: when ``PROMETHEUS_MULTIPROC_DIR`` is set *before* prometheus_client is first
imported (the launcher's job, e.g. for ``uvicorn --workers N``), values live in mmap files
and ``/metrics`` aggregates them with ``MultiProcessCollector``. Each gauge declares how
its per-process values combine (``multiprocess_mode``).
"""

from __future__ import annotations

import os
import threading

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

PREFIX = "autoscale_"

# Buckets. Latency: 1 ms .. 10 s, with the two QoS targets of the paper (1/30 s streaming,
# 50 ms) as exact edges so "fraction under QoS" is readable straight from the histogram.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    1 / 30,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# A policy decision is a table lookup (~us) up to a model prediction (~ms).
DECISION_BUCKETS: tuple[float, ...] = (
    1e-6,
    2.5e-6,
    5e-6,
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    0.1,
)
# Phone energy of one inference: sub-mJ (tiny model on the DSP) .. several J (big model, weak link).
ENERGY_BUCKETS: tuple[float, ...] = (
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Eq. 5 reward: -energy_mJ (+ small latency/accuracy terms), or accuracy-100 when masked out.
REWARD_BUCKETS: tuple[float, ...] = (
    -5000,
    -2000,
    -1000,
    -500,
    -200,
    -100,
    -50,
    -20,
    -10,
    -5,
    0,
    5,
    10,
    20,
    50,
)


def metric_name(name: str) -> str:
    """``autoscale_`` + name: every series of the mesh carries the prefix."""
    return PREFIX + name


class MetricGroup:
    """The metrics of one service kind, registered on first use rather than at import.

    Every service imports this module; registering everything at import would make each
    runner and the telemetry service export the decider's unlabelled series (Q-table size,
    Redis errors) as zeros. (Multiprocess mode writes values at creation regardless: give
    each service its own PROMETHEUS_MULTIPROC_DIR.)"""

    def __init__(self, *metrics: Counter | Gauge | Histogram) -> None:
        self.metrics = metrics
        self.active = False
        self._lock = threading.Lock()

    def activate(self) -> None:
        if self.active:  # the per-call cost on hot paths: one attribute check
            return
        with self._lock:
            if not self.active:
                for m in self.metrics:
                    REGISTRY.register(m)
                self.active = True


# ============================================================================ endpoint


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # A fresh registry per scrape is the documented multiprocess pattern: the collector
        # reads every worker's mmap files at collection time.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def render_metrics() -> bytes:
    """The text exposition of this process (or all workers in multiprocess mode)."""
    return generate_latest(_registry())


def metrics_endpoint(app: FastAPI) -> None:
    """Add ``GET /metrics`` (Prometheus text format) to an app."""

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:  # sync: runs in the threadpool, collection never blocks the loop
        return Response(render_metrics(), media_type=CONTENT_TYPE_LATEST)
