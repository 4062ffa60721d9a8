"""Telemetry-only options (env ``AUTOSCALE_TELEMETRY_*``), kept apart from the shared Settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Prefer = Literal["measured", "emulated"]


class TelemetryOptions(BaseSettings):
    # Shares the AUTOSCALE_TELEMETRY_ prefix with Settings.telemetry_port/_url/_refresh_s: those
    # names are not fields here, and extra="ignore" skips them.
    model_config = SettingsConfigDict(env_prefix="AUTOSCALE_TELEMETRY_", extra="ignore")

    read_timeout_s: float = Field(2.0, gt=0, description="a source read taking longer is abandoned (and retried later)")
    stale_after_s: float | None = Field(
        None, gt=0, description="readings older than this are flagged stale; default max(5 x refresh, 3 s)"
    )
    prefer: Prefer = Field(
        "measured",
        description="measured: real sensors where present, the scenario elsewhere; "
        "emulated: the scenario drives co-runner load and RSSI even where sensors exist",
    )
    extra_sources: str = Field(
        "", description="comma-separated 'module:callable' factories of extra Source objects (tests, plug-ins)"
    )
    disable: str = Field("", description="comma-separated source families to skip, e.g. 'corunner,wireless'")
    sys_root: Path = Field(Path("/sys"), description="sysfs root (a fake tree in tests)")
    proc_root: Path = Field(Path("/proc"), description="procfs root (a fake tree in tests)")
    tool_path: str = Field(
        "", description="PATH searched for sensor tools (iw, termux-*); empty = the process PATH (fake tools in tests)"
    )

    def stale_threshold(self, refresh_s: float) -> float:
        return self.stale_after_s or max(5 * refresh_s, 3.0)

    def disabled(self) -> frozenset[str]:
        return frozenset(x.strip() for x in self.disable.split(",") if x.strip())
