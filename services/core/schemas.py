"""Pydantic schemas shared by every service: the wire contract of the mesh.

Kept free of I/O so that the decider, runners, telemetry and the simulator agree by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

# ----------------------------------------------------------------------------- targets


class StrictModel(BaseModel):
    """Base of the YAML-backed models (device profiles, scenarios): unknown keys are typos until
    proven otherwise, so they are refused rather than silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Location(StrEnum):
    """Where a target executes, seen from the phone the decider serves."""

    edge = "edge"  # the phone itself
    peer = "peer"  # a Wi-Fi Direct connected tablet
    cloud = "cloud"  # a server reached over Wi-Fi


class Processor(StrEnum):
    cpu = "cpu"
    gpu = "gpu"
    dsp = "dsp"


class Precision(StrEnum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class Target(BaseModel):
    """One action of the paper: processor x precision x DVFS step on one device."""

    model_config = ConfigDict(frozen=True)

    runner: Location
    processor: Processor
    precision: Precision
    dvfs: int | None = Field(None, ge=0, description="DVFS step index, 0 = lowest frequency; None = fixed")
    engine: str = Field("onnxruntime", description="engine that executes it: onnxruntime | tvm")

    @cached_property
    def id(self) -> str:
        """Stable action key (engine excluded: it does not change the decision). Cached: the
        decision path reads it for every candidate, and the model is frozen."""
        base = f"{self.runner}/{self.processor}/{self.precision}"
        return base if self.dvfs is None else f"{base}@{self.dvfs}"

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Target:
        new = super().model_copy(update=update, deep=deep)
        new.__dict__.pop("id", None)  # the copy may change a field the cached id depends on
        return new

    @classmethod
    def parse(cls, action_id: str, engine: str = "onnxruntime") -> Target:
        base, _, dvfs = action_id.partition("@")
        runner, processor, precision = base.split("/")
        return cls(
            runner=Location(runner),
            processor=Processor(processor),
            precision=Precision(precision),
            dvfs=int(dvfs) if dvfs else None,
            engine=engine,
        )


class TargetInfo(BaseModel):
    """What a runner advertises on ``GET /targets``."""

    target: Target
    id: str
    device: str = Field(description="device profile name, e.g. mi8pro")
    frequency_ghz: float | None = None
    engine_version: str = ""
    models: list[str] | None = Field(None, description="models this target can run; None = all registered")


# ----------------------------------------------------------------------------- tensors & models

Dtype = Literal["float32", "float16", "int64", "int32", "uint8", "int8"]


class TensorSpec(BaseModel):
    name: str
    dtype: Dtype
    shape: list[int | str] = Field(description="dims; a string is a symbolic (batch) dim")


class TensorPayload(BaseModel):
    """A tensor on the wire: raw little-endian bytes, base64."""

    dtype: Dtype
    shape: list[int] = Field(min_length=0, max_length=8)
    data_b64: str

    @field_validator("shape")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(d <= 0 for d in v):
            raise ValueError("every dimension must be a positive integer")
        return v


class ModelFeatures(BaseModel):
    """Table I's NN-related features, extracted from the ONNX graph."""

    conv: int = Field(ge=0, description="# CONV layers")
    fc: int = Field(ge=0, description="# FC layers")
    rc: int = Field(ge=0, description="# recurrent / attention (RC) layers")
    macs: int = Field(ge=0, description="multiply-accumulates of one inference")
    params: int = Field(0, ge=0)
    input_bytes: int = Field(0, ge=0, description="bytes sent to a remote target (FP32 input)")
    output_bytes: int = Field(0, ge=0, description="bytes received back")


class AccuracyEntry(BaseModel):
    top1: float = Field(ge=0, le=100, description="expected top-1 (or task metric) in percent")
    source: Literal["published", "measured", "declared"] = "published"
    reference: str = ""


class ModelInfo(BaseModel):
    name: str
    task: str = "image_classification"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec] = Field(default_factory=list)
    features: ModelFeatures
    precisions: dict[Precision, AccuracyEntry] = Field(default_factory=dict)
    sha256: str = ""
    builtin: bool = True


# ----------------------------------------------------------------------------- telemetry

ReadingSource = Literal["measured", "emulated"]


class Reading(BaseModel):
    name: str
    value: float
    unit: str
    source: ReadingSource
    timestamp: float = Field(description="unix seconds when read")
    age_s: float = 0.0
    stale: bool = False
    detail: str = ""


class RuntimeConditions(BaseModel):
    """Table I's runtime-variance features as raw values (binned by services.core.state)."""

    co_cpu: float = Field(0.0, ge=0, le=1, description="co-runner CPU utilisation, ratio 0-1")
    co_mem: float = Field(0.0, ge=0, le=1, description="co-runner memory utilisation, ratio 0-1")
    rssi_wifi_dbm: float = Field(-50.0, le=0)
    rssi_p2p_dbm: float = Field(-50.0, le=0)


class TelemetrySnapshot(BaseModel):
    """``GET /state`` of the telemetry service."""

    conditions: RuntimeConditions
    readings: dict[str, Reading]
    scenario: str = ""
    timestamp: float = 0.0


# ----------------------------------------------------------------------------- runner contract

EnergySource = Literal["measured", "modelled"]


class OutputSummary(BaseModel):
    name: str
    shape: list[int]
    dtype: str
    top_k: list[tuple[int, float]] | None = Field(None, description="(class, score) for classifiers")
    mean: float = 0.0
    std: float = 0.0
    checksum: float = Field(0.0, description="sum of the tensor, for parity checks")


class RunRequest(BaseModel):
    model: str
    target: Target
    inputs: dict[str, TensorPayload] | None = None
    synthetic: bool = Field(False, description="runner generates a deterministic input")
    conditions: RuntimeConditions = Field(default_factory=RuntimeConditions)
    deadline_ms: float | None = Field(None, gt=0)
    top_k: int = Field(5, ge=0, le=100)


class RunResult(BaseModel):
    model: str
    target: Target
    device: str
    outputs: list[OutputSummary]
    inference_s: float = Field(description="inference latency of the target (modelled or measured)")
    tx_s: float = Field(0.0, description="time to send the input over the link")
    rx_s: float = Field(0.0, description="time to receive the output over the link")
    host_exec_s: float = Field(description="wall time this host really spent executing the network")
    device_energy_j: float = Field(description="energy the executing device spent on the inference")
    energy_source: EnergySource
    latency_source: EnergySource
    input_bytes: int = 0
    output_bytes: int = 0


# ----------------------------------------------------------------------------- decider API

PolicyName = Literal[
    "autoscale",
    "edge-cpu-fp32",
    "edge-best",
    "cloud",
    "connected-edge",
    "opt",
    "lr",
    "svr",
    "svm",
    "knn",
    "bo",
    "linucb",
]
POLICY_NAMES: tuple[str, ...] = get_args(PolicyName)

STREAMING_QOS_MS = 1000.0 / 30.0  # 30 FPS (paper Sec. V-B)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: TensorPayload | None = None
    inputs: dict[str, TensorPayload] | None = None
    synthetic: bool = False
    qos_ms: float | None = Field(None, gt=0, description="latency target; default 50 ms, 1/30 s when streaming")
    accuracy_min: float | None = Field(None, ge=0, le=100, description="minimum expected top-1 accuracy, %")
    streaming: bool = False
    policy: PolicyName | None = None
    top_k: int = Field(5, ge=0, le=100)
    deadline_ms: float | None = Field(
        None,
        gt=0,
        le=600_000,
        description="answer (or fail with 504) within this; default: qos_ms x AUTOSCALE_DEADLINE_QOS_FACTOR, "
        "within AUTOSCALE_DEADLINE_MIN_MS..MAX_MS",
    )


class StateView(BaseModel):
    index: int
    bins: dict[str, int]
    labels: dict[str, str]
    raw: dict[str, float]
    sources: dict[str, str] = Field(default_factory=dict)
    stale: bool = Field(False, description="the telemetry snapshot is older than the stale limit")
    age_s: float | None = Field(
        None, description="age of the telemetry snapshot the state was built from (null before the first)"
    )
    ages_s: dict[str, float] = Field(default_factory=dict, description="age of each reading")


class InferResponse(BaseModel):
    request_id: str
    model: str
    policy: str
    target: Target
    target_id: str
    latency_ms: float = Field(description="end to end, as the decider saw it (this host's wall clock)")
    target_latency_ms: float = Field(description="inference + transfer on the chosen target: what QoS and eq. 5 use")
    latency_source: EnergySource = Field(description="measured on the device, or modelled from its profile")
    inference_ms: float
    transfer_ms: float
    host_exec_ms: float = Field(description="wall time this host spent really executing the network")
    energy_mj: float = Field(description="the phone's energy for this inference (eqs. 1-4)")
    energy_source: EnergySource
    accuracy: float
    accuracy_source: Literal["published", "measured", "declared"]
    qos_ms: float
    qos_met: bool
    accuracy_met: bool
    reward: float
    state: StateView
    explored: bool
    device: str = Field(description="device profile of the executing target")
    outputs: list[OutputSummary]
    deadline_ms: float = Field(0.0, description="the deadline this request was served under")


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Liveness(BaseModel):
    """``GET /healthz`` of every service: the process answers."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """``GET /readyz`` of every service (each adds what it depends on); a 503 error body when not ready."""

    status: Literal["ready"] = "ready"
