"""Emulated readings from the active scenario (paper Table IV; ``services.core.scenarios``).

Used for every reading this host cannot measure (Wi-Fi/Wi-Fi Direct RSSI on a build machine),
and for all four runtime-variance readings when the service is told to prefer emulation
(reproducible experiments on a shared machine). Labelled ``emulated``.

When the host has no power sensor at all, it also emulates the phone's *background* power
(what the co-runners cost, not the inference -- the runners report that) from the edge device
profile: CPU = idle + co_cpu x (top-step busy - idle), GPU/DSP idle. That is eq. 1 with the
co-runner's busy share at the top V/F step, an upper-bound assumption stated in the detail.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from services.common.config_files import load_profile, load_scenario
from services.core.profiles import DeviceProfile
from services.core.scenarios import Scenario
from services.core.schemas import Reading, RuntimeConditions
from services.telemetry.sources.base import CO_CPU, CO_MEM, RSSI_P2P, RSSI_WIFI, Source, power_name

log = logging.getLogger("autoscale.telemetry.scenario")


def scenario_label(scenario: Scenario, fallback: str) -> str:
    return scenario.name or fallback


class ScenarioSource(Source):
    name = "scenario"
    kind = "emulated"

    def __init__(
        self, scenario: Scenario, label: str, *, seed: int | None = None, profile: DeviceProfile | None = None
    ) -> None:
        self._lock = threading.Lock()  # read() runs in a worker thread, switch() on the event loop
        self._scenario = scenario
        self.label = label
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._t0 = time.monotonic()
        self.profile = profile
        # Set by the hub: the co-runner CPU load it serves when that is measured, so emulated
        # background power agrees with the co_cpu reading next to it.
        self.served_co_cpu: Callable[[], float | None] = lambda: None

    @classmethod
    def from_settings(
        cls,
        scenario: str,
        scenario_file: Path | None,
        *,
        seed: int | None,
        edge_device: str | None,
        profiles_dir: Path | None,
    ) -> ScenarioSource:
        target = str(scenario_file) if scenario_file else scenario
        sc = load_scenario(target)
        profile = None
        if edge_device:
            try:
                profile = load_profile(edge_device, profiles_dir)
            except Exception as exc:
                log.warning("no emulated power: cannot load edge profile %s: %s", edge_device, exc)
        return cls(sc, scenario_label(sc, target), seed=seed, profile=profile)

    def switch(self, scenario: Scenario, label: str, seed: int | None = None) -> None:
        """Make ``scenario`` active; its clock (t=0) starts now."""
        with self._lock:
            self._scenario = scenario
            self.label = label
            self._rng = np.random.default_rng(self._seed if seed is None else seed)
            self._t0 = time.monotonic()

    def provides(self) -> tuple[str, ...]:
        names = [CO_CPU, CO_MEM, RSSI_WIFI, RSSI_P2P]
        if self.profile is not None:
            names += [power_name(self.profile.name, p.value) for p in self.profile.processors]
        return tuple(names)

    def describe(self) -> str:
        power = f", background power of {self.profile.name}" if self.profile else ""
        return f"scenario {self.label}{power}"

    def conditions(self) -> RuntimeConditions:
        with self._lock:
            return self._scenario.conditions_at(time.monotonic() - self._t0, self._rng)

    def read(self) -> list[Reading]:
        c = self.conditions()
        detail = f"scenario {self.label}"
        out = [
            self.reading(CO_CPU, c.co_cpu, "ratio", detail),
            self.reading(CO_MEM, c.co_mem, "ratio", detail),
            self.reading(RSSI_WIFI, c.rssi_wifi_dbm, "dBm", detail),
            self.reading(RSSI_P2P, c.rssi_p2p_dbm, "dBm", detail),
        ]
        if self.profile is not None:
            served = self.served_co_cpu()
            co_cpu = c.co_cpu if served is None else served
            for proc, prof in self.profile.processors.items():
                watts = prof.idle_w
                if proc.value == "cpu":
                    watts += co_cpu * max(prof.busy_power(None) - prof.idle_w, 0.0)
                out.append(
                    self.reading(
                        power_name(self.profile.name, proc.value),
                        watts,
                        "W",
                        f"{detail}: background power from profile {self.profile.name} (co-runner at top V/F step)",
                    )
                )
        return out
