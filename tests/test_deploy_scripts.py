"""The device scripts (deploy/termux, deploy/gpu-server), checked without a phone or a GPU: shellcheck,
systemd-analyze, the settings they name, and the Termux start scripts run for real with termux-api's
commands faked (they start the real services on loopback ports)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from services.common.redis_embed import free_port
from tests.deploy_cases import DEPLOY, ROOT, env_file_names, run, tool, unknown_settings
from tests.test_termux import FIXTURES, fake_tool

SHELL_SCRIPTS = sorted(
    [
        *DEPLOY.glob("termux/*.sh"),
        *DEPLOY.glob("termux/sv/*/run"),
        *DEPLOY.glob("gpu-server/*.sh"),
        DEPLOY / "docker-entrypoint.sh",
        *ROOT.glob(".ci/*.sh"),
        ROOT / ".ci" / "run",
    ]
)
UNITS = sorted(DEPLOY.glob("gpu-server/*.service"))
# Bounds of one scripted start (a service imports numpy, ONNX Runtime, FastAPI on a busy 2-core machine).
START_BOUND_S = 120.0


def test_shellcheck_passes_every_script() -> None:
    assert len(SHELL_SCRIPTS) >= 8
    res = run(tool("shellcheck"), "-x", *(str(p.relative_to(ROOT)) for p in SHELL_SCRIPTS))
    assert res.returncode == 0, res.stdout + res.stderr


def test_scripts_are_executable() -> None:
    for path in SHELL_SCRIPTS:
        assert os.access(path, os.X_OK), path


def test_systemd_units_verify(tmp_path: Path) -> None:
    assert [u.name for u in UNITS] == ["autoscale-cloud-runner.service", "autoscale-telemetry.service"]
    for unit in UNITS:
        text = unit.read_text()
        assert "ExecStart=/opt/autoscale-mesh/venv/bin/autoscale " in text
        assert "User=autoscale" in text and "EnvironmentFile=/etc/autoscale/autoscale.env" in text
        # Everything as written but the install path, which does not exist here.
        copy = tmp_path / unit.name
        copy.write_text(text.replace("/opt/autoscale-mesh/venv/bin/autoscale", sys.executable + " -m services.cli"))
        res = run(tool("systemd-analyze"), "verify", str(copy))
        problems = [line for line in (res.stdout + res.stderr).splitlines() if unit.name in line]
        assert res.returncode == 0 and not problems, res.stdout + res.stderr


def test_env_templates_name_real_settings() -> None:
    for path in (DEPLOY / "termux" / "env.example", DEPLOY / "gpu-server" / "autoscale.env.example"):
        names = env_file_names(path)
        assert {"AUTOSCALE_CLIENT_TOKEN", "AUTOSCALE_ADMIN_TOKEN", "AUTOSCALE_MESH_TOKEN", "REDIS_URL"} <= set(names)
        assert unknown_settings(names) == [], path


def test_install_scripts_refuse_the_wrong_host() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFIX"}
    res = run("bash", str(DEPLOY / "termux" / "install.sh"), env=env)
    assert res.returncode == 1 and "this script is for Termux" in res.stderr
    res = run("bash", str(DEPLOY / "termux" / "install.sh"), "--bogus", env=env)
    assert res.returncode == 2 and "unknown argument" in res.stderr
    if os.geteuid() != 0:
        res = run("bash", str(DEPLOY / "gpu-server" / "install.sh"))
        assert res.returncode == 1 and "run as root" in res.stderr


# ----------------------------------------------------------------------------- Termux start scripts, run


@contextmanager
def termux_home(tmp_path: Path, settings: dict[str, str]) -> Iterator[tuple[Path, Path]]:
    """A Termux-like home: ~/.config/autoscale/{env,venv,repo} as install.sh leaves them, a venv whose
    activate puts this interpreter first, and fake termux-api commands on the PATH."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    config = home / ".config" / "autoscale"
    venv = tmp_path / "venv"
    for d in (config, bin_dir, venv / "bin"):
        d.mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'PATH="{Path(sys.executable).parent}:$PATH"\n')
    (config / "venv").write_text(f"{venv}\n")
    (config / "repo").write_text(f"{ROOT}\n")
    (config / "env").write_text("".join(f"{k}='{v}'\n" for k, v in settings.items()))
    fake_tool(bin_dir, "termux-wifi-connectioninfo", FIXTURES / "wifi-connected.json")
    lock = bin_dir / "termux-wake-lock"
    lock.write_text(f"#!/bin/sh\ntouch '{tmp_path}/wake-lock-held'\n")
    lock.chmod(0o755)
    yield home, bin_dir


def _start(script: str, home: Path, bin_dir: Path, port: int, log: Path) -> tuple[bool, dict[str, str]]:
    """Run a start script until its service answers /readyz (then stop it): whether it served, and the
    environment the service process got (the script execs it: same pid)."""
    env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen(["bash", str(DEPLOY / "termux" / script)], env=env, cwd=ROOT, stdout=out, stderr=out)
    served, environ = False, {}
    try:
        deadline = time.monotonic() + START_BOUND_S
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    served = True
                    raw = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
                    environ = dict(e.decode().split("=", 1) for e in raw if b"=" in e)
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    return served, environ


def test_start_telemetry_serves_the_phones_sensors(tmp_path: Path) -> None:
    port = free_port()
    settings = {
        "AUTOSCALE_HOST": "127.0.0.1",
        "AUTOSCALE_TELEMETRY_PORT": str(port),
        "AUTOSCALE_DATA_DIR": str(tmp_path / "data"),
    }
    with termux_home(tmp_path, settings) as (home, bin_dir):
        served, environ = _start("start-telemetry.sh", home, bin_dir, port, tmp_path / "telemetry.log")
    assert served, (tmp_path / "telemetry.log").read_text()[-3000:]
    assert (tmp_path / "wake-lock-held").exists()
    assert environ["AUTOSCALE_TELEMETRY_PORT"] == str(port)  # the env file's settings reach the service


def test_start_runner_advertises_the_phones_wifi_address(tmp_path: Path) -> None:
    port = free_port()
    settings = {
        "RUNNER_ROLE": "edge",
        "AUTOSCALE_HOST": "127.0.0.1",
        "AUTOSCALE_EDGE_PORT": str(port),
        "AUTOSCALE_DATA_DIR": str(tmp_path / "data"),
        "AUTOSCALE_ZOO": '["mobilenet_v1"]',
        "AUTOSCALE_PRELOAD_MODELS": "[]",
        "AUTOSCALE_ADVERTISE_URL": "",
    }
    with termux_home(tmp_path, settings) as (home, bin_dir):
        served, environ = _start("start-runner.sh", home, bin_dir, port, tmp_path / "runner.log")
    assert served, (tmp_path / "runner.log").read_text()[-3000:]
    # wifi-connected.json's "ip": the address the decider reaches this phone at.
    assert environ["AUTOSCALE_ADVERTISE_URL"] == f"http://192.168.49.23:{port}"


@pytest.mark.parametrize(
    ("settings", "fixture", "code", "message"),
    [
        ({"RUNNER_ROLE": "cloud"}, "wifi-connected.json", 2, "RUNNER_ROLE must be edge or peer"),
        ({"RUNNER_ROLE": "edge"}, "wifi-disconnected.json", 1, "no Wi-Fi address"),
    ],
)
def test_start_runner_refuses(tmp_path: Path, settings: dict[str, str], fixture: str, code: int, message: str) -> None:
    with termux_home(tmp_path, settings) as (home, bin_dir):
        fake_tool(bin_dir, "termux-wifi-connectioninfo", FIXTURES / fixture)
        env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin"}
        res = run("bash", str(DEPLOY / "termux" / "start-runner.sh"), env=env)
    assert res.returncode == code and message in res.stderr
