"""`autoscale up` as a user runs it: ready, serves, survives a runner going down and restarts it,
Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import ROOT, mesh_settings


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"autoscale up exited early with {proc.returncode}"
        try:
            if httpx.get(f"{url}/readyz", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"decider not ready within {timeout_s} s")


def _assert_cloud_engines_agree(cloud_url: str) -> None:
    """The cloud runner offers its CPU on TVM and its GPU on ONNX Runtime: both answer, with the same top-1."""
    offered = httpx.get(f"{cloud_url}/targets", trust_env=False).json()
    tvm = next(t for t in offered if t["target"]["engine"] == "tvm")
    assert tvm["id"] == "cloud/cpu/fp32" and "mobilenet_v1" in tvm["models"]
    gpu = next(t for t in offered if t["target"]["engine"] == "onnxruntime")
    runs = [
        httpx.post(
            f"{cloud_url}/run",
            json={"model": "mobilenet_v1", "synthetic": True, "target": t["target"]},
            timeout=300,
            trust_env=False,
        )
        for t in (tvm, gpu)
    ]
    assert all(r.status_code == 200 for r in runs), [r.text for r in runs]
    by_tvm, by_ort = (r.json()["outputs"][0] for r in runs)
    assert by_tvm["top_k"][0][0] == by_ort["top_k"][0][0]
    assert abs(by_tvm["checksum"] - by_ort["checksum"]) <= 1e-3 * max(1.0, abs(by_ort["checksum"]))


def test_up_serves_survives_runner_loss_and_stops_clean(tmp_path: Path) -> None:
    # The cloud CPU target runs on TVM here: the pluggable engine, end to end through a runner.
    s = mesh_settings(tmp_path, zoo=["mobilenet_v1"], engine_overrides={"cloud/cpu": "tvm"})
    env = dict(os.environ)
    for name, value in s.model_dump(mode="json").items():
        if value is not None and name != "redis_url":
            env[f"AUTOSCALE_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env.pop("REDIS_URL", None)
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = s.url("decider")
    try:
        _wait_ready(url, proc, 600)
        children = _descendants(proc.pid)
        roles = " ".join(" ".join(c.cmdline()) for c in children)
        for factory in (
            "telemetry.app",
            "edge_runner.app",
            "peer_runner.app",
            "cloud_runner.app",
            "decider.app",
            "redis-server",
        ):
            assert factory in roles, f"{factory} not among the started processes"
        ok = httpx.post(f"{url}/infer", json={"model": "mobilenet_v1", "synthetic": True}, timeout=120, trust_env=False)
        assert ok.status_code == 200, ok.text

        _assert_cloud_engines_agree(s.url("cloud"))

        # The cloud runner goes down: `cloud` requests get a 503 naming it, others still serve.
        cloud = next(c for c in children if "cloud_runner.app" in " ".join(c.cmdline()))
        cloud.kill()
        cloud.wait(10)
        t0 = time.monotonic()
        resp = httpx.post(
            f"{url}/infer",
            json={"model": "mobilenet_v1", "synthetic": True, "policy": "cloud"},
            timeout=60,
            trust_env=False,
        )
        assert time.monotonic() - t0 < 30, "a request to a dead runner must not hang"
        if resp.status_code == 200:
            assert resp.json()["target"]["runner"] != "cloud"
        else:
            assert resp.status_code == 503, resp.text
            assert "cloud" in resp.json()["error"]["message"]
        for _ in range(5):
            r = httpx.post(
                f"{url}/infer", json={"model": "mobilenet_v1", "synthetic": True}, timeout=60, trust_env=False
            )
            assert r.status_code == 200, r.text
            assert r.json()["target"]["runner"] != "cloud"
        # Supervision: `autoscale up` starts the cloud runner again (after its backoff).
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{s.url('cloud')}/readyz", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the killed cloud runner was not restarted"
            time.sleep(0.3)
        assert "child restarted" in (tmp_path / "logs" / "supervisor.log").read_text()
    finally:
        children = _descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        finally:
            log.close()
    out = (tmp_path / "up.log").read_text(errors="replace")
    assert url in out and "curl" in out, out[-2000:]
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"left running after Ctrl-C: {[p.pid for p in alive]}"


def test_external_redis_url_is_used_and_left_running(tmp_path: Path) -> None:
    """REDIS_URL points the whole mesh at a Redis it does not own (here a separate real server)."""
    import redis

    from services.cli.launcher import Mesh
    from services.common.redis_embed import EmbeddedRedis

    with EmbeddedRedis(tmp_path / "external-redis") as external:
        mesh = Mesh(mesh_settings(tmp_path / "mesh", zoo=["mobilenet_v1"], redis_url=external.url)).start(timeout_s=600)
        try:
            assert mesh.redis is None and mesh.redis_url == external.url
            r = httpx.post(
                f"{mesh.url('decider')}/infer",
                json={"model": "mobilenet_v1", "synthetic": True},
                timeout=120,
                trust_env=False,
            )
            assert r.status_code == 200, r.text
            client = redis.Redis.from_url(external.url)
            deadline = time.monotonic() + 10
            while not list(client.scan_iter(match="autoscale:*")) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert list(client.scan_iter(match="autoscale:*")), "the Q-table must live in the external Redis"
        finally:
            mesh.stop()
        assert external.proc is not None and external.proc.poll() is None, (
            "the mesh must not stop a Redis it does not own"
        )
        assert redis.Redis.from_url(external.url).ping()
