"""The one interface every telemetry source implements, plus small sysfs/procfs helpers.

A source is *detected* (its family's ``detect`` returns it only when the hardware or tool is
really there) and then *read* repeatedly by the service's poller in a worker thread with a
timeout, so ``read`` may block (subprocess, slow sysfs) without ever blocking ``/state``.
"""

from __future__ import annotations

import logging
import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from services.core.schemas import Reading, ReadingSource

log = logging.getLogger("autoscale.telemetry.sources")

# Reading names of Table I's runtime-variance features: identical to RuntimeConditions' fields,
# so building the conditions from the readings is a plain lookup.
CO_CPU = "co_cpu"
CO_MEM = "co_mem"
RSSI_WIFI = "rssi_wifi_dbm"
RSSI_P2P = "rssi_p2p_dbm"
CONDITION_READINGS: tuple[str, ...] = (CO_CPU, CO_MEM, RSSI_WIFI, RSSI_P2P)

# Measured sources describe the host they run on; emulated power describes the profiled phone.
HOST_DEVICE = "host"


def power_name(device: str, processor: str) -> str:
    """Reading name of a power value, e.g. ``power.host.package-0``."""
    return f"power.{device}.{processor}"


def energy_name(device: str, processor: str) -> str:
    """Reading name of a cumulative energy counter, e.g. ``energy.host.package-0``."""
    return f"energy.{device}.{processor}"


@dataclass(frozen=True)
class DetectContext:
    """Where detection looks. The roots are parameters so tests can point at a fake tree."""

    sys_root: Path = Path("/sys")
    proc_root: Path = Path("/proc")
    mesh_id: str = ""
    edge_device: str = "mi8pro"
    tool_path: str | None = None  # where sensor tools (iw, termux-*) are looked up; None = the process PATH

    def which(self, tool: str) -> str | None:
        """Full path of a sensor tool, or None when it is not installed."""
        return shutil.which(tool, path=self.tool_path)


@dataclass
class Detection:
    """What one family found (or why not): reported by ``GET /sources``."""

    family: str
    found: list[str] = field(default_factory=list)
    absent: str = ""


class Source(ABC):
    """A producer of readings. Subclasses set ``name`` (unique) and ``kind``."""

    name: str = "source"
    kind: ReadingSource = "measured"
    # Per-source overrides of the service defaults: a slow tool (termux-api starts a JVM) gets
    # a longer timeout and is polled less often than a sysfs file.
    timeout_s: float | None = None
    interval_s: float | None = None

    @abstractmethod
    def provides(self) -> tuple[str, ...]:
        """Names of the readings ``read`` returns (fixed after detection)."""

    @abstractmethod
    def read(self) -> list[Reading]:
        """Take one sample. May block and may raise; the poller times it out and records errors."""

    def describe(self) -> str:
        """One line for ``GET /sources`` (which file, tool or device this source reads)."""
        return ""

    def reading(self, name: str, value: float, unit: str, detail: str = "") -> Reading:
        return Reading(name=name, value=float(value), unit=unit, source=self.kind, timestamp=time.time(), detail=detail)


def read_text(path: Path) -> str | None:
    """Contents of a sysfs/procfs file, stripped; None when missing or unreadable."""
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def read_number(path: Path) -> float | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None
