"""What a calibration plans, measures and fits: the pydantic models written to fit.json."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from services.core.schemas import Precision

Condition = Literal["none", "cpu", "mem"]
CONDITIONS: tuple[Condition, ...] = ("none", "cpu", "mem")
QUICK_MODELS = ("mobilenet_v3", "mobilenet_v2", "mobilenet_v1")  # what --quick measures
ProfileKind = Literal["phone", "tablet", "server"]


class CalibrationPlan(BaseModel):
    """What to measure, and the bounds on how long it may take."""

    models: list[str] = Field(min_length=1)
    precisions: list[Precision] = Field(min_length=1)
    threads: list[int] = Field(min_length=1, description="ONNX Runtime intra-op thread counts measured")
    fit_threads: int = Field(ge=1, description="thread count the profile describes (the runner's ort_threads)")
    cpus: list[int] = Field(min_length=1, description="CPUs the measurement and its co-runners are pinned to")
    conditions: list[Condition] = Field(min_length=1)
    warmup: int = Field(ge=0, description="runs discarded before each measured cell")
    reps: int = Field(ge=3, description="measured runs per cell")
    rounds: int = Field(ge=1, description="passes over the whole plan (drift on a shared host averages out)")
    max_cell_s: float = Field(gt=0, description="a cell stops after this long (at least 3 runs)")
    max_steps: int = Field(ge=1, description="at most this many cpufreq steps, where they can be set")
    time_limit_s: float = Field(gt=0, description="the measurement stops here and fits what it has")
    settle_s: float = Field(0.5, ge=0, description="wait after starting or stopping a co-runner")


class CpufreqFacts(BaseModel):
    settable: bool
    detail: str = Field(description="what was found, or why the frequency cannot be set")
    steps_khz: list[int] = Field(default_factory=list, description="steps measured (settable) or the current one")
    current_ghz: float | None = None


class PowerFacts(BaseModel):
    sensor: str | None = Field(None, description="the sensor used for the CPU's power, e.g. rapl")
    counter: str | None = Field(None, description="its energy counter file: what AUTOSCALE_ENERGY_COUNTER can read")
    detail: str = ""
    families: dict[str, str] = Field(default_factory=dict, description="telemetry detection: found or why absent")


class HostFacts(BaseModel):
    hostname: str
    platform: str
    cpu_model: str
    logical_cpus: int
    cpus: list[int]
    llc_bytes: int | None = None
    load_avg_start: tuple[float, float, float] | None = None
    engine: str
    cpufreq: CpufreqFacts
    power: PowerFacts


class Cell(BaseModel):
    """One measured configuration: its latency distribution and the conditions it ran under."""

    model: str
    precision: Precision
    threads: int
    step: int = Field(description="index into the measured frequency steps")
    freq_ghz: float | None
    condition: Condition
    round: int
    n: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    co_cpu: float = Field(description="co-runner CPU load measured during the cell (telemetry's psutil method)")
    co_mem: float = Field(description="co-runner memory use measured during the cell")
    power_w: float | None = Field(None, description="mean sensor power during the cell, where a sensor exists")


class FitParam(BaseModel):
    """One profile number: fitted (``measured``) or not identifiable from this run (``assumed``)."""

    name: str = Field(description="dotted path in the processor profile, e.g. throughput_gmacs.fp32")
    value: float = Field(description="the number (for a per-step list: its top step)")
    values: list[float] | None = Field(None, description="a per-step list (dvfs.freqs_ghz, dvfs.busy_w)")
    source: Literal["measured", "assumed"]
    rel_err_pct: float | None = Field(None, description="standard error of the fit, % of the value")
    why: str = ""


class CellFit(BaseModel):
    precision: Precision
    condition: Condition
    step: int
    measured_ms: float
    predicted_ms: float
    error_pct: float


class NetworkFit(BaseModel):
    model: str
    mape_pct: float
    cells: list[CellFit]


class ThreadRow(BaseModel):
    model: str
    precision: Precision
    threads: int
    median_ms: float
    p10_ms: float
    p90_ms: float


class CalibrationReport(BaseModel):
    """fit.json: everything a calibration did, measured and concluded."""

    name: str
    kind: ProfileKind
    started: str
    duration_s: float
    command: str
    truncated: bool = Field(description="the time limit stopped the measurement before the plan's end")
    host: HostFacts
    plan: CalibrationPlan
    cells: list[Cell]
    params: list[FitParam]
    networks: list[NetworkFit]
    mape_pct: float = Field(description="mean absolute percentage error of the fitted profile over every cell")
    threads: list[ThreadRow]
    co_load: dict[str, dict[str, float]] = Field(description="median measured co_cpu / co_mem per condition")
    profile_path: str
    notes: list[str] = Field(default_factory=list)
