"""Fault injection through a running, supervised mesh (real processes, loopback only).

A runner killed (SIGKILL) or hung (SIGSTOP, then SIGCONT) under 2,000 requests at concurrency 16:
no request fails and every one is answered within its own deadline (measured here, at the
client, against the ``deadline_ms`` the decider served it under). Redis hung and then killed
under load: no Q update is lost (Redis's visit counts against the requests answered). Telemetry
killed: the stale state is flagged in ``/infer``, the metric and ``/readyz``. Every child comes
back by supervision. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli.launcher import Mesh
from services.common.http import make_client
from tests.conftest import mesh_settings

BODY = {"model": "mobilenet_v1", "synthetic": True}
N, CONCURRENCY = 2000, 16


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    settings = mesh_settings(
        tmp_path_factory.mktemp("faults"),
        zoo=["mobilenet_v1"],
        telemetry_refresh_s=0.3,  # stale after 0.9 s
        eject_base_s=3.0,  # short ejections, so that one test's fault does not shape the next
        restart_backoff_s=2.0,  # a dead child stays dead long enough to be seen so
        deadline_min_ms=10_000.0,  # the product's defaults (the test mesh's are generous): what is promised
        deadline_max_ms=30_000.0,
    )
    m = Mesh(settings).start(timeout_s=600)
    try:
        yield m
    finally:
        m.stop()


@dataclass
class Result:
    status: int
    latency_s: float
    deadline_s: float = 0.0
    runner: str = ""
    stale: bool = False
    error: str = ""


Hook = Callable[[list[Result]], Awaitable[None] | None]


async def drive(url: str, n: int, concurrency: int, hooks: dict[int, Hook], timeout_s: float = 240.0) -> list[Result]:
    """``n`` requests from ``concurrency`` workers; ``hooks[k]`` runs when the k-th answer is in, after
    every earlier hook has finished (the other workers go on meanwhile)."""
    results: list[Result] = []
    in_order = asyncio.Lock()
    todo = iter(range(n))
    # The mesh's own client (httpx over aiohttp): httpx's own async transport would make the load
    # generator the bottleneck and add its queueing to every latency measured here.
    async with make_client(url, timeout_s=60.0, max_connections=concurrency, keepalive=concurrency) as client:

        async def worker() -> None:
            for _ in todo:
                t0 = time.monotonic()
                try:
                    resp = await client.post("/infer", json=BODY)
                    res = Result(resp.status_code, time.monotonic() - t0)
                    body = resp.json()
                    if resp.status_code == 200:
                        res.deadline_s = body["deadline_ms"] / 1e3
                        res.runner = body["target"]["runner"]
                        res.stale = body["state"]["stale"]
                    else:
                        res.error = resp.text[:300]
                except httpx.HTTPError as exc:
                    res = Result(0, time.monotonic() - t0, error=repr(exc))
                results.append(res)
                hook = hooks.pop(len(results), None)
                if hook is not None:
                    async with in_order:  # a later hook waits for an earlier one still awaiting
                        out = hook(results)
                        if out is not None:
                            await out

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout_s)
    return results


def assert_all_served_within_deadline(results: list[Result], n: int) -> None:
    failed = [r for r in results if r.status != 200]
    assert len(results) == n and not failed, f"{len(failed)} failed, e.g. {failed[:3]}"
    late = [r for r in results if r.latency_s > r.deadline_s]
    assert not late, f"{len(late)} answered after their deadline, e.g. {late[:3]}"


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one series on a /metrics page (0 when absent), whatever the label order."""
    text = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
    for line in text.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}(?:{{(.*)}})? (\S+)", line)
        if m and dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or "")) == labels:
            return float(m.group(2))
    return 0.0


def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if cond():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz", timeout=5, trust_env=False).status_code == 200


def decider_status(mesh: Mesh) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{mesh.url('decider')}/readyz", timeout=10, trust_env=False).json()
    return body


def wait_whole(mesh: Mesh) -> None:
    """Every service ready and the decider not degraded (no runner ejected or down, fresh telemetry)."""
    for role in mesh.services:
        wait_until(lambda role=role: ready(mesh.url(role)), f"{role} ready")  # type: ignore[misc]
    wait_until(lambda: decider_status(mesh).get("status") == "ready", "the decider fully ready")


def supervisor_restarts(mesh: Mesh, service: str) -> float:
    url = f"http://127.0.0.1:{mesh.settings.supervisor_port}"
    return metric(url, "autoscale_supervisor_restarts_total", service=service)


def busiest(results: list[Result]) -> str:
    return Counter(r.runner for r in results if r.runner).most_common(1)[0][0]


# --------------------------------------------------------------------------- runners


def test_a_hung_runner_costs_no_request_and_no_deadline(mesh: Mesh) -> None:
    wait_whole(mesh)
    d = mesh.url("decider")
    stopped: list[str] = []

    def stop(results: list[Result]) -> None:
        stopped.append(busiest(results))
        os.kill(mesh.services[stopped[0]].proc.pid, signal.SIGSTOP)

    def resume(_: list[Result]) -> None:
        os.kill(mesh.services[stopped[0]].proc.pid, signal.SIGCONT)

    try:
        results = asyncio.run(drive(d, N, CONCURRENCY, {300: stop, 1100: resume}))
    finally:
        if stopped:
            os.kill(mesh.services[stopped[0]].proc.pid, signal.SIGCONT)
    assert_all_served_within_deadline(results, N)
    role = stopped[0]
    # The fault hit traffic: dispatches timed out, the runner was ejected, requests fell back.
    assert metric(d, "autoscale_decider_dispatch_failures_total", runner=role, reason="timeout") > 0
    assert metric(d, "autoscale_decider_runner_ejections_total", runner=role) >= 1
    assert {r.runner for r in results[400:1100]} <= {"edge", "peer", "cloud"} - {role}
    wait_until(lambda: role not in decider_status(mesh)["ejected"], f"{role} readmitted")


def test_a_killed_runner_costs_no_request_and_comes_back(mesh: Mesh) -> None:
    wait_whole(mesh)
    d = mesh.url("decider")
    killed: list[str] = []

    def kill(results: list[Result]) -> None:
        killed.append(busiest(results))
        os.kill(mesh.services[killed[0]].proc.pid, signal.SIGKILL)

    before = supervisor_restarts(mesh, "edge") + supervisor_restarts(mesh, "peer") + supervisor_restarts(mesh, "cloud")
    results = asyncio.run(drive(d, N, CONCURRENCY, {300: kill}))
    assert_all_served_within_deadline(results, N)
    role = killed[0]
    assert metric(d, "autoscale_decider_dispatch_failures_total", runner=role, reason="connection") > 0
    # Supervision brought it back; the decider offers its targets again.
    wait_until(lambda: ready(mesh.url(role)), f"{role} back")
    after = supervisor_restarts(mesh, "edge") + supervisor_restarts(mesh, "peer") + supervisor_restarts(mesh, "cloud")
    assert after == before + 1 and supervisor_restarts(mesh, role) >= 1
    wait_until(lambda: role in decider_status(mesh)["runners"], f"{role} offered again")


# --------------------------------------------------------------------------- Redis


def _stats(mesh: Mesh) -> dict[str, int]:
    body: dict[str, int] = httpx.get(f"{mesh.url('decider')}/qtable/stats", timeout=30, trust_env=False).json()
    return body


def _flushed(mesh: Mesh) -> dict[str, int]:
    holder: list[dict[str, int]] = []

    def done() -> bool:
        holder[:] = [_stats(mesh)]
        return holder[0]["queue_depth"] == 0

    wait_until(done, "every held Q update delivered")
    return holder[0]


def test_redis_hung_then_killed_loses_no_learning(mesh: Mesh) -> None:
    wait_whole(mesh)
    assert mesh.redis is not None and mesh.redis.proc is not None
    before = _flushed(mesh)
    redis_pid = mesh.redis.proc.pid
    seen: dict[str, dict[str, Any]] = {}

    def hang(_: list[Result]) -> None:
        os.kill(redis_pid, signal.SIGSTOP)

    async def check_then_resume(_: list[Result]) -> None:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as c:
            seen["readyz"] = (await c.get(f"{mesh.url('decider')}/readyz")).json()
        os.kill(redis_pid, signal.SIGCONT)  # only now: the check must see Redis hung

    def kill(_: list[Result]) -> None:
        assert mesh.redis is not None and mesh.redis.proc is not None
        mesh.redis.proc.kill()  # AOF everysec: its last second may be gone after the restart

    try:
        results = asyncio.run(drive(mesh.url("decider"), 800, 8, {100: hang, 250: check_then_resume, 450: kill}))
    finally:
        with contextlib.suppress(ProcessLookupError):  # never leave it stopped
            os.kill(redis_pid, signal.SIGCONT)
    assert all(r.status == 200 for r in results), [r.error for r in results if r.status != 200][:3]
    status = seen["readyz"]
    assert status["status"] == "degraded" and "redis unreachable" in " ".join(status["issues"]), status
    assert status["qtable"]["learning"] is False
    wait_until(
        lambda: supervisor_restarts(mesh, "redis") >= 1 and decider_status(mesh)["qtable"]["redis_up"], "redis back"
    )
    after = _flushed(mesh)
    learned = sum(1 for r in results if not r.stale)
    # one write-counter step per update Redis holds (visit counts saturate at VISITS_MAX)
    assert after["version"] - before["version"] == learned, (before, after, learned)
    assert after["dropped_total"] == before["dropped_total"] and after["lost_total"] == 0


# --------------------------------------------------------------------------- telemetry and the rest


def test_killed_telemetry_is_flagged_stale_and_comes_back(mesh: Mesh) -> None:
    wait_whole(mesh)
    d = mesh.url("decider")
    skipped = metric(d, "autoscale_decider_learning_skipped_total", reason="stale_telemetry")
    os.kill(mesh.services["telemetry"].proc.pid, signal.SIGKILL)
    with httpx.Client(base_url=d, timeout=30, trust_env=False) as c:
        body: dict[str, Any] = {}

        def stale() -> bool:
            body.update(c.post("/infer", json=BODY).json())
            return body["state"]["stale"] is True

        wait_until(stale, "a stale state in /infer", 20)
        # Within the restart backoff: the metric and /readyz say so too.
        assert metric(d, "autoscale_decider_telemetry_stale") == 1.0
        status = c.get("/readyz")
        assert status.status_code == 200 and status.json()["status"] == "degraded"
        assert status.json()["telemetry"]["stale"] is True and any(
            "telemetry stale" in i for i in status.json()["issues"]
        )
        assert body["state"]["age_s"] > 0.9 and body["state"]["ages_s"]["co_cpu"] >= body["state"]["age_s"]
        wait_until(
            lambda: metric(d, "autoscale_decider_learning_skipped_total", reason="stale_telemetry") > skipped,
            "the stale state's update skipped",
            10,
        )
        wait_until(lambda: ready(mesh.url("telemetry")), "telemetry back")
        wait_until(lambda: c.post("/infer", json=BODY).json()["state"]["stale"] is False, "fresh telemetry again")
    assert supervisor_restarts(mesh, "telemetry") >= 1
    assert metric(d, "autoscale_decider_telemetry_stale") == 0.0


@pytest.mark.parametrize("role", ["peer", "cloud", "decider"])
def test_every_child_is_restarted_by_supervision(mesh: Mesh, role: str) -> None:
    wait_whole(mesh)
    pid = mesh.services[role].proc.pid
    before = supervisor_restarts(mesh, role)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: mesh.services[role].proc.pid != pid and ready(mesh.url(role)), f"{role} restarted and ready")
    assert supervisor_restarts(mesh, role) == before + 1
    r = httpx.post(f"{mesh.url('decider')}/infer", json=BODY, timeout=60, trust_env=False)
    assert r.status_code == 200, r.text
    log = (Path(mesh.logs) / "supervisor.log").read_text()
    assert f'"child": "{role}"' in log and "child restarted" in log
