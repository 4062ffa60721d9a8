"""Co-runners: processes that really load this machine, for ``autoscale calibrate`` and ``autoscale testbed``.

Two kinds (the paper's Fig. 5 co-runners): ``cpu`` burns a core (busy ``duty`` of every 20 ms period) and
``mem`` streams numpy copies between two buffers larger than the last-level cache, so that it competes for
memory bandwidth, not just for a core. They are *processes*: a Python thread holds the GIL and would slow
the caller instead of the machine.

None outlives its owner. Each co-runner
  * starts in its own process group (``stop`` signals the group),
  * asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``, Linux), set by the child itself
    so that no ``preexec_fn`` runs between fork and exec in a threaded parent, then checks that its parent is
    still the one that started it (the parent may have died before the request),
  * polls its parent pid every period as well (other Unixes, and belt and braces),
  * exits on its own after ``max_s`` seconds whatever happens;
and the owner stops every group still running at exit (``atexit``) and, with ``install_signal_handlers``,
on SIGTERM/SIGHUP too (Ctrl-C already unwinds through ``finally``).

The children do not inherit ``AUTOSCALE_MESH_ID``: the telemetry service must count them as co-runners.

Run one by hand: ``python -m services.common.corunners cpu --max-s 10``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

CoRunnerKind = Literal["cpu", "mem"]
MESH_ID_ENV = "AUTOSCALE_MESH_ID"
PERIOD_S = 0.02  # duty-cycle period of a CPU co-runner, and how often every co-runner checks its parent
DEFAULT_MAX_S = 3600.0
_PR_SET_PDEATHSIG = 1


def llc_bytes(sys_root: Path = Path("/sys")) -> int | None:
    """Size of the largest CPU cache this host reports (the last level), or None when unknown."""
    best = 0
    for size_file in (sys_root / "devices/system/cpu/cpu0/cache").glob("index*/size"):
        with contextlib.suppress(OSError, ValueError):
            text = size_file.read_text().strip().upper()
            unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            best = max(best, int(text.rstrip("KMG")) * unit)
    return best or None


def default_stream_mb() -> int:
    """Total buffer of a memory co-runner: 4x the last-level cache (so every copy goes to DRAM), >= 64 MiB."""
    llc = llc_bytes() or 32 << 20
    return max(64, 4 * llc >> 20)


@dataclass(frozen=True)
class CoRunnerSpec:
    """One co-runner process: its kind, the CPUs it may run on (None = any), its duty cycle (cpu) or
    total buffer size (mem)."""

    kind: CoRunnerKind
    cpus: tuple[int, ...] | None = None
    duty: float = 1.0
    mb: int | None = None

    def argv(self, max_s: float) -> list[str]:
        args = [sys.executable, "-m", "services.common.corunners", self.kind, "--max-s", f"{max_s:g}"]
        args += ["--parent", str(os.getpid())]
        if self.cpus:
            args += ["--cpus", ",".join(str(c) for c in self.cpus)]
        if self.kind == "cpu":
            args += ["--duty", f"{self.duty:g}"]
        else:
            args += ["--mb", str(self.mb or default_stream_mb())]
        return args


@dataclass(eq=False)
class CoRunners:
    """Co-runner processes started and stopped together (a context manager)."""

    specs: list[CoRunnerSpec]
    max_s: float = DEFAULT_MAX_S
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> CoRunners:
        env = {k: v for k, v in os.environ.items() if k != MESH_ID_ENV}
        _LIVE.add(self)
        try:
            for spec in self.specs:
                self.procs.append(
                    subprocess.Popen(
                        spec.argv(self.max_s),
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        process_group=0,  # its own group: stop() signals the group
                    )
                )
        except BaseException:
            self.stop()
            raise
        return self

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM each group, SIGKILL what is left after ``timeout_s``, reap every child."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            try:
                p.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5.0)
        _LIVE.discard(self)

    def __enter__(self) -> CoRunners:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


_LIVE: set[CoRunners] = set()


@atexit.register
def stop_all() -> None:
    """Stop every co-runner group this process started and has not stopped yet."""
    for group in list(_LIVE):
        group.stop(timeout_s=2.0)


def install_signal_handlers() -> None:
    """Make SIGTERM and SIGHUP unwind like Ctrl-C (``finally`` blocks and ``atexit`` run), so that co-runners
    are stopped; SIGKILL cannot be caught and is covered by the children's parent-death signal."""
    if threading.current_thread() is not threading.main_thread():
        return

    def _raise(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)


# ----------------------------------------------------------------------------- the child side


def _die_with(parent: int) -> None:
    """Ask for SIGKILL when the parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)


def _burn(duty: float, until: float, parent: int) -> None:
    busy = PERIOD_S * min(max(duty, 0.0), 1.0)
    x = 0
    while time.monotonic() < until and os.getppid() == parent:
        t0 = time.monotonic()
        while time.monotonic() - t0 < busy:
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF  # integer work: no memory traffic
        rest = PERIOD_S - (time.monotonic() - t0)
        if rest > 0:
            time.sleep(rest)


def _stream(mb: int, until: float, parent: int) -> None:
    import numpy as np

    half = max(1, mb // 2) << 20
    src = np.ones(half // 8, dtype=np.float64)
    dst = np.empty_like(src)
    while time.monotonic() < until and os.getppid() == parent:
        np.copyto(dst, src)  # read one buffer and write the other: both far larger than the LLC
        src, dst = dst, src


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="one co-runner process (see services/common/corunners.py)")
    p.add_argument("kind", choices=["cpu", "mem"])
    p.add_argument("--max-s", type=float, default=DEFAULT_MAX_S)
    p.add_argument("--parent", type=int, default=0, help="pid of the owner; exit when it is gone")
    p.add_argument("--cpus", default="", help="comma-separated CPUs to run on")
    p.add_argument("--duty", type=float, default=1.0)
    p.add_argument("--mb", type=int, default=0)
    a = p.parse_args(argv)
    parent = a.parent or os.getppid()
    _die_with(parent)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if a.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in a.cpus.split(",")})
    until = time.monotonic() + a.max_s
    if a.kind == "cpu":
        _burn(a.duty, until, parent)
    else:
        _stream(a.mb or default_stream_mb(), until, parent)


if __name__ == "__main__":
    main()
