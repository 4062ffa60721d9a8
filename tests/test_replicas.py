"""Runner replicas through the running mesh (real processes, loopback only, every wait bounded).

A second cloud runner process registers itself and the decider uses both replicas (strict turns
while nothing is outstanding); killed (SIGKILL) under a request stream it costs no request and the
decider forgets it once its registration expires. Runners that register with an unknown device
profile, a duplicate URL or an invalid record are refused with the reason in their log and in the
decider's, and nothing else changes; a record forged straight into Redis is ignored by the decider;
a runner without Redis runs in static mode. A second decider in static mode (registry off) on the
same Redis serves through the URL settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from services.cli.launcher import Mesh, service_command
from services.common.http import make_client
from services.common.redis_embed import free_port
from services.common.registry import RegistryKeys
from tests.conftest import wait_until_ready

CLOUD = {"model": "mobilenet_v1", "synthetic": True, "policy": "cloud"}


def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if cond():
                return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines() if line.startswith("{")]


def logged(path: Path, msg: str, **fields: object) -> list[dict[str, Any]]:
    return [
        line for line in log_lines(path) if line.get("msg") == msg and all(line.get(k) == v for k, v in fields.items())
    ]


def wait_logged(path: Path, msg: str, timeout_s: float, **fields: object) -> dict[str, Any]:
    """The first line of ``path`` with this message and these fields, once there is one."""
    wait_until(lambda: bool(logged(path, msg, **fields)), f"{msg!r} in {path.name}", timeout_s)
    return logged(path, msg, **fields)[0]


class Child:
    """One service process started by a test, logging to its own file; stopped (killed if need be) at the end."""

    def __init__(self, mesh: Mesh, tmp: Path, name: str, role: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        base = dict(os.environ) | mesh.settings.child_env() | {"REDIS_URL": mesh.redis_url}
        port_var = "AUTOSCALE_CLOUD_PORT" if role == "cloud" else "AUTOSCALE_DECIDER_PORT"
        full = base | {"AUTOSCALE_SERVICE": name, port_var: str(self.port)} | env
        cmd = service_command(role, "127.0.0.1", self.port)  # as the launcher runs them
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                env=full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def ready(self, timeout_s: float = 180.0) -> None:
        with httpx.Client(base_url=self.url, timeout=5, trust_env=False) as c:
            wait_until_ready(c, "/readyz", self.proc, self.log, self.log.stem, timeout_s=timeout_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def children(mesh: Mesh, tmp_path: Path) -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def start(name: str, role: str = "cloud", **env: str) -> Child:
        child = Child(mesh, tmp_path, name, role, env)
        started.append(child)
        return child

    try:
        yield start
    finally:
        for child in started:
            child.stop()


def cloud_replicas(mesh: Mesh) -> dict[str, dict[str, Any]]:
    body = httpx.get(f"{mesh.url('decider')}/targets", timeout=10, trust_env=False).json()
    return {r["id"]: r for r in body["runners"]["cloud"]["replicas"]}


def decider_log(mesh: Mesh) -> Path:
    return Path(mesh.logs) / "decider.log"


async def stream(url: str, n: int, concurrency: int, at: int, action: Callable[[], None]) -> list[int]:
    """``n`` cloud requests from ``concurrency`` workers; ``action`` runs once ``at`` answers are in."""
    statuses: list[int] = []
    todo = iter(range(n))
    async with make_client(url, timeout_s=60.0, max_connections=concurrency) as client:

        async def worker() -> None:
            for _ in todo:
                try:
                    statuses.append((await client.post("/infer", json=CLOUD)).status_code)
                except httpx.HTTPError:
                    statuses.append(0)
                if len(statuses) == at:
                    action()

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 300)
    return statuses


def test_a_second_cloud_runner_shares_the_load_and_a_killed_one_is_forgotten(
    mesh: Mesh, children: Callable[..., Child]
) -> None:
    before = cloud_replicas(mesh)
    assert len(before) == 1 and all(r["registered"] for r in before.values()), before
    second = children("cloud2", AUTOSCALE_REGISTRY_HEARTBEAT_S="0.5", AUTOSCALE_REGISTRY_TTL_S="1.5")
    second.ready()  # a runner's /readyz answers once it is registered
    wait_until(lambda: sum(r["healthy"] for r in cloud_replicas(mesh).values()) == 2, "two healthy cloud replicas")
    added = next(rid for rid in cloud_replicas(mesh) if rid not in before)
    joined = logged(decider_log(mesh), "runner joined", id=added)
    assert joined and joined[0]["url"] == second.url and joined[0]["device"] == "cloud_p100"

    # One request at a time: nothing is outstanding when a replica is picked, so they take turns.
    served = {rid: r["served_total"] for rid, r in cloud_replicas(mesh).items()}
    with httpx.Client(base_url=mesh.url("decider"), timeout=60, trust_env=False) as c:
        for _ in range(20):
            r = c.post("/infer", json=CLOUD)
            assert r.status_code == 200 and r.json()["target"]["runner"] == "cloud", r.text
    after = {rid: r["served_total"] - served[rid] for rid, r in cloud_replicas(mesh).items()}
    assert after == dict.fromkeys(served, 10), after

    # Killed under a stream of requests: in-flight dispatches go on to the other replica.
    statuses = asyncio.run(stream(mesh.url("decider"), 300, 8, 60, lambda: second.proc.send_signal(signal.SIGKILL)))
    assert len(statuses) == 300 and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    wait_until(lambda: added not in cloud_replicas(mesh), "the killed replica forgotten", 60)
    assert cloud_replicas(mesh).keys() == before.keys()
    gone = logged(decider_log(mesh), "runner forgotten", id=added)
    assert gone and gone[0]["reason"] == "expired", gone
    status = httpx.get(f"{mesh.url('decider')}/readyz", timeout=10, trust_env=False).json()
    assert status["replicas"]["cloud"] == {"available": 1, "listed": 1, "ejected": 0}, status


def _targets_view(mesh: Mesh) -> dict[str, list[tuple[str, str]]]:
    body = httpx.get(f"{mesh.url('decider')}/targets", timeout=10, trust_env=False).json()
    return {role: [(r["id"], r["url"]) for r in v["replicas"]] for role, v in body["runners"].items()}


def test_refused_registrations_are_logged_on_both_sides_and_change_nothing(
    mesh: Mesh, children: Callable[..., Child], tmp_path: Path
) -> None:
    keys = RegistryKeys()
    r = redis.Redis.from_url(mesh.redis_url)
    view = _targets_view(mesh)
    records = sorted(r.scan_iter(match=keys.records))
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    own = (Path("services/common/profiles/cloud_p100.yaml")).read_text().replace("name: cloud_p100", "name: cloud_v100")
    (profiles / "cloud_v100.yaml").write_text(own)
    quiet = {"AUTOSCALE_PRELOAD_MODELS": "[]"}
    cases = {
        "profile": children(
            "unknown-profile",
            AUTOSCALE_CLOUD_DEVICE="cloud_v100",
            AUTOSCALE_PROFILES_DIR=str(profiles),
            AUTOSCALE_RUNNER_ID="cloud-unknown-profile",
            **quiet,
        ),
        "duplicate": children(
            "duplicate-url", AUTOSCALE_ADVERTISE_URL=mesh.url("cloud"), AUTOSCALE_RUNNER_ID="cloud-dup", **quiet
        ),
        "invalid": children(
            "invalid-spec", AUTOSCALE_ADVERTISE_URL="ftp://nowhere", AUTOSCALE_RUNNER_ID="cloud-invalid", **quiet
        ),
    }
    static = children("no-redis", REDIS_URL="", **quiet)
    expected = {
        "profile": "unknown device profile 'cloud_v100' for a cloud runner",
        "duplicate": f"duplicate URL: {mesh.url('cloud')} is registered by live runner",
        "invalid": "invalid registration: url: Value error, 'ftp://nowhere' is not an http(s) URL",
    }
    for case, child in cases.items():
        refused = wait_logged(child.log, "registration refused", 180)
        assert refused["reason"].startswith(expected[case]), refused
        assert refused["level"] == ("warning" if case == "duplicate" else "error")
        seen = wait_logged(decider_log(mesh), "runner registration refused", 30, id=refused["id"])
        assert seen["reason"] == refused["reason"] and seen["url"] == refused["url"]
        # Not ready (the deciders cannot find it), saying why.
        ready = httpx.get(f"{child.url}/readyz", timeout=10, trust_env=False)
        assert ready.status_code == 503 and "registration refused" in ready.json()["error"]["message"], ready.text
    static.ready()
    body = httpx.get(f"{static.url}/readyz", timeout=10, trust_env=False).json()
    assert body["registered"] is False
    assert logged(static.log, "static mode: not registering", reason="no REDIS_URL")

    # A record written straight into Redis is validated by the decider too, and ignored.
    forged = {"id": "forged", "role": "cloud", "url": "http://127.0.0.1:1", "device": "cloud_v100"}
    r.set(keys.record("forged"), json.dumps(forged), px=60_000)
    try:
        why = wait_logged(decider_log(mesh), "ignored runner registration", 30, id="forged")["reason"]
        assert why.startswith("invalid registration: targets: Field required"), why
    finally:
        r.delete(keys.record("forged"))
    assert _targets_view(mesh) == view
    assert sorted(r.scan_iter(match=keys.records)) == records
    r.close()


def test_a_decider_in_static_mode_shares_the_redis(mesh: Mesh, children: Callable[..., Child]) -> None:
    urls = {f"AUTOSCALE_{role.upper()}_URL": mesh.url(role) for role in ("edge", "peer", "cloud")}
    second = children("decider2", "decider", AUTOSCALE_RUNNER_REGISTRY="false", **urls)
    second.ready()
    body = httpx.get(f"{second.url}/targets", timeout=10, trust_env=False).json()
    listed = {
        role: [(r["id"], r["url"], r["registered"]) for r in v["replicas"]] for role, v in body["runners"].items()
    }
    assert listed == {role: [(role, mesh.url(role), False)] for role in ("edge", "peer", "cloud")}, listed
    r = httpx.post(f"{second.url}/infer", json=CLOUD, timeout=60, trust_env=False)
    assert r.status_code == 200 and r.json()["target"]["runner"] == "cloud", r.text
    assert logged(second.log, "decider started", registry="off")
