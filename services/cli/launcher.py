"""Start the whole mesh on one machine as local processes: Redis, telemetry, three runners, decider.

Used by ``autoscale up`` (and so ``make run``) and by the test suite, so that what the tests start
is what users start.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.common.redis_embed import EmbeddedRedis
from services.common.settings import Settings, redact_url

# (role, app factory) in start order: telemetry and runners before the decider that uses them.
SERVICES: tuple[tuple[str, str], ...] = (
    ("telemetry", "services.telemetry.app:create_app"),
    ("edge", "services.edge_runner.app:create_app"),
    ("peer", "services.peer_runner.app:create_app"),
    ("cloud", "services.cloud_runner.app:create_app"),
    ("decider", "services.decider.app:create_app"),
)
MESH_ID_ENV = "AUTOSCALE_MESH_ID"


def _die_with_parent(cpus: frozenset[int] | None = None) -> None:
    """Children get SIGTERM if the launcher dies, even by SIGKILL: nothing is left running. With ``cpus``,
    the child (and every thread it starts) runs on those CPUs only."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if cpus:
        os.sched_setaffinity(0, cpus)


def pin(pid: int, cpus: set[int]) -> None:
    """Pin a running process, every thread of it, to ``cpus`` (Linux)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)


def check_config(settings: Settings) -> list[str]:
    """Problems that would stop a service at start, found before any process is started."""
    from services.common.config_files import load_profile, load_scenario
    from services.common.engines import get_engine
    from services.core.errors import ConfigFileError

    problems: list[str] = []
    for var, name in (
        ("EDGE_DEVICE", settings.edge_device),
        ("PEER_DEVICE", settings.peer_device),
        ("CLOUD_DEVICE", settings.cloud_device),
    ):
        try:
            load_profile(name, settings.profiles_dir)
        except ConfigFileError as exc:
            problems.append(f"AUTOSCALE_{var}={name}: {exc}")
    try:
        load_scenario(settings.scenario_file or settings.scenario)
    except ConfigFileError as exc:
        problems.append(f"AUTOSCALE_SCENARIO: {exc}")
    for prefix, engine in settings.engine_overrides.items():
        try:
            get_engine(engine)
        except Exception as exc:  # EngineError, or an engine whose package is missing
            problems.append(f"AUTOSCALE_ENGINE_OVERRIDES[{prefix!r}]={engine}: {exc}")
    return problems


@dataclass
class Service:
    role: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Mesh:
    settings: Settings
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    redis: EmbeddedRedis | None = None
    redis_url: str = ""
    services: dict[str, Service] = field(default_factory=dict)
    # Optional, per role ("redis" included): the CPUs it runs on and extra environment (autoscale testbed).
    cpus: dict[str, set[int]] = field(default_factory=dict)
    role_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def url(self, role: str) -> str:
        return self.settings.url(role)

    def _child_env(self) -> dict[str, str]:
        """Every child sees the launcher's settings, whatever their source (env, .env, arguments)."""
        # child_env() reveals the secrets (admin token, Redis password): a dump would mask them.
        return dict(os.environ) | self.env | self.settings.child_env() | {"REDIS_URL": self.redis_url}

    def start(self, timeout_s: float = 300.0, on_event: Callable[[str], None] = lambda _m: None) -> Mesh:
        s = self.settings
        # Telemetry tells the mesh's own processes (Redis included) from co-runners by this id.
        os.environ.setdefault(MESH_ID_ENV, f"mesh-{os.getpid()}")
        log_dir = self.log_dir or Path(s.data_dir) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        if s.redis_url.get_secret_value():
            self.redis_url = s.redis_url.get_secret_value()
            on_event(f"redis: external {redact_url(self.redis_url)}")
        else:
            self.redis = EmbeddedRedis(Path(s.data_dir) / "redis").start()
            self.redis_url = self.redis.url
            if "redis" in self.cpus and self.redis.proc is not None:
                pin(self.redis.proc.pid, self.cpus["redis"])
            on_event(f"redis: embedded redis-server 6.2 at {self.redis_url} (AOF under {Path(s.data_dir) / 'redis'})")
        env = self._child_env()
        try:
            for role, factory in SERVICES:
                if role == "decider":
                    # The decider's first view of the runners should be whole: wait for them first.
                    self._wait_ready(["edge", "peer", "cloud"], timeout_s, on_event)
                port = s.port(role)
                log_path = log_dir / f"{role}.log"
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "--factory",
                        factory,
                        "--host",
                        s.host,
                        "--port",
                        str(port),
                        "--no-access-log",
                        "--timeout-graceful-shutdown",
                        "5",
                    ],
                    env=env | {"AUTOSCALE_SERVICE": role} | self.role_env.get(role, {}),
                    stdin=subprocess.DEVNULL,
                    stdout=log_path.open("ab"),
                    stderr=subprocess.STDOUT,
                    preexec_fn=functools.partial(_die_with_parent, frozenset(self.cpus.get(role, ()))),
                )
                self.services[role] = Service(role=role, url=s.url(role), proc=proc, log_path=log_path)
                if role == "telemetry":
                    self._wait_ready([role], timeout_s, on_event)
            self._wait_ready(["decider"], timeout_s, on_event)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, roles: list[str], timeout_s: float, on_event: Callable[[str], None]) -> None:
        deadline = time.monotonic() + timeout_s
        pending = [r for r in roles if r in self.services]
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while pending:
                for role in list(pending):
                    svc = self.services[role]
                    if svc.proc.poll() is not None:
                        tail = svc.log_path.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"{role} exited with code {svc.proc.returncode}; last log lines:\n{tail}")
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{svc.url}/readyz").status_code == 200:
                            pending.remove(role)
                            on_event(f"{role}: ready at {svc.url}")
                if pending and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"not ready within {timeout_s:.0f} s: {', '.join(pending)} (logs in {svc.log_path.parent})"
                    )
                if pending:
                    time.sleep(0.2)

    def stop(self, timeout_s: float = 10.0) -> None:
        for svc in reversed(list(self.services.values())):
            if svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for svc in self.services.values():
            try:
                svc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                svc.proc.kill()
                svc.proc.wait(timeout=5)
        if self.redis:
            self.redis.stop()

    def pids(self) -> list[int]:
        pids = [svc.proc.pid for svc in self.services.values()]
        if self.redis and self.redis.proc:
            pids.append(self.redis.proc.pid)
        return pids
