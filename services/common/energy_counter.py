"""A cumulative hardware energy counter read around one inference (``AUTOSCALE_ENERGY_COUNTER``).

RAPL's ``energy_uj`` and hwmon's ``energy*_input`` count microjoules since boot and wrap at
``max_energy_range_uj`` (RAPL; hwmon counters are 64-bit and do not wrap in practice). The runner
reads one before and after executing a network when this host *is* the profiled device, so the
energy it reports is measured; the telemetry service polls the same files for its power readings.
"""

from __future__ import annotations

from pathlib import Path


class EnergyCounterError(OSError):
    """The counter file cannot be read as a number (missing, not permitted, not a counter)."""


class EnergyCounter:
    """Microjoules since boot from one sysfs file; ``joules_between`` undoes a wrap."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        wrap_file = self.path.with_name("max_energy_range_uj")
        self.wrap_uj = self._number(wrap_file) if wrap_file.exists() else 0.0
        self.read_uj()  # fail at start, naming the file, rather than on the first inference

    @staticmethod
    def _number(path: Path) -> float:
        try:
            return float(path.read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise EnergyCounterError(f"cannot read an energy counter (µJ) from {path}: {exc}") from None

    def read_uj(self) -> float:
        return self._number(self.path)

    def joules_between(self, before_uj: float, after_uj: float) -> float:
        delta = after_uj - before_uj
        if delta < 0:
            delta = delta + self.wrap_uj if self.wrap_uj else 0.0
        return delta / 1e6
