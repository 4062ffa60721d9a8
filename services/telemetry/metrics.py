"""The telemetry service's Prometheus metrics: readings with their source, ages, source errors."""

from __future__ import annotations

import contextlib
import threading

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS, MetricGroup, metric_name

_T_POWER = Gauge(
    metric_name("telemetry_power_watts"),
    "Power draw per device and processor",
    ["device", "processor", "source"],
    multiprocess_mode="mostrecent",
    registry=None,
)
_T_ENERGY = Counter(
    metric_name("telemetry_energy_joules_total"),
    "Energy counted by a hardware energy meter (e.g. RAPL)",
    ["device", "processor", "source"],
    registry=None,
)
_T_RSSI = Gauge(
    metric_name("telemetry_rssi_dbm"),
    "Received signal strength per link (wifi, p2p)",
    ["link", "source"],
    multiprocess_mode="mostrecent",
    registry=None,
)
_T_CO_CPU = Gauge(
    metric_name("telemetry_corunner_cpu_ratio"),
    "CPU utilisation of co-running (non-mesh) processes, 0-1",
    ["source"],
    multiprocess_mode="mostrecent",
    registry=None,
)
_T_CO_MEM = Gauge(
    metric_name("telemetry_corunner_memory_ratio"),
    "Memory used by co-running (non-mesh) processes, 0-1",
    ["source"],
    multiprocess_mode="mostrecent",
    registry=None,
)
_T_AGE = Gauge(
    metric_name("telemetry_reading_age_seconds"),
    "Seconds since the reading was last refreshed successfully",
    ["reading"],
    multiprocess_mode="mostrecent",
    registry=None,
)
_T_STALE = Gauge(
    metric_name("telemetry_reading_stale"),
    "1 when the reading is older than the staleness threshold",
    ["reading"],
    multiprocess_mode="mostrecent",
    registry=None,
)
_T_CPU_FREQ = Gauge(
    metric_name("telemetry_cpu_frequency_hertz"),
    "Mean CPU frequency per cpufreq policy over the last interval",
    ["policy"],
    multiprocess_mode="mostrecent",
    registry=None,
)
_T_SOURCE_ERRORS = Counter(
    metric_name("telemetry_source_errors_total"),
    "Source reads that failed or timed out",
    ["source_name", "reason"],
    registry=None,
)
_T_READ = Histogram(
    metric_name("telemetry_read_seconds"),
    "Duration of one successful read of a source",
    ["source_name"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)


_TELEMETRY = MetricGroup(
    _T_POWER,
    _T_ENERGY,
    _T_RSSI,
    _T_CO_CPU,
    _T_CO_MEM,
    _T_AGE,
    _T_STALE,
    _T_CPU_FREQ,
    _T_SOURCE_ERRORS,
    _T_READ,
)


class TelemetryMetrics:
    """Gauges mirroring the telemetry service's current readings (module singleton
    ``telemetry_metrics``; the telemetry service calls ``activate()`` at start).

    When the source serving a value changes (measured <-> emulated), the old series is
    removed so a dashboard never shows a frozen value next to the live one."""

    def __init__(self) -> None:
        self._served_by: dict[tuple[int, tuple[str, ...]], tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def activate(self) -> None:
        _TELEMETRY.activate()

    def _switch(self, gauge: Gauge, key: tuple[str, ...], labels: tuple[str, ...]) -> None:
        ident = (id(gauge), key)  # the gauges are module singletons: their id is stable
        with self._lock:
            old = self._served_by.get(ident)
            if old is not None and old != labels:
                with contextlib.suppress(KeyError):  # nothing to remove: that series is gone already
                    gauge.remove(*old)
            self._served_by[ident] = labels

    def set_power(self, *, device: str, processor: str, source: str, watts: float) -> None:
        labels = (device, processor, source)
        self._switch(_T_POWER, (device, processor), labels)
        _T_POWER.labels(*labels).set(watts)

    def add_energy(self, *, device: str, processor: str, source: str, joules: float) -> None:
        if joules > 0:  # a counter never goes back (meter wrap-around is handled by the source)
            _T_ENERGY.labels(device, processor, source).inc(joules)

    def set_rssi(self, *, link: str, source: str, dbm: float) -> None:
        self._switch(_T_RSSI, (link,), (link, source))
        _T_RSSI.labels(link, source).set(dbm)

    def set_corunner(self, *, cpu_ratio: float | None = None, memory_ratio: float | None = None, source: str) -> None:
        if cpu_ratio is not None:
            self._switch(_T_CO_CPU, (), (source,))
            _T_CO_CPU.labels(source).set(cpu_ratio)
        if memory_ratio is not None:
            self._switch(_T_CO_MEM, (), (source,))
            _T_CO_MEM.labels(source).set(memory_ratio)

    def set_cpu_frequency(self, *, policy: str, hertz: float) -> None:
        _T_CPU_FREQ.labels(policy).set(hertz)

    def set_age(self, *, reading: str, age_s: float, stale: bool) -> None:
        _T_AGE.labels(reading).set(age_s)
        _T_STALE.labels(reading).set(1 if stale else 0)

    def source_error(self, *, source_name: str, reason: str) -> None:
        _T_SOURCE_ERRORS.labels(source_name, reason).inc()

    def observe_read(self, *, source_name: str, seconds: float) -> None:
        _T_READ.labels(source_name).observe(seconds)


telemetry_metrics = TelemetryMetrics()
