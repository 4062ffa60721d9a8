"""One calibration, end to end: plan, build the models, measure, fit, write the profile and the report."""

from __future__ import annotations

import datetime as dt
import platform
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.calibration.fit import PowerInputs, fit_profile
from services.calibration.hardware import (
    Cpufreq,
    cpu_model,
    detect_power,
    hostname_label,
    load_average,
    logical_cpus,
    usable_cpus,
)
from services.calibration.measure import Measurer
from services.calibration.models import (
    CONDITIONS,
    CalibrationPlan,
    CalibrationReport,
    Cell,
    Condition,
    HostFacts,
    ProfileKind,
    ThreadRow,
)
from services.calibration.profile_yaml import ProfileText, Provenance
from services.calibration.report import write_report
from services.common.config_files import load_profile
from services.common.corunners import llc_bytes
from services.common.engines import get_engine
from services.common.model_store import ModelStore
from services.core.schemas import Precision


def thread_counts(n_cpus: int) -> list[int]:
    """1, 2, 4, ... up to the CPU count, and the count itself."""
    out = [1]
    while out[-1] * 2 <= n_cpus:
        out.append(out[-1] * 2)
    return sorted({*out, n_cpus})


@dataclass
class CalibrateOptions:
    """Everything ``autoscale calibrate`` can be told (defaults: the full run; ``quick()`` the short one)."""

    model_cache: Path
    out_dir: Path
    models: list[str]
    name: str = field(default_factory=lambda: f"calibrated_{hostname_label()}")
    kind: ProfileKind = "phone"
    precisions: list[Precision] = field(default_factory=lambda: [Precision.fp32, Precision.int8])
    cpus: list[int] = field(default_factory=usable_cpus)
    threads: list[int] | None = None
    fit_threads: int = 2
    conditions: list[Condition] = field(default_factory=lambda: list(CONDITIONS))
    warmup: int = 5
    reps: int = 20
    rounds: int = 2
    max_cell_s: float = 4.0
    max_steps: int = 5
    time_limit_s: float = 1800.0
    radio_from: str = "mi8pro"
    core_w: float | None = None
    profiles_dir: Path | None = None
    command: str = "autoscale calibrate"

    def quick(self) -> CalibrateOptions:
        """The bounded short run: three small networks, fewer repetitions, one round, two steps at most."""
        self.warmup, self.reps, self.rounds, self.max_cell_s, self.max_steps = 3, 10, 1, 1.5, 2
        self.time_limit_s = min(self.time_limit_s, 90.0)
        return self

    def plan(self) -> CalibrationPlan:
        threads = self.threads or thread_counts(len(self.cpus))
        fit = min(self.fit_threads, len(self.cpus))
        return CalibrationPlan(
            models=self.models,
            precisions=self.precisions,
            threads=sorted({*threads, fit}),
            fit_threads=fit,
            cpus=self.cpus,
            conditions=self.conditions,
            warmup=self.warmup,
            reps=self.reps,
            rounds=self.rounds,
            max_cell_s=self.max_cell_s,
            max_steps=self.max_steps,
            time_limit_s=self.time_limit_s,
        )


@dataclass
class Progress:
    """Callbacks a front end (the CLI's progress bars) gets: a stage with its size, then one step at a time."""

    stage: Callable[[str, int], None] = lambda _name, _total: None
    step: Callable[[str], None] = lambda _desc: None


def build_models(store: ModelStore, plan: CalibrationPlan, progress: Progress) -> None:
    """Build (or find in the cache) every network at every precision before any timing starts."""
    progress.stage("building models", len(plan.models) * len(plan.precisions))
    for model in plan.models:
        for precision in plan.precisions:
            progress.step(f"{model} {precision.value}")
            store.path(model, precision)


def calibrate(opts: CalibrateOptions, progress: Progress | None = None) -> CalibrationReport:
    """Measure, fit, write ``<out>/<name>.yaml`` and the fit report; returns the report."""
    progress = progress or Progress()
    t0, started = time.monotonic(), dt.datetime.now(dt.UTC)
    plan = opts.plan()
    store = ModelStore(opts.model_cache, plan.models)
    build_models(store, plan, progress)
    cpufreq = Cpufreq(plan.cpus)
    meter, power_facts = detect_power()
    measurer = Measurer(plan, store, cpufreq, meter, on_cell=progress.step)
    load_start = load_average()
    progress.stage("measuring", measurer.total_cells())
    cells = measurer.run()
    steps_khz = measurer.steps_khz()
    current = cpufreq.current_ghz()
    freqs = [k / 1e6 for k in steps_khz] if steps_khz else ([current] if current else None)
    host = HostFacts(
        hostname=hostname_label(),
        platform=platform.platform(),
        cpu_model=cpu_model(),
        logical_cpus=logical_cpus(),
        cpus=plan.cpus,
        llc_bytes=llc_bytes(),
        load_avg_start=load_start,
        engine=f"onnxruntime {get_engine('onnxruntime').version}",
        cpufreq=cpufreq.facts(steps_khz or ([round(current * 1e6)] if current else [])),
        power=power_facts,
    )
    features = {m: store.info(m).features for m in plan.models}
    power = PowerInputs(idle_w=measurer.idle_w, sensor=power_facts.sensor)
    if opts.core_w is not None:
        power.core_w = opts.core_w
    proc_name = f"{host.cpu_model}, {plan.fit_threads} thread(s) on CPUs {plan.cpus}, {host.engine}"
    result = fit_profile(cells, features, fit_threads=plan.fit_threads, name=proc_name, freqs_ghz=freqs, power=power)
    date = started.date().isoformat()
    prov = Provenance(host=host.hostname, date=date, mape_pct=result.mape_pct)
    # No meter and no radio here: a phone's radio and base power come from a reference profile.
    ref = load_profile(opts.radio_from, opts.profiles_dir) if opts.kind == "phone" else None
    text, _profile = ProfileText(
        name=opts.name,
        kind=opts.kind,
        description=f"{host.cpu_model} ({host.logical_cpus} logical CPUs) measured by autoscale calibrate, {date}",
        processor=result.processor,
        params={p.name: p for p in result.params},
        prov=prov,
        freq_note=host.cpufreq.detail,
        threads_note=f"ONNX Runtime threads the latencies were fitted at, on CPUs {plan.cpus}",
        radio=ref.radio if ref is not None else None,
        radio_note=f"copied from profile {opts.radio_from}: no radio or power meter is measured here",
        base_power_w=ref.base_power_w if ref is not None else None,
    ).validated()
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    profile_path = opts.out_dir / f"{opts.name}.yaml"
    profile_path.write_text(text)
    report = CalibrationReport(
        name=opts.name,
        kind=opts.kind,
        started=started.isoformat(timespec="seconds"),
        duration_s=time.monotonic() - t0,
        command=opts.command,
        truncated=measurer.truncated,
        host=host,
        plan=plan,
        cells=cells,
        params=result.params,
        networks=result.networks,
        mape_pct=result.mape_pct,
        threads=thread_rows(cells),
        co_load=co_load(cells),
        profile_path=str(profile_path),
        notes=notes(host, measurer.truncated),
    )
    write_report(report, opts.out_dir)
    return report


def thread_rows(cells: list[Cell]) -> list[ThreadRow]:
    """Measured latency per thread count, no co-runner, top step, medians over rounds."""
    top = max((c.step for c in cells), default=0)
    groups: dict[tuple[str, Precision, int], list[Cell]] = defaultdict(list)
    for c in cells:
        if c.condition == "none" and c.step == top:
            groups[(c.model, c.precision, c.threads)].append(c)
    return [
        ThreadRow(
            model=m,
            precision=p,
            threads=t,
            median_ms=float(np.median([c.median_ms for c in g])),
            p10_ms=float(np.median([c.p10_ms for c in g])),
            p90_ms=float(np.median([c.p90_ms for c in g])),
        )
        for (m, p, t), g in groups.items()
    ]


def co_load(cells: list[Cell]) -> dict[str, dict[str, float]]:
    by: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        by[c.condition].append(c)
    return {
        cond: {"co_cpu": float(np.median([c.co_cpu for c in g])), "co_mem": float(np.median([c.co_mem for c in g]))}
        for cond, g in by.items()
    }


def notes(host: HostFacts, truncated: bool) -> list[str]:
    out = [f"cpufreq: {host.cpufreq.detail}", f"power: {host.power.detail}"]
    if host.load_avg_start is not None:
        out.append(
            f"load average at start {host.load_avg_start[0]:.2f} on {host.logical_cpus} logical CPUs: other work on "
            "this host runs alongside the measurement (medians and several rounds absorb some of it)"
        )
    if truncated:
        out.append("the time limit stopped the measurement early: the fit uses the cells measured so far")
    return out
