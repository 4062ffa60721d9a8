"""Shared fixtures: the real mesh (uvicorn processes on free loopback ports + embedded Redis), and a
redis-server with a Redis-backed Q table on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.cli.launcher import Mesh
from services.common.redis_embed import EmbeddedRedis, free_ports
from services.common.settings import Settings
from services.common.tensors import encode
from services.common.zoo import digits
from services.decider.qstore import QStore
from tests.otlp_receiver import OtlpReceiver
from tests.qstore_cases import dev

ROOT = Path(__file__).resolve().parents[1]
# Built models are content-addressed, so a cache shared between runs is safe and saves minutes.
MODEL_CACHE = Path(os.environ.get("AUTOSCALE_TEST_MODEL_CACHE", ROOT / "var" / "test-models"))
MESH_MODELS = ["mobilenet_v1", "mobilenet_v2", "mobilebert"]


def mesh_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test mesh on free loopback ports; ``overrides`` are Settings fields (pydantic checks them)."""
    roles = ("decider", "edge", "peer", "cloud", "telemetry", "supervisor")
    ports = {f"{role}_port": port for role, port in zip(roles, free_ports(len(roles)), strict=True)}
    values: dict[str, Any] = dict(
        host="127.0.0.1",
        data_dir=data_dir,
        models_dir=MODEL_CACHE,
        zoo=MESH_MODELS,
        preload_models=["mobilenet_v1"],
        seed=7,
        redis_url="",
        telemetry_refresh_s=0.2,
        runner_refresh_s=0.5,
        max_upload_bytes=4 * 1024 * 1024,
        # Generous request deadlines: a runner loading a model for its first request on a loaded CI host takes
        # far longer than the product's 10 s floor (the fault-injection tests set their own).
        deadline_min_ms=120_000.0,
        deadline_max_ms=300_000.0,
        **ports,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    # The zoo cache is shared between runs; uploads from an earlier run are not.
    shutil.rmtree(MODEL_CACHE / "user", ignore_errors=True)
    m = Mesh(mesh_settings(tmp_path_factory.mktemp("mesh")))
    m.start(timeout_s=600)
    try:
        yield m
    finally:
        m.stop()


def digit_body(index: int, **extra: object) -> dict[str, object]:
    """A ``/infer`` body holding held-out digit ``index`` (what ``autoscale models sample`` prints)."""
    image, _ = digits.sample(index)
    return {"model": "digits", "input": encode(image).model_dump(), "output_format": "summary", "top_k": 3, **extra}


@dataclass
class ObservedMesh:
    """A mesh serving the trained ``digits`` model with every observability option on: spans
    exported to a real OTLP receiver, the decision log, debug logs (one line per request)."""

    mesh: Mesh
    otlp: OtlpReceiver
    decision_log: Path

    def log_lines(self, role: str) -> list[dict[str, Any]]:
        path = Path(self.mesh.settings.data_dir) / "logs" / f"{role}.log"
        return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


@pytest.fixture(scope="session")
def observed_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedMesh]:
    otlp = OtlpReceiver().start()
    data = tmp_path_factory.mktemp("observed")
    settings = mesh_settings(
        data,
        zoo=["digits"],
        preload_models=["digits"],
        otel_endpoint=otlp.endpoint,
        decision_log=data / "decisions.jsonl",
        log_level="debug",
    )
    # Export spans every 0.1 s instead of 5 s, so that a test sees them soon.
    m = Mesh(settings, env={"OTEL_BSP_SCHEDULE_DELAY": "100"})
    m.start(timeout_s=600)
    try:
        yield ObservedMesh(m, otlp, data / "decisions.jsonl")
    finally:
        m.stop()
        otlp.stop()


# One token per scope for the secured mesh (long enough for a non-loopback bind, never used outside tests).
TOKENS = {
    "client": "client-token-for-tests-0001",
    "admin": "admin-token-for-tests-0001",
    "mesh": "mesh-token-for-tests-0001",
}


def bearer(scope: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[scope]}"}


def secure_mesh_settings(root: Path, **overrides: Any) -> Settings:
    """``mesh_settings`` with a token for every scope (on loopback), runs always in a worker thread and at most
    two in flight per runner. Uploads live under ``root``; the built zoo is shared (it is content-addressed)."""
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    for shared in ("zoo", "variants"):
        (MODEL_CACHE / shared).mkdir(parents=True, exist_ok=True)
        if not (models / shared).exists():
            (models / shared).symlink_to(MODEL_CACHE / shared)
    values: dict[str, Any] = {
        "models_dir": models,
        "client_token": SecretStr(TOKENS["client"]),
        "admin_token": SecretStr(TOKENS["admin"]),
        "mesh_token": SecretStr(TOKENS["mesh"]),
        "runner_max_in_flight": 2,
        "inline_run_max_ms": 0.0,
    }
    return mesh_settings(root, **(values | overrides))


@pytest.fixture(scope="session")
def secure_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = Mesh(secure_mesh_settings(tmp_path_factory.mktemp("secure-mesh")))
    m.start(timeout_s=600)
    try:
        yield m
    finally:
        m.stop()


def wait_until_ready(
    client: httpx.Client,
    path: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    name: str,
    timeout_s: float = 60.0,
    poll_s: float = 0.1,
) -> None:
    """Poll ``path`` until 200; fail with the process's log if it exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if client.get(path).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{name} not ready in {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(poll_s)


@pytest.fixture(scope="module")
def rs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A redis-server of its own for each test module that asks for one."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def store(rs: EmbeddedRedis) -> AsyncIterator[QStore]:
    """A started Redis-backed Q table for a device no other test uses."""
    s = QStore(rs.url, dev(), sync_interval_s=0.2)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()
