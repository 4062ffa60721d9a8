"""Execution environments (paper Table IV) as time-varying runtime conditions.

A scenario file gives each runtime-variance feature (co-runner CPU and memory utilisation, Wi-Fi
and Wi-Fi Direct RSSI) as a constant, a Gaussian (mean, std, clipped) or a piecewise-constant trace
over time. The same files drive the simulator and the telemetry service's emulated readings, so
both see the same environment. Use cases (QoS and accuracy targets, paper Sec. V-B) live here too.
"""

from __future__ import annotations

import bisect
from itertools import pairwise
from typing import Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from services.core.errors import ConfigFileError
from services.core.schemas import STREAMING_QOS_MS, ModelFeatures, RuntimeConditions, StrictModel

# Paper Sec. V-B: non-streaming vision 50 ms, streaming 30 FPS, MobileBERT translation 100 ms.
NON_STREAMING_QOS_S = 0.050
STREAMING_QOS_S = STREAMING_QOS_MS / 1000.0
TRANSLATION_QOS_S = 0.100
ACCURACY_TARGETS: tuple[float | None, ...] = (None, 50.0, 65.0, 70.0)  # paper Fig. 12


def qos_s(features: ModelFeatures, streaming: bool = False) -> float:
    """The paper's latency target for a network: language (RC layers) 100 ms, vision 50 ms or 30 FPS."""
    if features.rc > 0:
        return TRANSLATION_QOS_S
    return STREAMING_QOS_S if streaming else NON_STREAMING_QOS_S


class ScenarioError(ConfigFileError):
    """A scenario file that cannot be used; the message names the file, the field and the reason."""


_Strict = StrictModel


class Gaussian(_Strict):
    """Drawn independently at every inference, then clipped to [min, max]."""

    mean: float
    std: float = Field(ge=0)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _range(self) -> Gaussian:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self

    def sample(self, rng: np.random.Generator | None) -> float:
        v = self.mean if rng is None or self.std == 0 else float(rng.normal(self.mean, self.std))
        lo = -np.inf if self.min is None else self.min
        hi = np.inf if self.max is None else self.max
        return float(min(max(v, lo), hi))


class GaussianSpec(_Strict):
    gaussian: Gaussian


class Trace(_Strict):
    """Piecewise constant: ``points`` are (t_s, value); the value holds until the next point.
    With ``loop_s`` the trace repeats with that period."""

    points: list[tuple[float, float]] = Field(min_length=1)
    loop_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _sorted(self) -> Trace:
        ts = [t for t, _ in self.points]
        if ts[0] != 0:
            raise ValueError("the first point must be at t_s = 0")
        if any(b <= a for a, b in pairwise(ts)):
            raise ValueError("points must have strictly ascending t_s")
        if self.loop_s is not None and ts[-1] >= self.loop_s:
            raise ValueError("every point must lie before loop_s")
        return self

    def at(self, t_s: float) -> float:
        if self.loop_s is not None:
            t_s = t_s % self.loop_s
        ts = [t for t, _ in self.points]
        return self.points[max(0, bisect.bisect_right(ts, t_s) - 1)][1]


class TraceSpec(_Strict):
    trace: Trace


Feature = float | GaussianSpec | TraceSpec

# Valid ranges of each feature, as RuntimeConditions enforces them.
_RANGES = {"co_cpu": (0.0, 1.0), "co_mem": (0.0, 1.0), "rssi_wifi_dbm": (-120.0, 0.0), "rssi_p2p_dbm": (-120.0, 0.0)}


def _values(spec: Feature) -> list[float]:
    if isinstance(spec, GaussianSpec):
        g = spec.gaussian
        # Unclipped Gaussians may leave the range; require a clip on the side that could.
        return [v for v in (g.min, g.max, g.mean) if v is not None]
    if isinstance(spec, TraceSpec):
        return [v for _, v in spec.trace.points]
    return [float(spec)]


class ConditionsSpec(_Strict):
    co_cpu: Feature = Field(0.0, description="co-runner CPU utilisation, ratio 0-1")
    co_mem: Feature = Field(0.0, description="co-runner memory utilisation, ratio 0-1")
    rssi_wifi_dbm: Feature = Field(-50.0, description="Wi-Fi RSSI, dBm")
    rssi_p2p_dbm: Feature = Field(-50.0, description="Wi-Fi Direct RSSI, dBm")

    @model_validator(mode="after")
    def _in_range(self) -> ConditionsSpec:
        for name, (lo, hi) in _RANGES.items():
            spec = getattr(self, name)
            for v in _values(spec):
                if not lo <= v <= hi:
                    raise ValueError(f"{name}: value {v} outside [{lo}, {hi}]")
            if isinstance(spec, GaussianSpec) and spec.gaussian.std > 0:
                g = spec.gaussian
                if g.min is None or g.max is None:
                    raise ValueError(f"{name}: a Gaussian with std > 0 needs both min and max (clip to [{lo}, {hi}])")
        return self


class Scenario(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    kind: Literal["static", "dynamic"]
    description: str = ""
    interval_s: float = Field(1.0, gt=0, description="simulated time between consecutive inferences")
    conditions: ConditionsSpec = Field(default_factory=ConditionsSpec)

    def conditions_at(self, t_s: float, rng: np.random.Generator | None = None) -> RuntimeConditions:
        """Conditions at time ``t_s``; Gaussians draw from ``rng`` (their mean without one).

        Deterministic given the rng state; fields are drawn in a fixed order."""
        out: dict[str, float] = {}
        for name in ("co_cpu", "co_mem", "rssi_wifi_dbm", "rssi_p2p_dbm"):
            spec = getattr(self.conditions, name)
            if isinstance(spec, GaussianSpec):
                out[name] = spec.gaussian.sample(rng)
            elif isinstance(spec, TraceSpec):
                out[name] = spec.trace.at(t_s)
            else:
                out[name] = float(spec)
        return RuntimeConditions(**out)

    def conditions_series(
        self, n: int, rng: np.random.Generator | None = None, t0_s: float = 0.0
    ) -> dict[str, np.ndarray]:
        """``n`` consecutive inferences' conditions as arrays (the simulator's vectorised path).

        Same distribution as calling ``conditions_at`` at t0, t0 + interval, ...; Gaussian
        fields are drawn field by field, so the stream differs from the scalar path's order."""
        ts = t0_s + self.interval_s * np.arange(n)
        out: dict[str, np.ndarray] = {}
        for name in ("co_cpu", "co_mem", "rssi_wifi_dbm", "rssi_p2p_dbm"):
            spec = getattr(self.conditions, name)
            if isinstance(spec, GaussianSpec):
                g = spec.gaussian
                v = np.full(n, g.mean) if rng is None or g.std == 0 else rng.normal(g.mean, g.std, n)
                out[name] = np.clip(v, g.min if g.min is not None else -np.inf, g.max if g.max is not None else np.inf)
            elif isinstance(spec, TraceSpec):
                out[name] = np.array([spec.trace.at(float(t)) for t in ts])
            else:
                out[name] = np.full(n, float(spec))
        return out

    @property
    def is_stochastic(self) -> bool:
        return any(
            isinstance(getattr(self.conditions, n), GaussianSpec) and getattr(self.conditions, n).gaussian.std > 0
            for n in _RANGES
        )


# ----------------------------------------------------------------------------- parsing


def parse_scenario(data: object, file: str) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(file, "", "the file must hold a mapping (name, kind, conditions, ...)")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        # A feature is a union (number | gaussian | trace): report the branch the user meant.
        err = _best_error(errs)
        loc = [str(p) for p in err["loc"] if not _is_union_tag(p)]
        reason = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            reason = "field required"
        elif err["type"] == "extra_forbidden":
            reason = "unknown field"
        raise ScenarioError(file, ".".join(loc), reason) from None


def _is_union_tag(p: object) -> bool:
    return isinstance(p, str) and (p in ("float", "GaussianSpec", "TraceSpec") or p.startswith("function-"))


def _best_error(errs: list[ErrorDetails]) -> ErrorDetails:
    """A feature is number | {gaussian} | {trace}: report the branch the user wrote, not the others."""

    def wrong_branch(e: ErrorDetails) -> bool:
        loc = [str(p) for p in e["loc"]]
        if "float" in loc:  # "input should be a number" when a mapping was given
            return True
        # the other spec's key missing ("gaussian: field required" for a trace) is the wrong branch
        # and the user's spec key seen by the other branch ("trace: unknown field" under GaussianSpec)
        return e["type"] in ("missing", "extra_forbidden") and loc[-1] in ("gaussian", "trace")

    for e in errs:
        if not wrong_branch(e):
            return e
    return errs[0]


def scenario_json_schema() -> dict[str, object]:
    """The published JSON schema of a scenario file (docs/scenario.schema.json)."""
    return Scenario.model_json_schema()
