"""Child processes that never outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: the child gets SIGTERM when the thread that started
    it exits, even by SIGKILL of the whole parent, so nothing is left running (Linux; a no-op where
    prctl is missing). Start long-lived children from a thread that lives as long as they should."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
