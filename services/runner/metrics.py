"""A runner's Prometheus metrics: executions, errors, queue and modelled or measured energy."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class _TargetSeries:
    """A target's series, looked up once: six ``labels()`` calls cost more per run than the updates."""

    executions: Counter
    errors: Counter
    queue: Gauge
    busy: Counter
    duration: Histogram
    energy: dict[str, Counter]  # by source, created on first use


class _Track:
    """``RunnerMetrics.track``'s context manager (a class: a generator-based one costs several µs a run)."""

    __slots__ = ("_s",)

    def __init__(self, series: _TargetSeries) -> None:
        self._s = series

    def __enter__(self) -> None:
        self._s.executions.inc()
        self._s.queue.inc()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self._s.queue.dec()
        if kind is not None:
            self._s.errors.inc()


class RunnerMetrics:
    """Metrics of one runner role (edge, peer, cloud); the target label is the action id."""

    def __init__(self, role: str) -> None:
        self.role = role
        self._series: dict[str, _TargetSeries] = {}
        _RUNNER.activate()

    def _of(self, target: str) -> _TargetSeries:
        s = self._series.get(target)
        if s is None:
            labels = (self.role, target)
            # The error series is created at 0 so error ratios have data.
            s = self._series[target] = _TargetSeries(
                _R_EXEC.labels(*labels),
                _R_ERRORS.labels(*labels),
                _R_QUEUE.labels(*labels),
                _R_BUSY.labels(*labels),
                _R_DURATION.labels(*labels),
                {},
            )
        return s

    def track(self, target: str) -> _Track:
        """Wrap one execution: count, in-flight gauge, errors. Its time and energy go to
        ``record``, which the runner calls once the response is out."""
        return _Track(self._of(target))

    def record(self, target: str, seconds: float, joules: float, source: str) -> None:
        """One finished execution: host seconds (busy time, duration) and the device's energy."""
        s = self._of(target)
        s.busy.inc(seconds)
        s.duration.observe(seconds)
        energy = s.energy.get(source)
        if energy is None:
            energy = s.energy[source] = _R_ENERGY.labels(self.role, target, source)
        energy.inc(max(joules, 0.0))
