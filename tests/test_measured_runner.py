"""A runner serving this host as itself (AUTOSCALE_MEASURE_ON_HOST): what it really executes is measured, the
rest stays modelled and says so; with an energy counter the energy of a measured run is measured too."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.cli.launcher import service_command
from services.core.schemas import RunResult
from tests.conftest import ROOT, mesh_settings, wait_until_ready


@pytest.fixture(scope="module")
def counter_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A RAPL-like counter (µJ) rising by 10 mJ a millisecond (10 W), replaced atomically as sysfs reads are."""
    d = tmp_path_factory.mktemp("powercap")
    path = d / "energy_uj"
    (d / "max_energy_range_uj").write_text("262143328850\n")
    path.write_text("0\n")
    stop = threading.Event()

    def rise() -> None:
        uj = 0
        while not stop.wait(0.001):
            uj += 10_000
            tmp = d / "energy_uj.tmp"
            tmp.write_text(f"{uj}\n")
            os.replace(tmp, path)

    t = threading.Thread(target=rise, daemon=True)
    t.start()
    yield path
    stop.set()
    t.join(timeout=10)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, counter_file: Path) -> Iterator[str]:
    data = tmp_path_factory.mktemp("measured")
    s = mesh_settings(data, measure_on_host=True, energy_counter=counter_file, preload_models=[])
    log = data / "edge.log"
    cmd = service_command("edge", "127.0.0.1", s.edge_port)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=dict(os.environ) | s.child_env(), stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{s.edge_port}"
    try:
        with httpx.Client(base_url=url, timeout=5.0, trust_env=False) as client:
            wait_until_ready(client, "/readyz", proc, log, "edge runner", timeout_s=120)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _run(url: str, target: str) -> RunResult:
    runner, processor, rest = target.split("/")
    precision, _, step = rest.partition("@")
    body = {
        "model": "mobilenet_v1",
        "synthetic": True,
        "target": {"runner": runner, "processor": processor, "precision": precision, "dvfs": int(step)},
    }
    resp = httpx.post(f"{url}/run", json=body, timeout=120.0, trust_env=False)
    assert resp.status_code == 200, resp.text
    return RunResult.model_validate(resp.json())


def test_cpu_target_is_measured_latency_and_energy(edge: str) -> None:
    r = _run(edge, "edge/cpu/fp32@22")
    assert r.latency_source == "measured" and r.energy_source == "measured"
    assert r.inference_s == r.host_exec_s > 0
    assert r.device_energy_j > 0  # the counter rose while the network ran


def test_target_this_host_cannot_execute_stays_modelled(edge: str) -> None:
    # No GPU execution provider here: the host's CPU time says nothing about an Adreno 630.
    r = _run(edge, "edge/gpu/fp32@6")
    assert r.latency_source == "modelled" and r.energy_source == "modelled"
    assert r.inference_s != r.host_exec_s


def test_unreadable_energy_counter_stops_the_runner_naming_it(tmp_path: Path) -> None:
    s = mesh_settings(tmp_path, measure_on_host=True, energy_counter=tmp_path / "missing_uj", preload_models=[])
    cmd = [sys.executable, "-c", "from services.edge_runner.app import create_app; create_app()"]
    done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ) | s.child_env(), capture_output=True, text=True)
    assert done.returncode != 0 and "missing_uj" in done.stderr
