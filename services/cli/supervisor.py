"""Supervision of the mesh's children: whatever exits is started again, within limits.

The ``Supervisor`` polls every child of a ``Mesh`` (the runners, telemetry, the decider and the
embedded Redis) a few times a second from one thread. A child found dead is restarted after a
backoff that doubles with each restart in the last ``restart_window_s`` (``RestartPolicy``,
pure); a child that has already been restarted ``restart_limit`` times within the window is left
down and reported. Every exit, restart and give-up is a JSON line in ``logs/supervisor.log`` and
a line for the console, and is counted in ``autoscale_supervisor_restarts_total{service}`` and
``autoscale_supervisor_child_up{service}``, which the supervisor serves at
``http://HOST:AUTOSCALE_SUPERVISOR_PORT/metrics`` (Prometheus job ``supervisor``).

Restarted children are started from the supervisor's thread, so their parent-death signal is tied
to it: the thread lives until ``stop`` (which the mesh calls before stopping its children).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from services.common.logging import JsonFormatter, log_event
from services.common.settings import SupervisorSettings

if TYPE_CHECKING:
    from services.cli.launcher import Mesh

log = logging.getLogger("autoscale.supervisor")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    limit: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0

    @classmethod
    def from_settings(cls, s: SupervisorSettings) -> RestartPolicy:
        return cls(s.restart_limit, s.restart_window_s, s.restart_backoff_s, s.restart_backoff_max_s)

    def delay_s(self, recent_restarts: int) -> float:
        """Wait before the next restart, given the restarts already made within the window."""
        return min(self.backoff_max_s, self.backoff_s * 2.0 ** min(recent_restarts, 32))

    def allows(self, recent_restarts: int) -> bool:
        return recent_restarts < self.limit


@dataclass
class Child:
    """What the supervisor knows of one child."""

    name: str
    restarts: deque[float] = field(default_factory=deque)  # monotonic times, within the window
    restarts_total: int = 0
    restart_at: float | None = None  # scheduled restart
    gave_up: bool = False
    last_exit: int | None = None

    def recent(self, now: float, window_s: float) -> int:
        while self.restarts and now - self.restarts[0] > window_s:
            self.restarts.popleft()
        return len(self.restarts)


class _Metrics:
    def __init__(self, names: list[str]) -> None:
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "autoscale_supervisor_restarts_total",
            "Children of `autoscale up` restarted after they exited",
            ["service"],
            registry=self.registry,
        )
        self.up = Gauge(
            "autoscale_supervisor_child_up",
            "1 while the child runs, 0 while it is down (waiting for its restart, or given up)",
            ["service"],
            registry=self.registry,
        )
        for n in names:  # series at 0 from the start: rates and alerts read 0, not "no data"
            self.restarts.labels(n)
            self.up.labels(n).set(1)


class Supervisor:
    """Restarts the children of ``mesh`` that exit; ``start()`` ... ``stop()``."""

    def __init__(
        self,
        mesh: Mesh,
        policy: RestartPolicy,
        *,
        metrics_port: int = 0,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        on_event: Callable[[str], None] = lambda _m: None,
        poll_s: float = 0.2,
    ) -> None:
        self.mesh = mesh
        self.policy = policy
        self.metrics_port = metrics_port
        self.host = host
        self.on_event = on_event
        self.poll_s = poll_s
        names = (["redis"] if mesh.redis is not None else []) + list(mesh.services)
        self.children = {n: Child(n) for n in names}
        self.metrics = _Metrics(names)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: WSGIServer | None = None
        self._log_handler: logging.Handler | None = None
        if log_path is not None:
            self._log_handler = logging.FileHandler(log_path)
            self._log_handler.setFormatter(JsonFormatter())

    @classmethod
    def for_mesh(cls, mesh: Mesh, on_event: Callable[[str], None] = lambda _m: None) -> Supervisor:
        s = mesh.settings
        return cls(
            mesh,
            RestartPolicy.from_settings(s),
            metrics_port=s.supervisor_port,
            host=s.host,
            log_path=mesh.logs / "supervisor.log",
            on_event=on_event,
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Supervisor:
        if self._log_handler is not None:
            log.addHandler(self._log_handler)
            log.setLevel(logging.INFO)
            log.propagate = False  # the console gets on_event's line instead
        if self.metrics_port:
            try:
                self._server, _ = start_http_server(self.metrics_port, addr=self.host, registry=self.metrics.registry)
            except OSError as exc:  # supervision matters more than its metrics
                self._event(logging.WARNING, "metrics endpoint not served", port=self.metrics_port, error=str(exc))
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def halt(self) -> None:
        """Restart nothing from now on (safe from a signal handler: Ctrl-C in a terminal reaches the
        children too, and their exits must not be answered with restarts)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            log.propagate = True
            self._log_handler.close()
            self._log_handler = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll(time.monotonic())
            except Exception as exc:  # the loop must outlive any one failure: it owns the children
                self._event(logging.ERROR, "supervision step failed", error=f"{type(exc).__name__}: {exc}")

    def gave_up(self, name: str) -> bool:
        child = self.children.get(name)
        return child is not None and child.gave_up

    # ------------------------------------------------------------------ one step
    def poll(self, now: float) -> None:
        """Notice exits, schedule restarts (backoff), make the ones that are due."""
        for child in self.children.values():
            if child.gave_up or self._stop.is_set():
                continue
            if child.restart_at is None:
                code = self.mesh.exit_code(child.name)
                if code is not None:
                    self._exited(child, code, now)
            elif now >= child.restart_at:
                self._restart(child, now)

    def _exited(self, child: Child, code: int, now: float) -> None:
        child.last_exit = code
        self.metrics.up.labels(child.name).set(0)
        recent = child.recent(now, self.policy.window_s)
        if not self.policy.allows(recent):
            child.gave_up = True
            self._event(
                logging.ERROR,
                "child exited too often; left down",
                child=child.name,
                exit_code=code,
                restarts_in_window=recent,
                window_s=self.policy.window_s,
            )
            return
        delay = self.policy.delay_s(recent)
        child.restart_at = now + delay
        self._event(logging.WARNING, "child exited; restarting", child=child.name, exit_code=code, in_s=delay)

    def _restart(self, child: Child, now: float) -> None:
        child.restart_at = None
        child.restarts.append(now)
        child.restarts_total += 1
        self.metrics.restarts.labels(child.name).inc()
        try:
            self.mesh.restart(child.name)
        except Exception as exc:  # e.g. Redis did not answer in time: counts as another exit
            self._event(logging.ERROR, "restart failed", child=child.name, error=f"{type(exc).__name__}: {exc}")
            self._exited(child, -1, time.monotonic())
            return
        self.metrics.up.labels(child.name).set(1)
        self._event(logging.INFO, "child restarted", child=child.name, restarts_total=child.restarts_total)

    def _event(self, level: int, msg: str, **fields: object) -> None:
        log_event(log, msg, level, **fields)
        details = " ".join(f"{k}={v}" for k, v in fields.items())
        self.on_event(f"supervisor: {msg} ({details})")
