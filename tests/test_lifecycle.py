"""`autoscale up` as a user runs it: ready, serves, survives a runner going down and restarts it,
Ctrl-C stops all."""

from __future__ import annotations

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
            json={"model": "mobilenet_v1", "synthetic": True, "target": t["target"], "output_format": "summary"},
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
    # runner_refresh_s: discovery never runs during the test, so only a failed dispatch can find a runner down.
    s = mesh_settings(tmp_path, zoo=["mobilenet_v1"], engine_overrides={"cloud/cpu": "tvm"}, runner_refresh_s=3600)
    # child_env(): the settings as variables, secrets revealed (model_dump would write "**********" tokens).
    env = dict(os.environ) | s.child_env() | {"AUTOSCALE_TELEMETRY_PREFER": "emulated"}  # static S1: same opt twice
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

        # The runner `opt` picks goes down while the decider still lists it as healthy (discovery runs once an
        # hour here). `opt` is deterministic on the static scenario and the unchanged candidates, so it picks
        # the dead runner again: only the dispatch's fallback can serve the request from another runner.
        body = {"model": "mobilenet_v1", "synthetic": True, "policy": "opt"}
        first = httpx.post(f"{url}/infer", json=body, timeout=120, trust_env=False)
        assert first.status_code == 200, first.text
        chosen = first.json()["target"]["runner"]
        victim = next(c for c in children if f"{chosen}_runner.app" in " ".join(c.cmdline()))
        victim.kill()
        victim.wait(10)
        listed = httpx.get(f"{url}/targets", timeout=30, trust_env=False).json()["runners"][chosen]
        assert listed["healthy"], "the decider must not know yet: the fallback is what is tested"
        resp = httpx.post(f"{url}/infer", json=body, timeout=60, trust_env=False)  # bounds a hang
        assert resp.status_code == 200, resp.text
        assert resp.json()["target"]["runner"] != chosen, "the request must fall back to another runner"
        for _ in range(5):
            r = httpx.post(
                f"{url}/infer", json={"model": "mobilenet_v1", "synthetic": True}, timeout=60, trust_env=False
            )
            assert r.status_code == 200, r.text
            assert r.json()["target"]["runner"] != chosen
        # Supervision: `autoscale up` starts the killed runner again (after its backoff).
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{s.url(chosen)}/readyz", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the killed runner was not restarted"
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
