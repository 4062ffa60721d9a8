"""Shared fixtures: the real mesh (uvicorn processes on free loopback ports + embedded Redis), and a
redis-server with a Redis-backed Q table on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli.launcher import Mesh
from services.common.redis_embed import EmbeddedRedis, free_port
from services.common.settings import Settings
from services.decider.qstore import QStore
from tests.qstore_cases import dev

ROOT = Path(__file__).resolve().parents[1]
# Built models are content-addressed, so a cache shared between runs is safe and saves minutes.
MODEL_CACHE = Path(os.environ.get("AUTOSCALE_TEST_MODEL_CACHE", ROOT / "var" / "test-models"))
MESH_MODELS = ["mobilenet_v1", "mobilenet_v2", "mobilebert"]


def mesh_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test mesh on free loopback ports; ``overrides`` are Settings fields (pydantic checks them)."""
    ports = {f"{role}_port": free_port() for role in ("decider", "edge", "peer", "cloud", "telemetry")}
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
