"""Co-runners really load the machine and never outlive their owner (stop, exit, SIGKILL of the owner)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

import psutil
import pytest

from services.common.corunners import MESH_ID_ENV, CoRunners, CoRunnerSpec, llc_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT_S = 60.0  # generous bound on a hang; nothing here asserts how fast anything happens


def _wait_for(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting {timeout_s:.0f} s for: {what}")
        time.sleep(0.1)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _all_gone(pids: list[int]) -> bool:
    return all(_gone(p) for p in pids)


def _affinity_is(pid: int, cpus: list[int]) -> bool:
    return psutil.Process(pid).cpu_affinity() == cpus


def _used_cpu(pid: int, seconds: float) -> bool:
    return _cpu_seconds(pid) > seconds


def _cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def test_corunners_load_the_machine_in_their_own_groups_and_stop() -> None:
    cpus = (sorted(os.sched_getaffinity(0))[0],)
    group = CoRunners([CoRunnerSpec("cpu", cpus=cpus), CoRunnerSpec("mem", cpus=cpus, mb=64)], max_s=120)
    with group:
        pids = group.pids()
        assert len(pids) == 2 and group.alive() == pids
        for pid in pids:
            assert os.getpgid(pid) == pid != os.getpgrp()  # each leads its own process group
            # The children drop the mesh id: telemetry must count them as co-runners.
            _wait_for(partial(_affinity_is, pid, list(cpus)), "affinity set")
            assert MESH_ID_ENV not in psutil.Process(pid).environ()
            _wait_for(partial(_used_cpu, pid, 0.3), f"co-runner {pid} using CPU")
        mem_rss = psutil.Process(pids[1]).memory_info().rss
        assert mem_rss > 60 << 20  # the streamer's two 32 MiB buffers are resident
    assert group.alive() == []
    assert all(_gone(pid) for pid in pids)


def test_corunner_ends_itself_after_max_s() -> None:
    group = CoRunners([CoRunnerSpec("cpu", duty=0.1)], max_s=1.0).start()
    try:
        _wait_for(lambda: group.alive() == [], "co-runner exiting after max_s")
    finally:
        group.stop()


def test_corunners_die_with_their_owner_even_on_sigkill() -> None:
    """The owner is killed by SIGKILL (no cleanup can run): the parent-death signal takes the children."""
    owner_code = (
        "import json, sys, time\n"
        "from services.common.corunners import CoRunners, CoRunnerSpec\n"
        "g = CoRunners([CoRunnerSpec('cpu', duty=0.2), CoRunnerSpec('mem', mb=64)], max_s=300).start()\n"
        "print(json.dumps(g.pids()), flush=True)\n"
        "time.sleep(300)\n"
    )
    env = dict(os.environ) | {MESH_ID_ENV: "test-owner"}
    owner = subprocess.Popen([sys.executable, "-c", owner_code], cwd=ROOT, env=env, stdout=subprocess.PIPE)
    try:
        assert owner.stdout is not None
        pids = json.loads(owner.stdout.readline())
        assert len(pids) == 2
        _wait_for(lambda: all(_cpu_seconds(p) > 0.05 for p in pids), "co-runners running")
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=WAIT_S)
        _wait_for(lambda: all(_gone(p) for p in pids), "co-runners gone after the owner's SIGKILL")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_corunners_stopped_at_exit_and_on_sigterm() -> None:
    """An owner that exits normally (atexit) or on SIGTERM (install_signal_handlers) stops its co-runners."""
    owner_code = (
        "import json, sys, time\n"
        "from services.common.corunners import CoRunners, CoRunnerSpec, install_signal_handlers\n"
        "install_signal_handlers()\n"
        "g = CoRunners([CoRunnerSpec('cpu', duty=0.2)], max_s=300).start()\n"
        "print(json.dumps(g.pids()), flush=True)\n"
        "if sys.argv[1] == 'wait':\n"
        "    time.sleep(300)\n"
    )
    for mode in ("exit", "wait"):
        owner = subprocess.Popen([sys.executable, "-c", owner_code, mode], cwd=ROOT, stdout=subprocess.PIPE)
        try:
            assert owner.stdout is not None
            pids = json.loads(owner.stdout.readline())
            if mode == "wait":
                owner.send_signal(signal.SIGTERM)
            owner.wait(timeout=WAIT_S)
            _wait_for(partial(_all_gone, pids), f"co-runners gone ({mode})")
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.wait()


def test_llc_size_is_read_from_sysfs(tmp_path: os.PathLike[str]) -> None:
    from pathlib import Path

    root = Path(tmp_path)
    for idx, size in (("index0", "32K"), ("index2", "1024K"), ("index3", "32768K")):
        d = root / "devices/system/cpu/cpu0/cache" / idx
        d.mkdir(parents=True)
        (d / "size").write_text(size + "\n")
    assert llc_bytes(root) == 32 << 20
    assert llc_bytes(root / "nowhere") is None
