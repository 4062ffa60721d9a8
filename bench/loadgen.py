"""The benchmarks' load generator: keep-alive HTTP/1.1 on asyncio streams, CPU time per process group,
and requests handed straight to an ASGI app in process.

Light on purpose: on a 2-core machine the client shares the CPUs with the servers it measures, so it
spends a few tens of µs of Python per request. Loopback only.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
from starlette.types import ASGIApp, Message

HOST = "127.0.0.1"


def request_bytes(path: str, body: bytes, content_type: str = "application/json", **headers: str) -> bytes:
    """One keep-alive HTTP/1.1 POST, built once and sent as is (what the benchmark measures is the servers)."""
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


@dataclass
class Conn:
    """A keep-alive connection on asyncio streams: a few tens of µs of Python per request, so that
    on a 2-core machine the load generator takes as little as it can from the servers."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(b":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        return int(lines[0].split()[1]), headers, body

    def close(self) -> None:
        self.writer.close()


def decider_ms(headers: dict[bytes, bytes]) -> float | None:
    """The ``decider`` duration of a ``Server-Timing`` header, in ms."""
    for part in headers.get(b"server-timing", b"").split(b","):
        name, _, dur = part.strip().partition(b";dur=")
        if name == b"decider":
            return float(dur)
    return None


@dataclass
class Load:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    decider_ms: list[float] = field(default_factory=list)
    first_error: str = ""

    def summary(self) -> dict[str, float | int | str]:
        lat = sorted(self.latencies) or [float("nan")]
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "req_per_s": self.requests / self.seconds if self.seconds else 0.0,
            "p50_ms": pct(lat, 50) * 1e3,
            "p99_ms": pct(lat, 99) * 1e3,
            "first_error": self.first_error,
        }


@dataclass
class CpuMeter:
    """CPU seconds (user + system) of each process group: robust where wall-clock rates are not, on a
    machine whose other tenants take most of the CPU (the load average is in the report)."""

    groups: dict[str, list[psutil.Process]]

    def read(self) -> dict[str, float]:
        out = {}
        for name, procs in self.groups.items():
            total = 0.0
            for p in procs:
                t = p.cpu_times()
                total += t.user + t.system
            out[name] = total
        return out

    @staticmethod
    def per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
        return {k: (after[k] - before[k]) / max(requests, 1) * 1e6 for k in before}


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q / 100))]


async def load(port: int, request: bytes, concurrency: int, max_requests: int, max_s: float) -> Load:
    """``concurrency`` connections sending ``request`` back to back until ``max_requests`` or ``max_s``."""
    out = Load()
    conns = [await Conn.open(port) for _ in range(concurrency)]
    deadline = time.monotonic() + max_s

    async def worker(conn: Conn) -> None:
        while out.requests + out.errors < max_requests and time.monotonic() < deadline:
            t0 = time.perf_counter()
            status, headers, body = await conn.send(request)
            if status != 200:
                out.errors += 1
                out.first_error = out.first_error or f"{status} {body[:200]!r}"
                continue
            out.requests += 1
            out.latencies.append(time.perf_counter() - t0)
            d = decider_ms(headers)
            if d is not None:
                out.decider_ms.append(d)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    out.seconds = time.perf_counter() - t0
    for c in conns:
        c.close()
    return out


async def asgi_post(asgi: ASGIApp, path: str, body: bytes, app: Any = None) -> int:
    """``POST path`` with ``body`` handed straight to ``asgi`` (no server, no socket), in the scope uvicorn
    builds for a loopback keep-alive request; the answer's status. ``app`` is the scope's ``app``
    (default ``asgi``: set it when ``asgi`` is a middleware chain in front of an app)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", HOST.encode()), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "client": (HOST, 50000), "server": (HOST, 8000), "state": {}, "app": asgi if app is None else app,
    }  # fmt: skip
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> Message:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await asgi(scope, receive, send)
    return status
