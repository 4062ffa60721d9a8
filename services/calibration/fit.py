"""Fit a processor profile to measured latencies: least squares on the cost model's own equations.

The model being fitted *is* ``services.core.costmodel.inference_time``: every evaluation builds a
``ProcessorProfile`` from the parameter vector and predicts each measured cell with it, at the
co-runner load measured during that cell. Residuals are log(predicted / measured) (relative errors:
a 2 ms and a 200 ms network weigh the same). Only what the measurements can identify is fitted:

* throughput per precision: always;
* launch and per-layer costs (conv, fc, rc): a term is added only when it makes the per-network
  design matrix (MACs, 1, conv, fc, rc) gain rank with at least one network to spare;
* memory-bound share: only with two or more frequency steps;
* interference factors: only when the measured co-runner load (co_cpu, co_mem) varied enough
  across the cells to tell them apart from the baseline.

Everything else is ``assumed`` with the reason. Power: with a sensor, busy power per step is the
median sensor power during the un-loaded cells minus the idle power measured before them;
without one it is assumed from a cited default (the Mi8Pro CPU of the paper's Table II) and the
P(f) rule of docs/profiles.md, and says so.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from services.calibration.models import Cell, CellFit, FitParam, NetworkFit
from services.core import costmodel
from services.core.profiles import DeviceProfile, ProcessorProfile
from services.core.schemas import Location, ModelFeatures, Precision, Processor, RuntimeConditions, Target

# Cited defaults for a host without a power sensor (paper Table II: Mi8Pro CPU 5.5 W over its 4 gold
# cores; idle from the mi8pro profile's 0.12 W cluster idle): the host then costs what a phone core would.
ASSUMED_CORE_W = 5.5 / 4
ASSUMED_IDLE_CORE_W = 0.12 / 4
ASSUMED_POWER_WHY = "no power sensor readable here: Mi8Pro gold-core busy power, paper Table II 5.5 W / 4 cores"
MIN_CPU_SPREAD = 0.1  # co_cpu must vary this much across the cells to identify interference.cpu
MIN_MEM_SPREAD = 0.05


@dataclass(frozen=True)
class _Free:
    name: str
    lo: float
    hi: float
    start: float
    log: bool = False  # optimise log(value): positive, and steps are relative


@dataclass
class PowerInputs:
    idle_w: dict[int, float] = field(default_factory=dict)  # sensor power at rest per step
    sensor: str | None = None
    core_w: float = ASSUMED_CORE_W


@dataclass
class Shape:
    """What the fit does not change: the processor's name, cores, frequency steps and power."""

    name: str
    cores: int
    freqs_ghz: list[float] | None  # None: the frequency is unknown (power_w, no DVFS table)
    busy_w: list[float]
    idle_w: float
    supports_rc: bool = True

    def processor(self, v: dict[str, float], precisions: list[Precision]) -> ProcessorProfile:
        dvfs = (
            {"steps": len(self.freqs_ghz), "freqs_ghz": self.freqs_ghz, "busy_w": self.busy_w}
            if self.freqs_ghz
            else None
        )
        return ProcessorProfile.model_validate(
            {
                "name": self.name,
                "cores": self.cores,
                "utilisation": 1.0,
                "dvfs": dvfs,
                "power_w": None if dvfs else self.busy_w[-1],
                "idle_w": self.idle_w,
                "throughput_gmacs": {p.value: v[f"throughput_gmacs.{p.value}"] for p in precisions},
                "layer_ms": {"conv": v["layer_ms.conv"], "fc": v["layer_ms.fc"], "rc": v["layer_ms.rc"]},
                "launch_ms": v["launch_ms"],
                "memory_bound": v["memory_bound"],
                "interference": {"cpu": v["interference.cpu"], "mem": v["interference.mem"]},
                "supports_rc": self.supports_rc,
            }
        )


@dataclass
class FitResult:
    processor: ProcessorProfile
    params: list[FitParam]
    networks: list[NetworkFit]
    mape_pct: float


def _target(precision: Precision, step: int, shape: Shape) -> Target:
    return Target(
        runner=Location.edge, processor=Processor.cpu, precision=precision, dvfs=step if shape.freqs_ghz else None
    )


def _linear_terms(features: dict[str, ModelFeatures]) -> tuple[list[str], dict[str, str]]:
    """Launch and per-layer terms the measured networks can identify, and why the others cannot."""
    nets = list(features.values())
    cols = {
        "launch_ms": [1.0] * len(nets),
        "layer_ms.conv": [float(f.conv) for f in nets],
        "layer_ms.fc": [float(f.fc) for f in nets],
        "layer_ms.rc": [float(f.rc) for f in nets],
    }
    chosen: list[list[float]] = [[float(f.macs) for f in nets]]
    free: list[str] = []
    why: dict[str, str] = {}
    for name, col in cols.items():
        if not any(col):
            why[name] = f"no measured network has {name.split('.')[-1]} layers"
            continue
        trial = [*chosen, col]
        a = np.array(trial).T
        a = a / np.maximum(np.linalg.norm(a, axis=0), 1e-12)
        if len(nets) < len(trial) + 1 or np.linalg.matrix_rank(a, tol=1e-3) < len(trial):
            why[name] = f"not identifiable from {len(nets)} networks (needs more, with varied layer counts)"
            continue
        chosen, free = trial, [*free, name]
    return free, why


def _free_params(
    rows: list[Cell], features: dict[str, ModelFeatures], precisions: list[Precision], n_steps: int
) -> tuple[list[_Free], dict[str, str]]:
    free = [_Free(f"throughput_gmacs.{p.value}", 1e-3, 1e5, 20.0, log=True) for p in precisions]
    linear, why = _linear_terms(features)
    free += [_Free(name, 0.0, 1e3, 0.05) for name in linear]
    if n_steps >= 2:
        free.append(_Free("memory_bound", 0.0, 0.95, 0.2))
    else:
        why["memory_bound"] = "one frequency measured (cpufreq not settable): the share is not identifiable"
    for key, attr, spread in (("cpu", "co_cpu", MIN_CPU_SPREAD), ("mem", "co_mem", MIN_MEM_SPREAD)):
        values = [getattr(c, attr) for c in rows]
        moved = max(values) - min(values) if values else 0.0
        if any(c.condition == key for c in rows) and moved >= spread:
            free.append(_Free(f"interference.{key}", 0.0, 20.0, 1.0))
        else:
            why[f"interference.{key}"] = (
                f"measured {attr} moved by only {moved:.3f} across the cells (< {spread}): not identifiable; "
                + ("the memory co-runner's slowdown shows through its CPU share" if key == "mem" else "")
            ).rstrip("; ")
    return free, why


def _predict(proc: ProcessorProfile, rows: list[Cell], features: dict[str, ModelFeatures], shape: Shape) -> np.ndarray:
    profile = DeviceProfile.model_validate({"name": "fit", "kind": "server", "processors": {Processor.cpu: proc}})
    return np.array(
        [
            costmodel.inference_time(
                profile,
                features[c.model],
                _target(c.precision, c.step, shape),
                RuntimeConditions(co_cpu=min(max(c.co_cpu, 0.0), 1.0), co_mem=min(max(c.co_mem, 0.0), 1.0)),
            )
            * 1e3
            for c in rows
        ]
    )


_DEFAULTS = {
    "launch_ms": 0.0,
    "layer_ms.conv": 0.0,
    "layer_ms.fc": 0.0,
    "layer_ms.rc": 0.0,
    "memory_bound": 0.0,
    "interference.cpu": 0.0,
    "interference.mem": 0.0,
}


MAX_REL_ERR_PCT = 100.0  # a parameter whose standard error exceeds its value is not determined by the data


@dataclass
class _Solution:
    values: dict[str, float]
    rel_err: dict[str, float | None]
    at_bound: set[str]


def _solve(
    free: list[_Free], rows: list[Cell], used: dict[str, ModelFeatures], shape: Shape, precisions: list[Precision]
) -> _Solution:
    measured = np.array([c.median_ms for c in rows])

    def values(x: np.ndarray) -> dict[str, float]:
        v = dict(_DEFAULTS)
        v.update({f.name: math.exp(xi) if f.log else float(xi) for f, xi in zip(free, x, strict=True)})
        return v

    def residuals(x: np.ndarray) -> np.ndarray:
        pred = _predict(shape.processor(values(x), precisions), rows, used, shape)
        return np.log(pred / measured)

    x0 = np.array([math.log(f.start) if f.log else f.start for f in free])
    lo = np.array([math.log(f.lo) if f.log else f.lo for f in free])
    hi = np.array([math.log(f.hi) if f.log else f.hi for f in free])
    sol = least_squares(residuals, x0, bounds=(lo, hi), x_scale="jac")
    v = values(sol.x)
    dof = max(len(rows) - len(free), 1)
    cov = np.linalg.pinv(sol.jac.T @ sol.jac) * float(np.sum(sol.fun**2)) / dof
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    rel: dict[str, float | None] = {}
    bound: set[str] = set()
    for f, s, xi, a, b in zip(free, se, sol.x, lo, hi, strict=True):
        value = v[f.name]
        rel[f.name] = float(s) * 100.0 if f.log else (float(s) / value * 100.0 if value > 1e-9 else None)
        if min(xi - a, b - xi) <= 1e-6 * max(1.0, abs(b - a)):
            bound.add(f.name)
    return _Solution(v, rel, bound)


def fit_latency(
    cells: list[Cell], features: dict[str, ModelFeatures], fit_threads: int, shape: Shape
) -> tuple[dict[str, float], list[FitParam], list[Cell], np.ndarray]:
    """Least squares of log(predicted / measured) over the cells at ``fit_threads``.

    A parameter the fit leaves at a bound of its range, or with a standard error above its value, is not
    determined by these measurements (on a saturated host the co-runner load barely moves while the latency
    does, so an interference factor runs to its bound and takes the throughput with it): it is fixed at its
    default, said so, and the rest refitted - at most once per parameter. Throughputs are always fitted.
    Returns the values, one FitParam per latency parameter, the fitted cells and their predictions."""
    rows = [c for c in cells if c.threads == fit_threads]
    if not rows:
        raise ValueError(f"no measured cell at {fit_threads} threads")
    precisions = sorted({c.precision for c in rows}, key=list(Precision).index)
    used = {m: features[m] for m in sorted({c.model for c in rows})}
    free, why = _free_params(rows, used, precisions, len(shape.freqs_ghz or [None]))
    for _ in range(len(free) + 1):
        sol = _solve(free, rows, used, shape, precisions)
        loose = [
            f
            for f in free
            if not f.name.startswith("throughput_gmacs.")
            and (f.name in sol.at_bound or (sol.rel_err[f.name] or 0.0) > MAX_REL_ERR_PCT)
        ]
        if not loose:
            break
        # Drop the worst determined one and refit: one at a time, since dropping one can settle the others.
        worst = max(loose, key=lambda f: math.inf if f.name in sol.at_bound else (sol.rel_err[f.name] or 0.0))
        detail = (
            f"{sol.values[worst.name]:.3g}, at the bound of its range"
            if worst.name in sol.at_bound
            else f"{sol.values[worst.name]:.3g} ± {sol.rel_err[worst.name]:.0f} %"
        )
        why[worst.name] = f"not determined by these measurements (the fit gave {detail}); fixed at its default"
        free = [f for f in free if f is not worst]
    v = dict(_DEFAULTS) | {f.name: sol.values[f.name] for f in free}
    params = [FitParam(name=f.name, value=v[f.name], source="measured", rel_err_pct=sol.rel_err[f.name]) for f in free]
    params += [FitParam(name=name, value=v[name], source="assumed", why=reason) for name, reason in why.items()]
    pred = _predict(shape.processor(v, precisions), rows, used, shape)
    return v, params, rows, pred


def network_fits(rows: list[Cell], pred: np.ndarray) -> tuple[list[NetworkFit], float]:
    """Predicted vs measured per network, grouped by (precision, condition, step) over rounds; MAPE."""
    groups: dict[str, dict[tuple[Precision, str, int], tuple[list[float], list[float]]]] = defaultdict(dict)
    for c, p in zip(rows, pred, strict=True):
        meas, prd = groups[c.model].setdefault((c.precision, c.condition, c.step), ([], []))
        meas.append(c.median_ms)
        prd.append(float(p))
    out: list[NetworkFit] = []
    errors: list[float] = []
    for model, by_key in groups.items():
        cells = [
            CellFit(
                precision=prec,
                condition=cond,  # type: ignore[arg-type]
                step=step,
                measured_ms=float(np.median(m)),
                predicted_ms=float(np.median(p)),
                error_pct=(float(np.median(p)) / float(np.median(m)) - 1.0) * 100.0,
            )
            for (prec, cond, step), (m, p) in sorted(by_key.items(), key=lambda kv: (kv[0][0].value, kv[0][1:]))
        ]
        mape = float(np.mean([abs(c.error_pct) for c in cells]))
        errors += [abs(c.error_pct) for c in cells]
        out.append(NetworkFit(model=model, mape_pct=mape, cells=cells))
    return out, float(np.mean(errors)) if errors else math.nan


def assumed_busy_w(core_w: float, cores: int, freqs_ghz: list[float] | None) -> list[float]:
    """docs/profiles.md's P(f) = P_top (0.15 V/Vmax + 0.85 (V/Vmax)^2 f/fmax), V linear in f from 0.62 Vmax."""
    top = core_w * cores
    if not freqs_ghz or len(freqs_ghz) == 1:
        return [top]
    f_lo, f_hi = freqs_ghz[0], freqs_ghz[-1]
    out = []
    for f in freqs_ghz:
        v = 0.62 + 0.38 * (f - f_lo) / (f_hi - f_lo)
        out.append(round(top * (0.15 * v + 0.85 * v * v * f / f_hi), 4))
    return out


def power_params(
    cells: list[Cell], fit_threads: int, n_steps: int, power: PowerInputs, freqs_ghz: list[float] | None
) -> tuple[list[float], float, list[FitParam]]:
    """Busy power per step and idle power: measured by the sensor where there is one, else assumed."""
    per_step: list[list[float]] = [[] for _ in range(n_steps)]
    for c in cells:
        if c.threads == fit_threads and c.condition == "none" and c.power_w is not None and c.step in power.idle_w:
            per_step[c.step].append(c.power_w - power.idle_w[c.step])
    if power.sensor and all(per_step):
        busy = [max(float(np.median(v)), 0.01) for v in per_step]
        spread = max(float(np.std(v)) / max(float(np.mean(v)), 1e-9) / math.sqrt(len(v)) * 100 for v in per_step)
        idle = float(np.median(list(power.idle_w.values())))
        why = f"{power.sensor}: median power during the un-loaded cells minus the idle power before them"
        return (
            busy,
            idle,
            [
                FitParam(
                    name="dvfs.busy_w", value=busy[-1], values=busy, source="measured", rel_err_pct=spread, why=why
                ),
                FitParam(name="idle_w", value=idle, source="measured", why=f"{power.sensor}: power at rest"),
            ],
        )
    busy = assumed_busy_w(power.core_w, fit_threads, freqs_ghz)
    idle = ASSUMED_IDLE_CORE_W * fit_threads
    why = ASSUMED_POWER_WHY + (f", x {fit_threads} threads" if fit_threads > 1 else "")
    if freqs_ghz and len(freqs_ghz) > 1:
        why += "; lower steps by docs/profiles.md's P(f) rule"
    return (
        busy,
        idle,
        [
            FitParam(name="dvfs.busy_w", value=busy[-1], values=busy, source="assumed", why=why),
            FitParam(name="idle_w", value=idle, source="assumed", why="Mi8Pro gold-cluster idle, 0.12 W / 4 cores"),
        ],
    )


def fit_profile(
    cells: list[Cell],
    features: dict[str, ModelFeatures],
    *,
    fit_threads: int,
    name: str,
    freqs_ghz: list[float] | None,
    power: PowerInputs,
) -> FitResult:
    """The processor profile of this host: power first (it does not change the latency), then the latency fit."""
    n_steps = len(freqs_ghz) if freqs_ghz else 1
    busy, idle, power_fit = power_params(cells, fit_threads, n_steps, power, freqs_ghz)
    shape = Shape(name=name, cores=fit_threads, freqs_ghz=freqs_ghz, busy_w=busy, idle_w=idle)
    values, latency_fit, rows, pred = fit_latency(cells, features, fit_threads, shape)
    precisions = sorted({c.precision for c in rows}, key=list(Precision).index)
    networks, mape = network_fits(rows, pred)
    return FitResult(shape.processor(values, precisions), latency_fit + power_fit, networks, mape)
