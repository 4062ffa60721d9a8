"""Measured power and energy of this host: Intel RAPL, hwmon, battery gauge (sysfs, or termux-api on a phone:
``termux.py``), NVIDIA NVML.

Each family is detected by trying to read it (files exist *and* are readable; RAPL's
energy_uj is root-only on most kernels since 2020). Names: ``power.host.<processor>`` (W)
and ``energy.host.<processor>`` (J, cumulative since the service started, wrap-safe).
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.schemas import Reading
from services.telemetry.sources import termux
from services.telemetry.sources.base import (
    HOST_DEVICE,
    DetectContext,
    Detection,
    Source,
    energy_name,
    power_name,
    read_number,
    read_text,
)

log = logging.getLogger("autoscale.telemetry.power")


def _label(text: str) -> str:
    """A label-safe processor name (metrics and reading keys)."""
    return re.sub(r"[^a-z0-9_.-]+", "_", text.strip().lower()) or "unknown"


# ----------------------------------------------------------------------------- energy counters


@dataclass
class _Counter:
    """Turns a wrapping hardware energy counter into power and a monotonic total."""

    path: Path
    scale: float  # counter unit -> joules
    wrap: float  # counter range (0 = unknown: a negative delta is treated as a reset)
    last: float | None = None
    last_t: float = 0.0
    total_j: float = 0.0
    power_w: float | None = None

    def sample(self) -> bool:
        raw = read_number(self.path)
        if raw is None:
            return False
        now = time.monotonic()
        if self.last is not None:
            delta = raw - self.last
            if delta < 0:
                delta = delta + self.wrap if self.wrap else 0.0
            joules = delta * self.scale
            dt = now - self.last_t
            self.total_j += joules
            if dt > 0:
                self.power_w = joules / dt
        self.last, self.last_t = raw, now
        return True


class _CounterSource(Source):
    """Common read loop of RAPL and hwmon energy counters."""

    kind = "measured"

    def __init__(self, counters: dict[str, _Counter]) -> None:
        self.counters = counters

    def provides(self) -> tuple[str, ...]:
        names: list[str] = []
        for proc in self.counters:
            names += [power_name(HOST_DEVICE, proc), energy_name(HOST_DEVICE, proc)]
        return tuple(names)

    def describe(self) -> str:
        return ", ".join(str(c.path) for c in self.counters.values())

    def read(self) -> list[Reading]:
        if all(c.last is None for c in self.counters.values()):
            for c in self.counters.values():
                c.sample()
            time.sleep(0.1)  # first read: a short interval so power is known at once
        out: list[Reading] = []
        for proc, c in self.counters.items():
            if not c.sample():
                raise OSError(f"cannot read {c.path}")
            out.append(self.reading(energy_name(HOST_DEVICE, proc), c.total_j, "J", str(c.path)))
            if c.power_w is not None:
                out.append(self.reading(power_name(HOST_DEVICE, proc), c.power_w, "W", str(c.path)))
        return out


class RaplSource(_CounterSource):
    name = "rapl"


def detect_rapl(ctx: DetectContext) -> tuple[list[Source], Detection]:
    det = Detection("rapl")
    base = ctx.sys_root / "class" / "powercap"
    counters: dict[str, _Counter] = {}
    denied: list[str] = []
    for zone in sorted(base.glob("intel-rapl:*")):
        name = read_text(zone / "name")
        energy = zone / "energy_uj"
        if name is None or not energy.exists():
            continue
        if read_number(energy) is None:
            denied.append(str(energy))
            continue
        # Sub-zones (intel-rapl:0:0 "core") are qualified by their package to stay unique.
        parts = zone.name.split(":")
        proc = _label(name)
        if len(parts) == 3:
            parent = read_text(base / f"intel-rapl:{parts[1]}" / "name") or f"package-{parts[1]}"
            proc = f"{_label(parent)}.{proc}"
        wrap = read_number(zone / "max_energy_range_uj") or 0.0
        counters[proc] = _Counter(path=energy, scale=1e-6, wrap=wrap)
    if counters:
        det.found = [f"{p} ({c.path})" for p, c in counters.items()]
        return [RaplSource(counters)], det
    det.absent = f"unreadable (root only?): {', '.join(denied)}" if denied else f"no {base}/intel-rapl:* zones"
    return [], det


# ----------------------------------------------------------------------------- hwmon


class HwmonSource(Source):
    """hwmon ``power*_input``/``power*_average`` (µW) and ``energy*_input`` (µJ) channels."""

    name = "hwmon"
    kind = "measured"

    def __init__(self, power: dict[str, Path], energy: dict[str, _Counter]) -> None:
        self.power = power
        self.energy = energy

    def provides(self) -> tuple[str, ...]:
        names = [power_name(HOST_DEVICE, p) for p in self.power]
        for p in self.energy:
            names.append(energy_name(HOST_DEVICE, p))
            if p not in self.power:
                names.append(power_name(HOST_DEVICE, p))
        return tuple(names)

    def describe(self) -> str:
        return ", ".join([str(p) for p in self.power.values()] + [str(c.path) for c in self.energy.values()])

    def read(self) -> list[Reading]:
        out: list[Reading] = []
        for proc, path in self.power.items():
            uw = read_number(path)
            if uw is None:
                raise OSError(f"cannot read {path}")
            out.append(self.reading(power_name(HOST_DEVICE, proc), uw / 1e6, "W", str(path)))
        for proc, c in self.energy.items():
            if not c.sample():
                raise OSError(f"cannot read {c.path}")
            out.append(self.reading(energy_name(HOST_DEVICE, proc), c.total_j, "J", str(c.path)))
            if proc not in self.power and c.power_w is not None:
                out.append(self.reading(power_name(HOST_DEVICE, proc), c.power_w, "W", str(c.path)))
        return out


def detect_hwmon(ctx: DetectContext) -> tuple[list[Source], Detection]:
    det = Detection("hwmon")
    power: dict[str, Path] = {}
    energy: dict[str, _Counter] = {}
    for hw in sorted((ctx.sys_root / "class" / "hwmon").glob("hwmon*")):
        chip = _label(read_text(hw / "name") or hw.name)
        for path in sorted(list(hw.glob("power*_input")) + list(hw.glob("power*_average"))):
            channel = path.name.split("_")[0]  # power1
            label = read_text(hw / f"{channel}_label")
            proc = f"{chip}.{_label(label)}" if label else f"{chip}.{channel}"
            if proc not in power and read_number(path) is not None:
                power[proc] = path
        for path in sorted(hw.glob("energy*_input")):
            channel = path.name.split("_")[0]
            label = read_text(hw / f"{channel}_label")
            proc = f"{chip}.{_label(label)}" if label else f"{chip}.{channel}"
            if read_number(path) is not None:
                energy[proc] = _Counter(path=path, scale=1e-6, wrap=0.0)
    if power or energy:
        det.found = sorted(set(power) | set(energy))
        return [HwmonSource(power, energy)], det
    det.absent = f"no readable power*/energy* channels under {ctx.sys_root / 'class' / 'hwmon'}"
    return [], det


# ----------------------------------------------------------------------------- battery


class BatterySource(Source):
    """Whole-device power from the fuel gauge: power_now, or |current_now| x voltage_now.

    The value is the device's draw only while discharging; when charging it is the charge
    current, which the detail field says."""

    name = "battery"
    kind = "measured"

    def __init__(self, supply: Path) -> None:
        self.supply = supply
        self.proc = f"battery.{_label(supply.name)}"

    def provides(self) -> tuple[str, ...]:
        return (power_name(HOST_DEVICE, self.proc),)

    def describe(self) -> str:
        return str(self.supply)

    def read(self) -> list[Reading]:
        watts = _battery_watts(self.supply)
        if watts is None:
            raise OSError(f"cannot read power_now or current_now/voltage_now under {self.supply}")
        status = read_text(self.supply / "status") or "unknown"
        return [self.reading(power_name(HOST_DEVICE, self.proc), watts, "W", f"{self.supply} status={status}")]


def _battery_watts(supply: Path) -> float | None:
    p = read_number(supply / "power_now")
    if p is not None:
        return abs(p) / 1e6
    i = read_number(supply / "current_now")
    v = read_number(supply / "voltage_now")
    if i is None or v is None:
        return None
    # µA x µV; the sign of current_now differs between vendors (Android: negative = discharging).
    return abs(i) * v / 1e12


def detect_battery(ctx: DetectContext) -> tuple[list[Source], Detection]:
    det = Detection("battery")
    sources: list[Source] = []
    for supply in sorted((ctx.sys_root / "class" / "power_supply").glob("*")):
        if (read_text(supply / "type") or "").lower() != "battery":
            continue
        if _battery_watts(supply) is not None:
            sources.append(BatterySource(supply))
            det.found.append(str(supply))
    if not sources:  # Android keeps apps out of the fuel gauge's sysfs: under Termux, ask termux-api
        sources = termux.detect_battery(ctx, det)
    if not sources and not det.absent:
        det.absent = (
            f"no battery with power_now or current_now+voltage_now under {ctx.sys_root / 'class' / 'power_supply'}"
            f", no {termux.BATTERY_TOOL}"
        )
    return sources, det


# ----------------------------------------------------------------------------- NVML


class NvmlSource(Source):
    """NVIDIA GPU power (and total energy on Volta+) via pynvml, when it is importable."""

    name = "nvml"
    kind = "measured"

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self.nvml = nvml
        self.handles = handles
        self._energy_ok = [True] * len(handles)
        self._energy0: list[float | None] = [None] * len(handles)

    def provides(self) -> tuple[str, ...]:
        names: list[str] = []
        for i in range(len(self.handles)):
            names += [power_name(HOST_DEVICE, f"gpu{i}"), energy_name(HOST_DEVICE, f"gpu{i}")]
        return tuple(names)

    def describe(self) -> str:
        return f"pynvml, {len(self.handles)} GPU(s)"

    def read(self) -> list[Reading]:
        out: list[Reading] = []
        for i, h in enumerate(self.handles):
            out.append(
                self.reading(power_name(HOST_DEVICE, f"gpu{i}"), self.nvml.nvmlDeviceGetPowerUsage(h) / 1e3, "W")
            )
            if self._energy_ok[i]:
                try:
                    mj = float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h))
                except Exception:
                    self._energy_ok[i] = False
                    continue
                if self._energy0[i] is None:
                    self._energy0[i] = mj
                out.append(
                    self.reading(energy_name(HOST_DEVICE, f"gpu{i}"), (mj - (self._energy0[i] or 0.0)) / 1e3, "J")
                )
        return out


def detect_nvml(ctx: DetectContext) -> tuple[list[Source], Detection]:
    det = Detection("nvml")
    try:
        nvml = importlib.import_module("pynvml")  # optional: never a dependency of the project
    except ImportError:
        det.absent = "pynvml is not installed"
        return [], det
    try:
        nvml.nvmlInit()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        for h in handles:
            nvml.nvmlDeviceGetPowerUsage(h)
    except Exception as exc:
        det.absent = f"NVML unavailable: {exc}"
        return [], det
    if not handles:
        det.absent = "NVML reports no GPU"
        return [], det
    det.found = [f"gpu{i}" for i in range(len(handles))]
    return [NvmlSource(nvml, handles)], det
