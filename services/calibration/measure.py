"""Time the networks with the real engine, per precision, thread count, frequency step and co-runner.

Each cell: the ONNX Runtime session the runner would use (``LoadedModel.summarize``, the runner's
own call), ``warmup`` runs discarded, then ``reps`` timed runs (fewer when a cell passes
``max_cell_s``, never fewer than 3); the median and the 10th/90th percentiles are kept. The
co-runner load during the cell is measured with the telemetry service's own psutil method
(everything on the host but this process), so that the fitted interference factors speak the
same units as the state the decider observes. The process and its co-runners are pinned to the
plan's CPUs. The plan is walked ``rounds`` times so that drift on a shared host averages out, and
stops at ``time_limit_s`` (the fit then uses what was measured, and the report says so).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from services.calibration.hardware import Cpufreq, PowerMeter
from services.calibration.models import CalibrationPlan, Cell, Condition
from services.common.corunners import CoRunners, CoRunnerSpec
from services.common.engines import get_engine
from services.common.engines.base import LoadedModel
from services.common.model_store import ModelStore
from services.common.tensors import synthetic
from services.core.schemas import Precision
from services.telemetry.sources.corunner import CoRunnerSource

ProgressFn = Callable[[str], None]
TOP_K = 5  # the runner's default: the same in-graph summary work as a served request


def corunner_specs(condition: Condition, cpus: list[int]) -> list[CoRunnerSpec]:
    """A CPU co-runner burns every calibrated CPU; a memory co-runner streams on them."""
    if condition == "cpu":
        return [CoRunnerSpec("cpu", cpus=(c,)) for c in cpus]
    if condition == "mem":
        return [CoRunnerSpec("mem", cpus=tuple(cpus))]
    return []


@contextlib.contextmanager
def pinned(cpus: list[int]) -> Iterator[None]:
    """Run this process (and the engine threads it starts) on ``cpus`` only."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass
class Measurer:
    plan: CalibrationPlan
    store: ModelStore
    cpufreq: Cpufreq
    meter: PowerMeter | None = None
    on_cell: ProgressFn = lambda _desc: None
    cells: list[Cell] = field(default_factory=list)
    idle_w: dict[int, float] = field(default_factory=dict)  # step -> sensor power at rest
    truncated: bool = False

    def steps_khz(self) -> list[int]:
        """The frequency steps to measure: a spread of the settable ones, else none (the current one)."""
        return self.cpufreq.steps(self.plan.max_steps) if self.cpufreq.settable else []

    def total_cells(self) -> int:
        p = self.plan
        per_step = len(p.models) * len(p.conditions) * len(p.precisions) * len(p.threads)
        return p.rounds * max(1, len(self.steps_khz())) * per_step

    def run(self) -> list[Cell]:
        """Walk the plan (``rounds`` x steps x models x conditions x precisions x threads) until done
        or out of time."""
        deadline = time.monotonic() + self.plan.time_limit_s
        # A fresh mesh id: no other process (another mesh on this host) is taken for part of us.
        co = CoRunnerSource(mesh_id=f"calibrate-{uuid.uuid4().hex}", own_pid=os.getpid())
        steps: list[int | None] = list(self.steps_khz()) or [None]
        try:
            with pinned(self.plan.cpus):
                for rnd in range(self.plan.rounds):
                    for step, khz in enumerate(steps):
                        freq_ghz = self._set_step(khz)
                        if self.meter is not None and step not in self.idle_w:
                            idle = self.meter.idle()
                            if idle is not None:
                                self.idle_w[step] = idle
                        for model in self.plan.models:
                            if not self._model(model, rnd, step, freq_ghz, co, deadline):
                                self.truncated = True
                                return self.cells
        finally:
            self.cpufreq.restore()
        return self.cells

    def _set_step(self, khz: int | None) -> float | None:
        if khz is None:
            return self.cpufreq.current_ghz()
        self.cpufreq.set(khz)
        time.sleep(self.plan.settle_s)
        return khz / 1e6

    def _sessions(self, model: str) -> dict[tuple[Precision, int], LoadedModel]:
        engine = get_engine("onnxruntime")
        return {
            (precision, threads): engine.load(self.store.path(model, precision), device="cpu", threads=threads)
            for precision in self.plan.precisions
            for threads in self.plan.threads
        }

    def _model(
        self, model: str, rnd: int, step: int, freq_ghz: float | None, co: CoRunnerSource, deadline: float
    ) -> bool:
        """Every cell of one network at one step; False when the time limit stopped it."""
        sessions = self._sessions(model)
        feeds = {spec.name: synthetic(spec) for spec in self.store.info(model).inputs}
        for condition in self.plan.conditions:
            with CoRunners(corunner_specs(condition, self.plan.cpus), max_s=self.plan.time_limit_s + 60):
                time.sleep(self.plan.settle_s if condition != "none" else 0.0)
                for (precision, threads), session in sessions.items():
                    if time.monotonic() > deadline:
                        return False
                    self.on_cell(f"{model} {precision.value} x{threads} {condition}")
                    times, watts, co_cpu, co_mem = self._time(session, feeds, co)
                    self.cells.append(
                        Cell(
                            model=model,
                            precision=precision,
                            threads=threads,
                            step=step,
                            freq_ghz=freq_ghz,
                            condition=condition,
                            round=rnd,
                            n=len(times),
                            median_ms=float(np.median(times)) * 1e3,
                            p10_ms=float(np.percentile(times, 10)) * 1e3,
                            p90_ms=float(np.percentile(times, 90)) * 1e3,
                            co_cpu=co_cpu,
                            co_mem=co_mem,
                            power_w=watts,
                        )
                    )
        return True

    def _time(
        self, session: LoadedModel, feeds: dict[str, np.ndarray], co: CoRunnerSource
    ) -> tuple[list[float], float | None, float, float]:
        """One cell: warm-up, timed runs, the power over them and the co-runner load around them."""
        for _ in range(self.plan.warmup):
            session.summarize(feeds, TOP_K)
        co.read()  # start of the load-measurement interval

        def timed() -> list[float]:
            out: list[float] = []
            stop_at = time.monotonic() + self.plan.max_cell_s
            for i in range(self.plan.reps):
                t0 = time.perf_counter()
                session.summarize(feeds, TOP_K)
                out.append(time.perf_counter() - t0)
                if i >= 2 and time.monotonic() > stop_at:
                    break
            return out

        times, watts = self.meter.measure(timed) if self.meter is not None else (timed(), None)
        load = {r.name: r.value for r in co.read()}
        return times, watts, load.get("co_cpu", 0.0), load.get("co_mem", 0.0)
