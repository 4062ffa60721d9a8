"""Start the whole mesh on one machine as local processes: Redis, telemetry, three runners, decider.

Used by ``autoscale up`` (and so ``make run``) and by the test suite, so that what the tests start
is what users start. Each runner registers itself in the runner registry (its ``/readyz`` answers
once it has), so the decider, started last, finds them there; with ``AUTOSCALE_RUNNER_REGISTRY``
off it reaches them at their static URLs. Once every service is ready, a ``Supervisor``
(``services.cli.supervisor``) restarts any child that exits, until ``stop``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from services.common.auth import security_problems
from services.common.procs import die_with_parent, pin
from services.common.redis_embed import EmbeddedRedis, port_is_free
from services.common.settings import Settings, redact_url

if TYPE_CHECKING:
    from services.cli.supervisor import Supervisor

# (role, app factory) in start order: telemetry and runners before the decider that uses them.
SERVICES: tuple[tuple[str, str], ...] = (
    ("telemetry", "services.telemetry.app:create_app"),
    ("edge", "services.edge_runner.app:create_app"),
    ("peer", "services.peer_runner.app:create_app"),
    ("cloud", "services.cloud_runner.app:create_app"),
    ("decider", "services.decider.app:create_app"),
)
MESH_ID_ENV = "AUTOSCALE_MESH_ID"
HTTP_PROTOCOL = "services.common.server:HttpToolsOneWrite"  # a response in one socket write
RUNNER_ROLES = ("edge", "peer", "cloud")


def service_command(role: str, host: str, port: int) -> list[str]:
    """The command line of one service process: uvicorn with the mesh's HTTP protocol (event loop:
    uvicorn's ``auto``, uvloop where installed)."""
    return [sys.executable, "-m", "uvicorn", "--factory", dict(SERVICES)[role], "--host", host, "--port", str(port),
            "--no-access-log", "--http", HTTP_PROTOCOL, "--timeout-graceful-shutdown", "5"]  # fmt: skip


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
    if settings.otel_endpoint:
        try:
            import opentelemetry.exporter.otlp.proto.http.trace_exporter
            import opentelemetry.instrumentation.fastapi  # noqa: F401
        except ImportError:
            problems.append(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
                "pip install 'autoscale-mesh[otel]' (or unset it)"
            )
    for prefix, engine in settings.engine_overrides.items():
        try:
            get_engine(engine)
        except Exception as exc:  # EngineError, or an engine whose package is missing
            problems.append(f"AUTOSCALE_ENGINE_OVERRIDES[{prefix!r}]={engine}: {exc}")
    return problems + security_problems(settings)  # a non-loopback bind needs a token for every scope


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
    supervise: bool = True
    supervisor: Supervisor | None = None
    _env: dict[str, str] = field(default_factory=dict, repr=False)
    # Optional, per role ("redis" included): the CPUs it runs on and extra environment (autoscale testbed).
    cpus: dict[str, set[int]] = field(default_factory=dict)
    role_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def url(self, role: str) -> str:
        return self.settings.url(role)

    def _child_env(self) -> dict[str, str]:
        """Every child sees the launcher's settings, whatever their source (env, .env, arguments)."""
        # child_env() reveals the secrets (admin token, Redis password): a dump would mask them.
        return dict(os.environ) | self.env | self.settings.child_env() | {"REDIS_URL": self.redis_url}

    @property
    def logs(self) -> Path:
        return self.log_dir or Path(self.settings.data_dir) / "logs"

    def start(
        self,
        timeout_s: float = 300.0,
        on_event: Callable[[str], None] = lambda _m: None,
        on_supervisor_event: Callable[[str], None] = lambda _m: None,
    ) -> Mesh:
        """Start Redis and every service, wait until each is ready, then supervise them (unless
        ``supervise`` is off). ``on_event``: progress lines; ``on_supervisor_event``: exits and
        restarts afterwards."""
        s = self.settings
        # Telemetry tells the mesh's own processes (Redis included) from co-runners by this id.
        os.environ.setdefault(MESH_ID_ENV, f"mesh-{os.getpid()}")
        self.logs.mkdir(parents=True, exist_ok=True)
        # A busy port means another mesh (or anything else): its services would answer our readiness checks.
        busy = [f"{role} {s.host}:{s.port(role)}" for role, _ in SERVICES if not port_is_free(s.port(role), s.host)]
        if busy:
            raise RuntimeError(
                f"ports already in use (another mesh running?): {', '.join(busy)}; stop it, or set "
                "AUTOSCALE_<ROLE>_PORT (e.g. AUTOSCALE_DECIDER_PORT) to free ports"
            )
        if s.redis_url.get_secret_value():
            self.redis_url = s.redis_url.get_secret_value()
            on_event(f"redis: external {redact_url(self.redis_url)}")
        else:
            self.redis = EmbeddedRedis(Path(s.data_dir) / "redis").start()
            self.redis_url = self.redis.url
            if "redis" in self.cpus and self.redis.proc is not None:
                pin(self.redis.proc.pid, self.cpus["redis"])
            on_event(f"redis: embedded redis-server 6.2 at {self.redis_url} (AOF under {Path(s.data_dir) / 'redis'})")
        self._env = self._child_env()
        try:
            for role, _ in SERVICES:
                if role == "decider":
                    # The decider's first view of the runners should be whole: wait for them first.
                    self._wait_ready(["edge", "peer", "cloud"], timeout_s, on_event)
                self.spawn(role)
                if role == "telemetry":
                    self._wait_ready([role], timeout_s, on_event)
            self._wait_ready(["decider"], timeout_s, on_event)
            if self.supervise:
                from services.cli.supervisor import Supervisor

                self.supervisor = Supervisor.for_mesh(self, on_event=on_supervisor_event).start()
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self, role: str) -> Service:
        """Start (or start again) one service as a child process, logging to ``logs/ROLE.log``."""
        s = self.settings
        log_path = self.logs / f"{role}.log"
        with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                service_command(role, s.host, s.port(role)),
                env=self._env | {"AUTOSCALE_SERVICE": role} | self._runner_env(role) | self.role_env.get(role, {}),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=functools.partial(die_with_parent, frozenset(self.cpus.get(role, ()))),
            )
        svc = self.services[role] = Service(role=role, url=s.url(role), proc=proc, log_path=log_path)
        return svc

    def _runner_env(self, role: str) -> dict[str, str]:
        """A runner's registry identity: an id that survives its restarts (a restarted runner renews its
        own record instead of waiting for it to expire) and its own URL (http://HOST:PORT), whatever
        AUTOSCALE_RUNNER_ID / AUTOSCALE_ADVERTISE_URL the launcher was given."""
        if role not in RUNNER_ROLES:
            return {}
        return {
            "AUTOSCALE_RUNNER_ID": f"{role}-{socket.gethostname()}-{self.settings.port(role)}",
            "AUTOSCALE_ADVERTISE_URL": "",
        }

    def restart(self, name: str) -> None:
        """Start a child that exited again: a service, or ``redis`` (same port and data dir, so the
        AOF brings the Q-table back and every client reconnects where it was)."""
        if name == "redis":
            if self.redis is None:
                raise ValueError("this mesh uses an external Redis")
            self.redis.start()
            if "redis" in self.cpus and self.redis.proc is not None:
                pin(self.redis.proc.pid, self.cpus["redis"])
        else:
            self.spawn(name)

    def exit_code(self, name: str) -> int | None:
        """A child's exit status, None while it runs."""
        if name == "redis":
            proc = self.redis.proc if self.redis else None
            return None if proc is None else proc.poll()
        return self.services[name].proc.poll()

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
        if self.supervisor is not None:  # first, or it would restart what we stop
            self.supervisor.stop()
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
