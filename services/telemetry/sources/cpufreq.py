"""CPU frequency per cpufreq policy (cluster), for eq. 1's per-frequency busy time.

With ``stats/time_in_state`` the reading is the time-weighted mean frequency over the last
interval (and the detail lists the share per frequency); without it, ``scaling_cur_freq``.
Reading names: ``cpufreq.<policy>`` in GHz.
"""

from __future__ import annotations

import time
from pathlib import Path

from services.core.schemas import Reading
from services.telemetry.sources.base import DetectContext, Detection, Source, read_number, read_text


def parse_time_in_state(text: str) -> dict[int, float]:
    """``<freq kHz> <time in 10 ms units>`` lines -> {kHz: seconds}."""
    out: dict[int, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            out[int(parts[0])] = int(parts[1]) / 100.0
    return out


class CpufreqSource(Source):
    name = "cpufreq"
    kind = "measured"

    def __init__(self, policies: dict[str, Path]) -> None:
        self.policies = policies
        self._prev: dict[str, dict[int, float]] = {}

    def provides(self) -> tuple[str, ...]:
        return tuple(f"cpufreq.{p}" for p in self.policies)

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.policies.values())

    def _one(self, policy: str, path: Path) -> Reading:
        tis = read_text(path / "stats" / "time_in_state")
        if tis:
            cur = parse_time_in_state(tis)
            prev = self._prev.get(policy, {})
            self._prev[policy] = cur
            delta = {f: max(s - prev.get(f, 0.0), 0.0) for f, s in cur.items()}
            total = sum(delta.values())
            if total > 0:
                mean_khz = sum(f * s for f, s in delta.items()) / total
                shares = " ".join(f"{f / 1e6:.2f}GHz:{s / total:.2f}" for f, s in sorted(delta.items()) if s > 0)
                return self.reading(f"cpufreq.{policy}", mean_khz / 1e6, "GHz", f"time_in_state {shares}")
        khz = read_number(path / "scaling_cur_freq")
        if khz is None:
            raise OSError(f"cannot read {path}/scaling_cur_freq")
        return self.reading(f"cpufreq.{policy}", khz / 1e6, "GHz", "scaling_cur_freq")

    def read(self) -> list[Reading]:
        if not self._prev:
            for policy, path in self.policies.items():  # baseline so the first mean is recent
                tis = read_text(path / "stats" / "time_in_state")
                if tis:
                    self._prev[policy] = parse_time_in_state(tis)
            if self._prev:
                time.sleep(0.1)
        return [self._one(p, path) for p, path in self.policies.items()]


def detect(ctx: DetectContext) -> tuple[list[Source], Detection]:
    det = Detection("cpufreq")
    base = ctx.sys_root / "devices" / "system" / "cpu" / "cpufreq"
    policies = {
        p.name: p
        for p in sorted(base.glob("policy*"))
        if read_text(p / "stats" / "time_in_state") or read_number(p / "scaling_cur_freq") is not None
    }
    if not policies:
        det.absent = f"no readable {base}/policy*/(stats/time_in_state|scaling_cur_freq)"
        return [], det
    det.found = [
        f"{p} ({'time_in_state' if read_text(path / 'stats' / 'time_in_state') else 'scaling_cur_freq'})"
        for p, path in policies.items()
    ]
    return [CpufreqSource(policies)], det
