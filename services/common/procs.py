"""Child processes that never outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent(cpus: frozenset[int] = frozenset()) -> None:
    """``preexec_fn`` for ``subprocess.Popen``: the child gets SIGTERM when the thread that started
    it exits, even by SIGKILL of the whole parent, so nothing is left running (Linux; a no-op where
    prctl is missing). Start long-lived children from a thread that lives as long as they should.
    With ``cpus`` (``functools.partial``), the child and every thread it starts run on those CPUs only."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if cpus:
        os.sched_setaffinity(0, cpus)


def pin(pid: int, cpus: set[int]) -> None:
    """Pin a running process, every thread of it, to ``cpus`` (Linux)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)
