"""What this host offers a calibration: CPUs, cpufreq steps (and whether they can be set), power sensors.

Nothing is assumed: cpufreq is settable only where ``scaling_min_freq``/``scaling_max_freq`` of the
policy covering the calibrated CPUs are writable (root, or a rooted phone); otherwise the calibration
measures at the current frequency and says so. Power sensors are found by the telemetry service's
own detection (RAPL, hwmon, battery gauge), so a calibrated profile and the running mesh read the
same sensor. ``sys_root`` is a parameter so that tests can point at a fake tree.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psutil

from services.calibration.models import CpufreqFacts, PowerFacts
from services.telemetry.sources import power as power_sources
from services.telemetry.sources.base import DetectContext, Source

T = TypeVar("T")


def cpu_model() -> str:
    """The CPU's marketing name (x86 ``model name``, ARM ``Hardware``), else the machine type."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()


def hostname_label() -> str:
    """This host's name, fit for a profile name ([a-z0-9_]+)."""
    return re.sub(r"[^a-z0-9_]+", "_", socket.gethostname().lower()).strip("_") or "host"


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def load_average() -> tuple[float, float, float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return os.getloadavg()
    return None


def cpuinfo_ghz(cpu: int) -> float | None:
    """The current clock /proc/cpuinfo reports for ``cpu`` (x86 only; ARM kernels do not)."""
    with contextlib.suppress(OSError, ValueError):
        current = -1
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "processor":
                current = int(value)
            elif key.strip() == "cpu MHz" and current == cpu:
                return round(float(value) / 1e3, 4)
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpu_list(text: str) -> set[int]:
    """``0-3,6`` -> {0, 1, 2, 3, 6}."""
    out: set[int] = set()
    for part in text.replace(" ", ",").split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out |= set(range(int(lo), int(hi) + 1))
        elif part.strip():
            out.add(int(part))
    return out


@dataclass
class Cpufreq:
    """The cpufreq policy covering the calibrated CPUs, if there is one, and whether it can be set."""

    cpus: list[int]
    sys_root: Path = Path("/sys")
    policy: Path | None = None
    available_khz: list[int] = field(default_factory=list)
    settable: bool = False
    detail: str = ""
    _saved: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        base = self.sys_root / "devices/system/cpu/cpufreq"
        policies = sorted(base.glob("policy*"))
        if not policies:
            self.detail = f"no {base}/policy* on this host"
            return
        covering = [p for p in policies if set(self.cpus) & _cpu_list(_read(p / "related_cpus") or "")]
        if len(covering) != 1:
            self.detail = f"the CPUs {self.cpus} span {len(covering)} cpufreq policies; pin to one cluster"
            return
        self.policy = covering[0]
        text = _read(self.policy / "scaling_available_frequencies") or ""
        self.available_khz = sorted({int(v) for v in text.split() if v.isdigit()})
        writable = all(os.access(self.policy / f, os.W_OK) for f in ("scaling_min_freq", "scaling_max_freq"))
        if not self.available_khz:
            self.detail = f"{self.policy.name} lists no scaling_available_frequencies"
        elif not writable:
            self.detail = f"{self.policy.name}/scaling_{{min,max}}_freq are not writable (needs root)"
        else:
            self.settable = True
            self.detail = f"{self.policy.name}: {len(self.available_khz)} steps, settable"

    def current_ghz(self) -> float | None:
        if self.policy is not None:
            khz = _read(self.policy / "scaling_cur_freq")
            if khz and khz.isdigit():
                return int(khz) / 1e6
        return cpuinfo_ghz(self.cpus[0])

    def steps(self, max_steps: int) -> list[int]:
        """At most ``max_steps`` of the available steps, evenly spread, lowest and highest included."""
        freqs = self.available_khz
        if len(freqs) <= max_steps:
            return list(freqs)
        if max_steps == 1:
            return [freqs[-1]]
        idx = sorted({round(i * (len(freqs) - 1) / (max_steps - 1)) for i in range(max_steps)})
        return [freqs[i] for i in idx]

    def set(self, khz: int) -> None:
        """Pin the policy to ``khz`` (min = max); the first call saves the limits ``restore`` puts back."""
        assert self.policy is not None and self.settable
        lo, hi = self.policy / "scaling_min_freq", self.policy / "scaling_max_freq"
        if self._saved is None:
            self._saved = (_read(lo) or "", _read(hi) or "")
        current_max = int(_read(hi) or 0)
        # The kernel refuses min > max: raise the ceiling first when going up, the floor last.
        order = (hi, lo) if khz >= current_max else (lo, hi)
        for path in order:
            path.write_text(str(khz))

    def restore(self) -> None:
        if self.policy is None or self._saved is None:
            return
        lo, hi = self._saved
        with contextlib.suppress(OSError):
            (self.policy / "scaling_max_freq").write_text(hi)
            (self.policy / "scaling_min_freq").write_text(lo)
        self._saved = None

    def facts(self, steps_khz: list[int]) -> CpufreqFacts:
        detail = self.detail if self.settable else f"current frequency only: {self.detail}"
        return CpufreqFacts(settable=self.settable, detail=detail, steps_khz=steps_khz, current_ghz=self.current_ghz())


# ----------------------------------------------------------------------------- power


@dataclass
class PowerMeter:
    """Mean power of this host while a function runs, from one telemetry source.

    Energy counters (RAPL, hwmon ``energy*``) give energy over the interval / its duration; a
    power-only gauge (battery) is sampled on a thread every ``sample_s`` while the function runs."""

    source: Source
    names: list[str]
    counter: bool
    sample_s: float = 0.1

    def _values(self) -> dict[str, float]:
        return {r.name: r.value for r in self.source.read() if r.name in self.names}

    def measure(self, fn: Callable[[], T]) -> tuple[T, float | None]:
        if self.counter:
            before, t0 = self._values(), time.monotonic()
            result = fn()
            after, t1 = self._values(), time.monotonic()
            joules = sum(after.get(n, 0.0) - before.get(n, 0.0) for n in self.names)
            return result, (joules / (t1 - t0) if t1 > t0 and joules >= 0 else None)
        samples: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                with contextlib.suppress(OSError):
                    samples.append(sum(self._values().values()))
                done.wait(self.sample_s)

        thread = threading.Thread(target=sample, name="power-sampler", daemon=True)
        thread.start()
        try:
            result = fn()
        finally:
            done.set()
            thread.join(timeout=5.0)
        return result, (sum(samples) / len(samples) if samples else None)

    def idle(self, seconds: float = 1.0) -> float | None:
        """Mean power while nothing of ours runs."""
        return self.measure(lambda: time.sleep(seconds))[1]


def _top_level(names: list[str], prefix: str) -> list[str]:
    """Package-level readings only: RAPL sub-zones (``package-0.core``) are already inside their package."""
    return [n for n in names if n.startswith(prefix) and "." not in n[len(prefix) :]]


def detect_power(sys_root: Path = Path("/sys")) -> tuple[PowerMeter | None, PowerFacts]:
    """The best CPU power sensor this host has: RAPL, then hwmon energy, then the battery gauge."""
    ctx = DetectContext(sys_root=sys_root)
    families: dict[str, str] = {}
    meter: PowerMeter | None = None
    for family, detect in (
        ("rapl", power_sources.detect_rapl),
        ("hwmon", power_sources.detect_hwmon),
        ("battery", power_sources.detect_battery),
    ):
        try:
            sources, det = detect(ctx)
        except Exception as exc:  # a detector that fails is an absent sensor, said so
            families[family] = f"detection failed: {exc}"
            continue
        families[family] = ("found " + ", ".join(det.found)) if det.found else det.absent
        for src in sources:
            provided = list(src.provides())
            energy = _top_level(provided, "energy.host.")
            watts = _top_level(provided, "power.host.")
            if meter is None and (energy or (family == "battery" and watts)):
                meter = PowerMeter(src, energy or watts, counter=bool(energy))
    if meter is None:
        return None, PowerFacts(sensor=None, detail="no power sensor readable by this user", families=families)
    detail = f"{meter.source.name}: {', '.join(meter.names)} ({meter.source.describe()})"
    # A single package-level energy counter is what the runner can read around each inference.
    counters = getattr(meter.source, "counters", {})
    paths = [str(c.path) for name, c in counters.items() if f"energy.host.{name}" in meter.names]
    counter = paths[0] if meter.counter and len(paths) == 1 else None
    return meter, PowerFacts(sensor=meter.source.name, counter=counter, detail=detail, families=families)


def logical_cpus() -> int:
    return psutil.cpu_count() or 1
