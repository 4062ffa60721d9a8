"""The telemetry hub: polls every source in the background and serves snapshots from memory.

Each source has its own poll task and its own daemon worker thread. A read runs in that
thread under a timeout; a read that hangs holds up only its own source (no second read is
queued behind it, so threads never pile up), and ``snapshot()`` never waits on anything:
it is built from the last values, each with its age and a stale flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from services.common.logging import log_event
from services.core.schemas import Reading, RuntimeConditions, TelemetrySnapshot
from services.telemetry.config import Prefer
from services.telemetry.metrics import telemetry_metrics
from services.telemetry.schemas import DetectionView, ReadingRoute, SourceStatus, SourcesView
from services.telemetry.sources.base import CO_CPU, CO_MEM, CONDITION_READINGS, RSSI_P2P, RSSI_WIFI, Detection, Source
from services.telemetry.sources.scenario import ScenarioSource

log = logging.getLogger("autoscale.telemetry.hub")


class _Worker:
    """One daemon thread per source: a hung read can never block interpreter exit."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._q: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[list[Reading]]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=f"telemetry-{source.name}", daemon=True)
        self._thread.start()

    def submit(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[list[Reading]]:
        fut: asyncio.Future[list[Reading]] = loop.create_future()
        self._q.put((loop, fut))
        return fut

    def close(self) -> None:
        self._q.put(None)

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            loop, fut = item
            try:
                result: Any = self.source.read()
                ok = True
            except BaseException as exc:
                result, ok = exc, False
            with contextlib.suppress(RuntimeError):  # the loop closed while we were reading
                loop.call_soon_threadsafe(_resolve, fut, ok, result)


def _clamp01(v: float) -> float:
    return min(max(v, 0.0), 1.0)


def _resolve(fut: asyncio.Future[list[Reading]], ok: bool, result: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(result)
    else:
        fut.set_exception(result)


@dataclass
class SourceState:
    source: Source
    worker: _Worker | None = None
    reads: int = 0
    errors: int = 0
    timeouts: int = 0
    status: str = "pending"  # outcome of the last finished read: pending | ok | error | timeout
    in_flight: bool = False  # a read is running (possibly hung past its timeout)
    last_error: str = ""
    last_ok_mono: float | None = None
    last_duration_s: float = 0.0
    # reading name -> (reading, monotonic time it was taken)
    values: dict[str, tuple[Reading, float]] = field(default_factory=dict)


@dataclass
class Hub:
    sources: list[Source]
    scenario: ScenarioSource
    detections: list[Detection]
    refresh_s: float
    read_timeout_s: float
    stale_after_s: float
    prefer: Prefer = "measured"
    states: dict[str, SourceState] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _energy_exported: dict[str, float] = field(default_factory=dict)
    started: bool = False
    _stopping: bool = False

    def __post_init__(self) -> None:
        for src in [*self.sources, self.scenario]:
            if src.name in self.states:
                raise ValueError(f"two telemetry sources are named {src.name!r}")
            self.states[src.name] = SourceState(src)
        # Emulated phone power follows the co-runner load actually served (measured or not).
        self.scenario.served_co_cpu = self._served_co_cpu

    def _served_co_cpu(self) -> float | None:
        src = self.active().get(CO_CPU)
        if src is None or src is self.scenario:
            return None
        got = self.states[src.name].values.get(CO_CPU)
        return got[0].value if got else None

    # ------------------------------------------------------------------ which source serves what

    def candidates(self, reading: str) -> list[Source]:
        return [st.source for st in self.states.values() if reading in st.source.provides()]

    def active(self) -> dict[str, Source]:
        """Reading name -> the source that serves it now."""
        names: list[str] = []
        for st in self.states.values():
            names += [n for n in st.source.provides() if n not in names]
        out: dict[str, Source] = {}
        for name in names:
            cands = self.candidates(name)
            measured = [s for s in cands if s.kind == "measured"]
            emulated = [s for s in cands if s.kind == "emulated"]
            if self.prefer == "emulated" and name in CONDITION_READINGS and emulated:
                out[name] = emulated[0]
            else:
                out[name] = (measured or emulated)[0]
        return out

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        telemetry_metrics.activate()
        for st in self.states.values():
            st.worker = _Worker(st.source)
        # The scenario is in-process and instant: have it before the first snapshot is served.
        await self.refresh(self.scenario.name)
        for st in self.states.values():
            if st.source is not self.scenario:
                self._tasks.append(asyncio.create_task(self._poll(st), name=f"telemetry-poll-{st.source.name}"))
        self._tasks.append(
            asyncio.create_task(self._poll(self.states[self.scenario.name]), name="telemetry-poll-scenario")
        )
        self._tasks.append(asyncio.create_task(self._export_loop(), name="telemetry-export"))
        self.started = True

    async def stop(self) -> None:
        # The flag as well as cancel(): Python 3.11's wait_for can swallow a cancellation that
        # races with its inner future completing, and the loop must end anyway.
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        self._tasks.clear()
        for st in self.states.values():
            if st.worker:
                st.worker.close()

    async def refresh(self, name: str) -> None:
        """One read of one source now (bounded by its timeout); used at start and on PUT /scenario."""
        st = self.states[name]
        if not st.in_flight:
            await self._read_once(st)

    async def _poll(self, st: SourceState) -> None:
        interval = st.source.interval_s or self.refresh_s
        while not self._stopping:
            if not st.in_flight:  # never queue a read behind a hung one
                await self._read_once(st)
            await asyncio.sleep(interval)

    async def _read_once(self, st: SourceState) -> None:
        assert st.worker is not None
        timeout = st.source.timeout_s or self.read_timeout_s
        loop = asyncio.get_running_loop()
        fut = st.worker.submit(loop)
        t0 = time.monotonic()
        previous = st.status
        st.in_flight = True
        try:
            readings = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            st.timeouts += 1
            st.status = "timeout"
            st.last_error = f"read took longer than {timeout:g} s"
            telemetry_metrics.source_error(source_name=st.source.name, reason="timeout")
            if previous != "timeout":
                log_event(
                    log, "telemetry source timed out", level=logging.WARNING, source=st.source.name, timeout_s=timeout
                )
            # Collect the hung read in the background; the next read starts only after it returns.
            fut.add_done_callback(lambda f: self._late(st, f, t0))
            return
        except asyncio.CancelledError:
            # Our caller went away (shutdown, a client disconnecting from PUT /scenario): the
            # read itself goes on; let its result land and clear in_flight when it does.
            fut.add_done_callback(lambda f: self._late(st, f, t0))
            raise
        except Exception as exc:
            self._failed(st, exc, previous)
            return
        self._store(st, readings, t0, previous)

    def _late(self, st: SourceState, fut: asyncio.Future[list[Reading]], t0: float) -> None:
        if fut.cancelled():
            st.in_flight = False
            return
        exc = fut.exception()
        if exc is not None:
            self._failed(st, exc, "timeout")
        else:
            self._store(st, fut.result(), t0, "timeout")

    def _failed(self, st: SourceState, exc: BaseException, previous: str) -> None:
        st.in_flight = False
        st.errors += 1
        st.status = "error"
        st.last_error = f"{type(exc).__name__}: {exc}"
        telemetry_metrics.source_error(source_name=st.source.name, reason="error")
        if previous != "error":
            log_event(log, "telemetry source failed", level=logging.WARNING, source=st.source.name, error=st.last_error)

    def _store(self, st: SourceState, readings: list[Reading], t0: float, previous: str) -> None:
        now = time.monotonic()
        st.in_flight = False
        st.reads += 1
        st.status = "ok"
        st.last_ok_mono = now
        st.last_duration_s = now - t0
        telemetry_metrics.observe_read(source_name=st.source.name, seconds=st.last_duration_s)
        for r in readings:
            st.values[r.name] = (r, now)
        if previous in ("error", "timeout"):
            log_event(log, "telemetry source recovered", source=st.source.name)

    # ------------------------------------------------------------------ views

    def current(self) -> dict[str, Reading]:
        """The served reading per name, with its age and stale flag (no I/O)."""
        now = time.monotonic()
        out: dict[str, Reading] = {}
        for name, src in self.active().items():
            got = self.states[src.name].values.get(name)
            if got is None:
                continue
            reading, taken = got
            age = now - taken
            out[name] = reading.model_copy(update={"age_s": round(age, 3), "stale": age > self.stale_after_s})
        return out

    def _conditions(self, readings: dict[str, Reading]) -> RuntimeConditions:
        values: dict[str, float] = {}
        scenario_values = self.states[self.scenario.name].values
        for name in CONDITION_READINGS:
            r = readings.get(name)
            if r is None and name in scenario_values:
                # The measured source has produced nothing yet (it may hang from the start):
                # the scenario stands in so the decider always gets a complete state.
                r = scenario_values[name][0]
            if r is not None:
                values[name] = r.value
        return RuntimeConditions(
            co_cpu=_clamp01(values.get(CO_CPU, 0.0)),
            co_mem=_clamp01(values.get(CO_MEM, 0.0)),
            rssi_wifi_dbm=min(values.get(RSSI_WIFI, -50.0), 0.0),
            rssi_p2p_dbm=min(values.get(RSSI_P2P, -50.0), 0.0),
        )

    def snapshot(self) -> TelemetrySnapshot:
        readings = self.current()
        return TelemetrySnapshot(
            conditions=self._conditions(readings),
            readings=readings,
            scenario=self.scenario.label,
            timestamp=time.time(),
        )

    def ready(self) -> bool:
        """Started, the scenario has answered, and every source has had its first attempt
        (a value, an error or a timeout): the first snapshot a client sees is as complete as
        this host allows, and a hung sensor delays readiness by one read timeout at most."""
        if not self.started or not self.states[self.scenario.name].values:
            return False
        return all(st.status != "pending" for st in self.states.values())

    def sources_view(self) -> SourcesView:
        now = time.monotonic()
        active = self.active()
        readings = self.current()
        return SourcesView(
            prefer=self.prefer,
            scenario=self.scenario.label,
            stale_after_s=self.stale_after_s,
            readings={
                name: ReadingRoute(
                    source=src.name,
                    kind=src.kind,
                    candidates=[f"{c.name} ({c.kind})" for c in self.candidates(name)],
                    has_value=name in readings,
                    stale=readings[name].stale if name in readings else None,
                    age_s=readings[name].age_s if name in readings else None,
                )
                for name, src in sorted(active.items())
            },
            sources=[
                SourceStatus(
                    name=st.source.name,
                    kind=st.source.kind,
                    describe=st.source.describe(),
                    provides=list(st.source.provides()),
                    status=st.status,
                    in_flight=st.in_flight,
                    reads=st.reads,
                    errors=st.errors,
                    timeouts=st.timeouts,
                    last_error=st.last_error,
                    last_ok_age_s=None if st.last_ok_mono is None else round(now - st.last_ok_mono, 3),
                    last_duration_s=round(st.last_duration_s, 4),
                )
                for st in self.states.values()
            ],
            detection=[DetectionView(family=d.family, found=d.found, absent=d.absent) for d in self.detections],
        )

    # ------------------------------------------------------------------ metrics

    async def _export_loop(self) -> None:
        while not self._stopping:
            try:
                self.export_metrics()
            except Exception:
                log.exception("telemetry metrics export failed")
            await asyncio.sleep(self.refresh_s)

    def export_metrics(self) -> None:
        """Mirror the served readings into the Prometheus gauges (also refreshes ages of hung sources)."""
        for name, r in self.current().items():
            telemetry_metrics.set_age(reading=name, age_s=r.age_s, stale=r.stale)
            if name == CO_CPU:
                telemetry_metrics.set_corunner(cpu_ratio=r.value, source=r.source)
            elif name == CO_MEM:
                telemetry_metrics.set_corunner(memory_ratio=r.value, source=r.source)
            elif name in (RSSI_WIFI, RSSI_P2P):
                telemetry_metrics.set_rssi(link="wifi" if name == RSSI_WIFI else "p2p", source=r.source, dbm=r.value)
            elif name.startswith("power."):
                _, device, processor = name.split(".", 2)
                telemetry_metrics.set_power(device=device, processor=processor, source=r.source, watts=r.value)
            elif name.startswith("energy."):
                _, device, processor = name.split(".", 2)
                delta = r.value - self._energy_exported.get(name, 0.0)
                self._energy_exported[name] = r.value
                telemetry_metrics.add_energy(device=device, processor=processor, source=r.source, joules=delta)
            elif name.startswith("cpufreq."):
                telemetry_metrics.set_cpu_frequency(policy=name.split(".", 1)[1], hertz=r.value * 1e9)
