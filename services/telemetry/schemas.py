"""The telemetry service's request and response bodies (besides ``TelemetrySnapshot``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.core.schemas import ReadingSource, RuntimeConditions
from services.telemetry.config import Prefer


class ScenarioRequest(BaseModel):
    """``PUT /scenario``: a built-in or file scenario by ``name``, or an inline ``scenario``
    (same schema as a scenario file: name, kind, conditions with constants/gaussians/traces)."""

    model_config = ConfigDict(extra="forbid")

    # A name, never a path: an HTTP client must not make the service open arbitrary files.
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_]{1,64}$",
        description="S1..S5, D1..D4 (case-insensitive), or a scenario next to AUTOSCALE_SCENARIO_FILE",
    )
    scenario: dict[str, Any] | None = Field(None, description="an inline scenario definition")
    prefer: Prefer | None = Field(None, description="measured | emulated (see AUTOSCALE_TELEMETRY_PREFER)")
    seed: int | None = Field(None, description="seed of the Gaussian draws (default: the service seed)")

    @model_validator(mode="after")
    def _one_of(self) -> ScenarioRequest:
        if self.name is not None and self.scenario is not None:
            raise ValueError("give either name or scenario, not both")
        if self.name is None and self.scenario is None and self.prefer is None:
            raise ValueError("give name, scenario or prefer")
        return self


class ScenarioSwitched(BaseModel):
    """``PUT /scenario``'s answer: what is emulated now and the conditions it gives."""

    scenario: str
    prefer: Prefer
    conditions: RuntimeConditions


class ReadingRoute(BaseModel):
    """Which source serves one reading, and which others could."""

    source: str
    kind: ReadingSource
    candidates: list[str] = Field(description='every source providing it, as "name (kind)"')
    has_value: bool
    stale: bool | None
    age_s: float | None


class SourceStatus(BaseModel):
    """One source's health: its last read's outcome and its counters."""

    name: str
    kind: ReadingSource
    describe: str
    provides: list[str]
    status: str = Field(description="outcome of the last finished read: pending | ok | error | timeout")
    in_flight: bool
    reads: int
    errors: int
    timeouts: int
    last_error: str
    last_ok_age_s: float | None
    last_duration_s: float


class DetectionView(BaseModel):
    """What one source family found on this host, or why nothing."""

    family: str
    found: list[str]
    absent: str


class SourcesView(BaseModel):
    """``GET /sources``: which source serves each reading, measured or emulated, and what detection found."""

    prefer: Prefer
    scenario: str
    stale_after_s: float
    readings: dict[str, ReadingRoute]
    sources: list[SourceStatus]
    detection: list[DetectionView]
