"""Co-runner load (Table I's S_Co_CPU, S_Co_MEM) measured with psutil.

"Co-runner" means everything on this host *except the mesh itself*: the paper's co-running
apps compete with the inference, while the mesh's own runners are the inference.

How mesh processes are recognised: every process the launcher starts exports
``AUTOSCALE_MESH_ID=<id>`` (inherited by their children). A process is "mesh" when its
environment carries the same id as this telemetry process (or, if the telemetry process has
no id, any id), or when it is this process. Unreadable environments (other users' processes,
Android apps) count as co-runners, which is what they are. The check runs once per
(pid, create_time), so a refresh costs one /proc/stat read plus the mesh processes' stats.

CPU: system busy time minus the mesh's CPU time over the interval, divided by
interval x cores. Memory: (total - available - mesh RSS) / total.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import psutil

from services.core.schemas import Reading
from services.telemetry.sources.base import CO_CPU, CO_MEM, DetectContext, Detection, Source

log = logging.getLogger("autoscale.telemetry.corunner")

MESH_ID_ENV = "AUTOSCALE_MESH_ID"
MIN_INTERVAL_S = 0.05


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    # guest time is already inside user/nice on Linux: exclude it from the sum to avoid double counting.
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return total - idle


@dataclass
class _Sample:
    t: float  # monotonic
    busy_s: float  # system-wide busy CPU seconds
    mesh_cpu: dict[int, float]  # pid -> user+system seconds


class CoRunnerSource(Source):
    name = "psutil"
    kind = "measured"

    def __init__(self, mesh_id: str = "", own_pid: int | None = None) -> None:
        self.mesh_id = mesh_id
        self.own_pid = own_pid or os.getpid()
        self.ncpu = psutil.cpu_count() or 1
        self._is_mesh: dict[tuple[int, float], bool] = {}
        # Baseline at construction (detection time): the first read then measures the interval
        # since start-up instead of sleeping inside a read that runs under a timeout.
        self._prev: _Sample = self._sample(self._mesh_processes())

    def provides(self) -> tuple[str, ...]:
        return (CO_CPU, CO_MEM)

    def describe(self) -> str:
        who = f"{MESH_ID_ENV}={self.mesh_id}" if self.mesh_id else f"any {MESH_ID_ENV}"
        return f"psutil over {self.ncpu} CPUs, excluding processes with {who} and pid {self.own_pid}"

    def _mesh_processes(self) -> list[psutil.Process]:
        seen: dict[tuple[int, float], bool] = {}
        mesh: list[psutil.Process] = []
        for proc in psutil.process_iter():
            try:
                key = (proc.pid, proc.create_time())
                verdict = self._is_mesh.get(key)
                if verdict is None:
                    verdict = self._check(proc)
                seen[key] = verdict
                if verdict:
                    mesh.append(proc)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        self._is_mesh = seen  # forget exited processes so the cache never grows
        return mesh

    def _check(self, proc: psutil.Process) -> bool:
        if proc.pid == self.own_pid:
            return True
        try:
            value = proc.environ().get(MESH_ID_ENV)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
            return False
        if value is None:
            return False
        return value == self.mesh_id if self.mesh_id else True

    def _sample(self, mesh: list[psutil.Process]) -> _Sample:
        cpu: dict[int, float] = {}
        for proc in mesh:
            try:
                ct = proc.cpu_times()
                cpu[proc.pid] = ct.user + ct.system
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        return _Sample(t=time.monotonic(), busy_s=_busy_seconds(), mesh_cpu=cpu)

    def read(self) -> list[Reading]:
        mesh = self._mesh_processes()
        too_soon = MIN_INTERVAL_S - (time.monotonic() - self._prev.t)
        if too_soon > 0:  # a ratio over a few ms is mostly scheduler noise
            time.sleep(too_soon)
        cur = self._sample(mesh)
        prev, self._prev = self._prev, cur
        wall = max(cur.t - prev.t, 1e-6)
        busy = max(cur.busy_s - prev.busy_s, 0.0)
        # A process new since the last sample contributes its whole CPU time (it started in between).
        mesh_cpu = sum(max(v - prev.mesh_cpu.get(pid, 0.0), 0.0) for pid, v in cur.mesh_cpu.items())
        co_cpu = min(max((busy - mesh_cpu) / (wall * self.ncpu), 0.0), 1.0)

        vm = psutil.virtual_memory()
        mesh_rss = 0
        for proc in mesh:
            try:
                mesh_rss += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        co_mem = min(max((vm.total - vm.available - mesh_rss) / vm.total, 0.0), 1.0)
        detail = f"{len(mesh)} mesh processes excluded"
        return [
            self.reading(CO_CPU, co_cpu, "ratio", detail),
            self.reading(CO_MEM, co_mem, "ratio", detail),
        ]


def detect(ctx: DetectContext) -> tuple[list[Source], Detection]:
    det = Detection("corunner")
    try:
        # Android >= 7 hides /proc/stat from apps: detect by trying, never assume.
        psutil.cpu_times()
        psutil.virtual_memory()
    except Exception as exc:
        det.absent = f"psutil cannot read CPU/memory stats: {exc}"
        return [], det
    det.found.append("psutil (cpu_times, virtual_memory)")
    return [CoRunnerSource(ctx.mesh_id)], det
