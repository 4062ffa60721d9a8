"""A runner's Prometheus metrics: executions, errors, queue and modelled or measured energy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS, MetricGroup, metric_name

_R_EXEC = Counter(
    metric_name("runner_executions_total"),
    "Network executions started on a runner",
    ["role", "target"],
    registry=None,
)
_R_ERRORS = Counter(
    metric_name("runner_errors_total"),
    "Network executions that raised",
    ["role", "target"],
    registry=None,
)
_R_QUEUE = Gauge(
    metric_name("runner_queue_depth"),
    "Executions in flight (waiting for or holding the executor)",
    ["role", "target"],
    multiprocess_mode="livesum",
    registry=None,
)
_R_BUSY = Counter(
    metric_name("runner_busy_seconds_total"),
    "Wall seconds spent executing; rate() is the utilisation",
    ["role", "target"],
    registry=None,
)
_R_DURATION = Histogram(
    metric_name("runner_execution_seconds"),
    "Host wall time of one execution",
    ["role", "target"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
_R_ENERGY = Counter(
    metric_name("runner_energy_joules_total"),
    "Energy the executing device spent (source: measured|modelled)",
    ["role", "target", "source"],
    registry=None,
)


_RUNNER = MetricGroup(_R_EXEC, _R_ERRORS, _R_QUEUE, _R_BUSY, _R_DURATION, _R_ENERGY)


class RunnerMetrics:
    """Metrics of one runner role (edge, peer, cloud); the target label is the action id."""

    def __init__(self, role: str) -> None:
        self.role = role
        _RUNNER.activate()

    @contextmanager
    def track(self, target: str) -> Iterator[None]:
        """Wrap one execution: count, in-flight gauge, errors. Its time and energy go to
        ``record``, which the runner calls once the response is out."""
        labels = (self.role, target)
        _R_EXEC.labels(*labels).inc()
        _R_ERRORS.labels(*labels)  # create the series at 0 so error ratios have data
        queue = _R_QUEUE.labels(*labels)
        queue.inc()
        try:
            yield
        except BaseException:
            _R_ERRORS.labels(*labels).inc()
            raise
        finally:
            queue.dec()

    def record(self, target: str, seconds: float, joules: float, source: str) -> None:
        """One finished execution: host seconds (busy time, duration) and the device's energy."""
        labels = (self.role, target)
        _R_BUSY.labels(*labels).inc(seconds)
        _R_DURATION.labels(*labels).observe(seconds)
        _R_ENERGY.labels(self.role, target, source).inc(max(joules, 0.0))
