"""Pydantic schemas shared by every service: the wire contract of the mesh.

Kept free of I/O so that the decider, runners, telemetry and the simulator agree by construction.
Every model here derives from ``WireModel``: no number on the wire is NaN or infinite (JSON has
no such numbers, and ``1e309`` would otherwise parse to infinity), so such a value is a 422
naming its field rather than a ``null`` in an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# ----------------------------------------------------------------------------- targets


class WireModel(BaseModel):
    """Base of every schema: numbers are finite (NaN and +-Infinity are refused, naming the field)."""

    model_config = ConfigDict(allow_inf_nan=False)


class StrictModel(WireModel):
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


class Target(WireModel):
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


class TargetInfo(WireModel):
    """What a runner advertises on ``GET /targets``."""

    target: Target
    id: str
    device: str = Field(description="device profile name, e.g. mi8pro")
    frequency_ghz: float | None = None
    engine_version: str = ""
    models: list[str] | None = Field(None, description="models this target can run; None = all registered")


# ----------------------------------------------------------------------------- tensors & models

Dtype = Literal["float32", "float16", "int64", "int32", "uint8", "int8"]


class TensorSpec(WireModel):
    name: str
    dtype: Dtype
    shape: list[int | str] = Field(description="dims; a string is a symbolic (batch) dim")


class TensorPayload(WireModel):
    """A tensor on the wire: raw little-endian bytes, base64."""

    dtype: Dtype
    # Positive dims, declared in the schema itself so that clients (and fuzzers) can see the rule.
    shape: list[Annotated[int, Field(gt=0)]] = Field(min_length=0, max_length=8)
    data_b64: str


class ModelFeatures(WireModel):
    """Table I's NN-related features, extracted from the ONNX graph."""

    conv: int = Field(ge=0, description="# CONV layers")
    fc: int = Field(ge=0, description="# FC layers")
    rc: int = Field(ge=0, description="# recurrent / attention (RC) layers")
    macs: int = Field(ge=0, description="multiply-accumulates of one inference")
    params: int = Field(0, ge=0)
    input_bytes: int = Field(0, ge=0, description="bytes sent to a remote target (FP32 input)")
    output_bytes: int = Field(0, ge=0, description="bytes received back")


class AccuracyEntry(WireModel):
    top1: float = Field(ge=0, le=100, description="expected top-1 (or task metric) in percent")
    source: Literal["published", "measured", "declared"] = "published"
    reference: str = ""


class BoundaryTensor(WireModel):
    """A tensor that crosses a cut: what one part sends the next (float32 at every precision)."""

    name: str
    dtype: Dtype
    shape: list[int]
    bytes: int = Field(ge=0)


class LayerCounts(WireModel):
    """Table I's layer counts and the MACs of a stretch of a network (before or after a cut), with
    the MACs by layer type (a separable conv's pointwise half is its CONV layer's, an attention
    block's projections and score products its RC layer's)."""

    conv: int = Field(0, ge=0)
    fc: int = Field(0, ge=0)
    rc: int = Field(0, ge=0)
    macs: int = Field(0, ge=0)
    conv_macs: int = Field(0, ge=0)
    fc_macs: int = Field(0, ge=0)
    rc_macs: int = Field(0, ge=0)


class CutPoint(WireModel):
    """A place between two layers where one tensor (or two) crosses, in topological order: a network
    can run ``[start, cut)`` on one processor or device and ``[cut, end)`` on another."""

    name: str = Field(description="the cut's name: its boundary tensor's (two tensors: 'a+b')")
    tensors: list[BoundaryTensor] = Field(min_length=1, max_length=2)
    bytes: int = Field(ge=0, description="bytes that cross the cut (the boundary tensors, float32)")
    before: LayerCounts = Field(description="layers and MACs before the cut")
    after: LayerCounts = Field(description="layers and MACs after the cut")


class ModelInfo(WireModel):
    name: str
    task: str = "image_classification"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec] = Field(default_factory=list)
    features: ModelFeatures
    precisions: dict[Precision, AccuracyEntry] = Field(default_factory=dict)
    sha256: str = ""
    builtin: bool = True
    cut_points: list[CutPoint] = Field(
        default_factory=list, description="where the network can be partitioned, in order (empty: nowhere)"
    )


# ----------------------------------------------------------------------------- telemetry

ReadingSource = Literal["measured", "emulated"]


class Reading(WireModel):
    name: str
    value: float
    unit: str
    source: ReadingSource
    timestamp: float = Field(description="unix seconds when read")
    age_s: float = 0.0
    stale: bool = False
    detail: str = ""


class RuntimeConditions(WireModel):
    """Table I's runtime-variance features as raw values (binned by services.core.state)."""

    co_cpu: float = Field(0.0, ge=0, le=1, description="co-runner CPU utilisation, ratio 0-1")
    co_mem: float = Field(0.0, ge=0, le=1, description="co-runner memory utilisation, ratio 0-1")
    rssi_wifi_dbm: float = Field(-50.0, le=0)
    rssi_p2p_dbm: float = Field(-50.0, le=0)


class TelemetrySnapshot(WireModel):
    """``GET /state`` of the telemetry service."""

    conditions: RuntimeConditions
    readings: dict[str, Reading]
    scenario: str = ""
    timestamp: float = 0.0


# ----------------------------------------------------------------------------- runner contract

EnergySource = Literal["measured", "modelled"]
OutputFormat = Literal["tensor", "summary"]
OUTPUTS_MAX = 64  # names a request may list in ``outputs`` (a model has a handful)


class OutputTensor(WireModel):
    """One output tensor as the network produced it: raw little-endian bytes, base64 (the same
    encoding as inputs). NaN and infinities travel as they are, inside the bytes."""

    model_config = ConfigDict(extra="forbid")  # tells it apart from OutputSummary in a union

    name: str
    dtype: str = Field(description="numpy dtype name: float32, int64, bool, ...")
    shape: list[int]
    data_b64: str


class OutputSummary(WireModel):
    """An output's summary (``output_format: "summary"``, for load tests), not the tensor.

    When the output holds NaN or +-Infinity, ``finite`` is false and ``mean``, ``std``,
    ``checksum`` and ``top_k`` are null (they would not be numbers)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    dtype: str
    top_k: list[tuple[int, float]] | None = Field(None, description="(class, softmax probability) for classifiers")
    mean: float | None = 0.0
    std: float | None = 0.0
    checksum: float | None = Field(0.0, description="sum of the tensor, for parity checks")
    finite: bool = Field(True, description="false when the output holds NaN or +-Infinity")


Output = OutputTensor | OutputSummary


def _unique(names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        dup = next(n for i, n in enumerate(names) if n in names[:i])
        raise ValueError(f"output {dup!r} is listed twice")
    return names


OutputNames = Annotated[list[str], Field(min_length=1, max_length=OUTPUTS_MAX), AfterValidator(_unique)]


class Partition(WireModel):
    """A sub-graph of a model between two of its cut points (``ModelInfo.cut_points``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str | None = Field(
        None, description="cut it starts at: its boundary tensors are the inputs; null = the model's inputs"
    )
    end: str | None = Field(
        None, description="cut it ends at: its boundary tensors are returned in full; null = the model's outputs"
    )

    @property
    def whole(self) -> bool:
        return self.start is None and self.end is None


class RunRequest(WireModel):
    model: str
    target: Target
    inputs: dict[str, TensorPayload] | None = None
    synthetic: bool = Field(False, description="runner generates a deterministic input")
    conditions: RuntimeConditions = Field(default_factory=RuntimeConditions)
    deadline_ms: float | None = Field(None, gt=0)
    top_k: int = Field(5, ge=0, le=100)
    outputs: OutputNames | None = Field(None, description="outputs to return, by name; default all")
    output_format: OutputFormat = Field("tensor", description="tensor: the raw outputs; summary: their summaries")
    partition: Partition | None = Field(None, description="run only this sub-graph (null: the whole network)")


class RunResult(WireModel):
    model: str
    target: Target
    device: str
    outputs: list[Output]
    inference_s: float = Field(description="inference latency of the target (modelled or measured)")
    tx_s: float = Field(0.0, description="time to send the input over the link")
    rx_s: float = Field(0.0, description="time to receive the output over the link")
    host_exec_s: float = Field(description="wall time this host really spent executing the network")
    device_energy_j: float = Field(description="energy the executing device spent on the inference")
    energy_source: EnergySource
    latency_source: EnergySource
    input_bytes: int = 0
    output_bytes: int = 0


# ----------------------------------------------------------------------------- partitioned plans

PLAN_PARTS_MAX = 8


class PlanPart(WireModel):
    """One part of a plan: a sub-graph (``partition``) on one target."""

    model_config = ConfigDict(frozen=True)

    target: Target
    partition: Partition


class Plan(WireModel):
    """A network executed in consecutive parts, each on its own target: the boundary tensors of a
    part's end are the next part's inputs (relayed by the phone, the decider)."""

    model_config = ConfigDict(frozen=True)

    parts: tuple[PlanPart, ...] = Field(min_length=2, max_length=PLAN_PARTS_MAX)

    @cached_property
    def id(self) -> str:
        """Action key: target ids with the cut names between them (``edge/gpu/fp32@6|clip_13|cloud/gpu/fp32``)."""
        out = [self.parts[0].target.id]
        for p in self.parts[1:]:
            out += [p.partition.start or "", p.target.id]
        return "|".join(out)

    @property
    def route(self) -> str:
        """The runners it crosses, e.g. ``edge>cloud`` (a metric label: few values)."""
        runners = [str(p.target.runner) for p in self.parts]
        return ">".join(r for i, r in enumerate(runners) if i == 0 or r != runners[i - 1])

    @classmethod
    def parse(cls, plan_id: str) -> Plan:
        """The plan an ``id`` names (the inverse of ``id``)."""
        fields = plan_id.split("|")
        if len(fields) < 3 or len(fields) % 2 == 0:
            raise ValueError(f"{plan_id!r} is not a plan id (target|cut|target...)")
        return cls.split([Target.parse(t) for t in fields[::2]], fields[1::2])

    @classmethod
    def split(cls, targets: list[Target], cuts: list[str]) -> Plan:
        """``targets[0]`` runs up to ``cuts[0]``, ``targets[1]`` from there to ``cuts[1]``, ... to the end."""
        if len(targets) != len(cuts) + 1:
            raise ValueError(f"{len(targets)} targets need {len(targets) - 1} cuts, not {len(cuts)}")
        bounds: list[str | None] = [None, *cuts, None]
        return cls(
            parts=tuple(
                PlanPart(target=t, partition=Partition(start=bounds[i], end=bounds[i + 1]))
                for i, t in enumerate(targets)
            )
        )


class PlanStep(WireModel):
    """A part of a plan a client pins in ``/infer``: a target, and the cut it runs to."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="target id from GET /targets, e.g. edge/cpu/fp32@22", max_length=64)
    end: str | None = Field(None, description="cut (GET /models/{name}) this part runs to; null = the outputs")


class PartReport(WireModel):
    """What one part of an executed plan cost and carried."""

    target: Target
    target_id: str
    start: str | None
    end: str | None
    device: str
    inference_ms: float
    tx_ms: float = Field(description="sending this part's inputs over the link (remote parts)")
    rx_ms: float = Field(description="receiving its outputs back (remote parts)")
    copy_ms: float = Field(0.0, description="copying its inputs from the previous part's processor (same device)")
    input_bytes: int = Field(description="bytes of the tensors it received: the boundary tensors, or the input")
    output_bytes: int = Field(description="bytes of the tensors it returned")
    energy_mj: float = Field(description="the phone's energy for this part (eqs. 1-3 on the phone, eq. 4 remote)")
    host_exec_ms: float


class PlanReport(WireModel):
    """A partitioned inference as it ran: the plan's id and each part, in order."""

    id: str
    parts: list[PartReport]
    fallback: str | None = Field(None, description="what ran instead of the chosen plan when a runner failed")


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
    "neurosurgeon",
    "neurosurgeon-latency",
    "mosaic",
]
POLICY_NAMES: tuple[str, ...] = get_args(PolicyName)

STREAMING_QOS_MS = 1000.0 / 30.0  # 30 FPS (paper Sec. V-B)


class InferRequest(WireModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: TensorPayload | None = None
    inputs: dict[str, TensorPayload] | None = None
    synthetic: bool = False
    qos_ms: float | None = Field(None, gt=0, description="latency target; default 50 ms, 1/30 s when streaming")
    accuracy_min: float | None = Field(None, ge=0, le=100, description="minimum expected top-1 accuracy, %")
    streaming: bool = False
    policy: PolicyName | None = None
    top_k: int = Field(5, ge=0, le=100, description="classes in a classifier output's summary (summary format)")
    outputs: OutputNames | None = Field(None, description="outputs to return, by name; default every output")
    output_format: OutputFormat = Field(
        "tensor", description="tensor: each output's raw bytes (base64); summary: shape, moments, top-k only"
    )
    deadline_ms: float | None = Field(
        None,
        gt=0,
        le=600_000,
        description="answer (or fail with 504) within this; default: qos_ms x AUTOSCALE_DEADLINE_QOS_FACTOR, "
        "within AUTOSCALE_DEADLINE_MIN_MS..MAX_MS",
    )
    plan: list[PlanStep] | None = Field(
        None,
        min_length=2,
        max_length=PLAN_PARTS_MAX,
        description="run this partitioned plan instead of deciding: each part on its target, up to its cut",
    )


class StateView(WireModel):
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


class InferResponse(WireModel):
    request_id: str = Field(description="the X-Request-ID the client sent, or the one generated for it")
    trace_id: str | None = Field(None, description="W3C trace id of the request (traceparent), 32 hex digits")
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
    outputs: list[Output] = Field(description="the requested outputs: tensors, or summaries in summary format")
    deadline_ms: float = Field(0.0, description="the deadline this request was served under")
    plan: PlanReport | None = Field(None, description="the parts of a partitioned inference (null: one target)")


class ErrorDetail(WireModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(WireModel):
    error: ErrorDetail


class Liveness(WireModel):
    """``GET /healthz`` of every service: the process answers."""

    status: Literal["ok"] = "ok"


class Readiness(WireModel):
    """``GET /readyz`` of every service (each adds what it depends on); a 503 error body when not ready."""

    status: Literal["ready"] = "ready"
