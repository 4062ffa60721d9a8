"""The testbed's plan, its per-request records and results.json, as pydantic models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

CoRunner = Literal["none", "cpu", "mem"]
Stage = Literal["train", "eval"]
Preset = Literal["quick", "default", "full"]


class Workload(BaseModel):
    """One use case: a network with its QoS target (paper Sec. V-B) and accuracy target."""

    model: str
    streaming: bool = False
    accuracy_min: float | None = Field(None, ge=0, le=100)
    qos_ms: float = Field(gt=0)


class Phase(BaseModel):
    """A stretch of the timeline: the emulated signal scenario and the co-runner that really runs."""

    name: str
    scenario: str = Field(description="Table IV scenario driving the emulated RSSI (S1, S4, S5, D3)")
    corunner: CoRunner
    rounds: int = Field(ge=1, description="passes over the workloads (each one request per policy)")


class TestbedPlan(BaseModel):
    preset: Preset
    workloads: list[Workload] = Field(min_length=1)
    phases: list[Phase] = Field(min_length=1)
    train_passes: int = Field(ge=0, description="passes in which AutoScale explores (from an empty Q-table)")
    policies: list[str] = Field(
        min_length=1, description="every request goes to each in turn; the last pass (AutoScale exploiting) compares"
    )
    seed: int
    gap_s: float = Field(ge=0, description="pause between two requests (an app's pace, not a benchmark's)")
    time_limit_s: float = Field(gt=0)
    edge_cpus: list[int]
    other_cpus: list[int]

    def requests(self) -> int:
        per_pass = sum(p.rounds for p in self.phases) * len(self.workloads) * len(self.policies)
        return per_pass * (self.train_passes + 1)


class Record(BaseModel):
    """One request as the load generator sent it and the decider answered it."""

    seq: int = Field(description="order of sending, 0-based")
    t_s: float = Field(description="seconds since the first request")
    stage: Stage
    pass_index: int
    phase: str
    phase_index: int
    scenario: str
    corunner: CoRunner
    policy: str
    model: str
    ok: bool
    error: str = ""
    target_id: str = ""
    runner: str = ""
    latency_ms: float = 0.0
    target_latency_ms: float = 0.0
    inference_ms: float = 0.0
    transfer_ms: float = 0.0
    host_exec_ms: float = 0.0
    energy_mj: float = 0.0
    latency_source: str = ""
    energy_source: str = ""
    qos_ms: float = 0.0
    qos_met: bool = False
    accuracy_met: bool = True
    reward: float = 0.0
    explored: bool = False
    state_index: int = -1
    co_cpu: float = 0.0
    co_mem: float = 0.0
    rssi_wifi_dbm: float = 0.0
    rssi_p2p_dbm: float = 0.0


class PolicySummary(BaseModel):
    policy: str
    n: int
    energy_mj_mean: float
    ppw_inf_per_j: float | None = Field(description="inferences per joule of the phone's energy (PPW = 1 / energy)")
    ppw_vs_edge_cpu_fp32: float | None
    qos_violation_pct: float
    accuracy_violation_pct: float
    target_latency_ms_median: float
    share: dict[str, float] = Field(description="share of requests per target")


class Window(BaseModel):
    """A learning curve point: one window of a policy's consecutive requests. Every policy gets the same
    requests in the same order, so the i-th windows of two policies cover the same moments and conditions."""

    policy: str
    index: int
    first_seq: int
    stage: Stage
    pass_index: int
    n: int
    reward_mean: float
    qos_violation_pct: float
    energy_mj_mean: float
    edge_share: float
    co_cpu_mean: float
    rssi_wifi_mean: float
    rssi_p2p_mean: float


class Transition(BaseModel):
    """What AutoScale did when a co-runner started or stopped."""

    pass_index: int
    stage: Stage
    corunner: CoRunner
    event: Literal["start", "stop"]
    phase: str
    networks: list[str] = Field(description="networks AutoScale served on the edge before a start (off it, a stop)")
    expected: list[str] = Field(
        description="of those, the ones whose best measured placement after the event (the lowest-cost target any "
        "policy ran for it in that phase of the pass) is off the edge after a start, on it after a stop"
    )
    requests_until_move: int | None = Field(
        description="AutoScale requests after the event until one of the expected networks moved; None: none did"
    )
    seconds_until_move: float | None
    edge_share_before: float | None = Field(description="edge share of those networks over the phase before")
    edge_share_after: float | None = Field(description="edge share of those networks over the phase after the event")


class InterferenceRow(BaseModel):
    target_id: str
    model: str
    corunner: CoRunner
    n: int
    median_ms: float
    p10_ms: float
    p90_ms: float


class Check(BaseModel):
    name: str
    passed: bool | None = Field(description="None: not applicable in this run (said why)")
    value: str
    detail: str


class Figure(BaseModel):
    file: str
    caption: str


class TestbedResults(BaseModel):
    """results.json of ``autoscale testbed``."""

    command: str
    started: str
    duration_s: float
    host: str
    load_avg_start: tuple[float, float, float] | None
    load_avg_end: tuple[float, float, float] | None
    truncated: bool
    plan: TestbedPlan
    profile: str
    calibration_mape_pct: float | None
    requests: int
    failed: int
    policies: list[PolicySummary]
    learning: list[Window]
    transitions: list[Transition]
    interference: list[InterferenceRow]
    observed: dict[str, dict[str, float]] = Field(
        description="per phase of the comparison pass: the median co_cpu and co_mem the decider observed, i.e. "
        "whether the co-runners were visible in the Table I state"
    )
    edge_slowdown: dict[str, float] = Field(
        description="per co-runner: median over networks of median edge latency with / without it (measured)"
    )
    checks: list[Check]
    figures: list[Figure]
    measured: list[str] = Field(description="what was measured on this host")
    modelled: list[str] = Field(description="what was modelled or emulated, and from what")
    corunners_left: list[int] = Field(description="co-runner pids still alive after the run (must be empty)")
