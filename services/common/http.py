"""The one way services talk HTTP to each other: httpx's API over aiohttp's transport.

httpx's own async transport is slow under concurrency (encode/httpx#3215; measured here at
32 connections: 155 req/s through a FastAPI hop vs 963 req/s with httpx-aiohttp), so every
inter-service client is built here, pooled and keep-alive. The one call every inference makes, the
decider's dispatch to a runner, has a leaner client of its own (``PostClient``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools
import httpx
from httpx_aiohttp import HttpxAiohttpClient


def make_client(
    base_url: str = "",
    *,
    timeout_s: float = 30.0,
    max_connections: int = 256,
    keepalive: int = 64,
    transport: str = "aiohttp",
    token: str = "",
) -> httpx.AsyncClient:
    """A pooled keep-alive client; ``token`` (the mesh token) goes out as ``Authorization: Bearer``."""
    cls = HttpxAiohttpClient if transport == "aiohttp" else httpx.AsyncClient
    return cls(
        base_url=base_url,
        headers={"authorization": f"Bearer {token}"} if token else None,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=keepalive),
        trust_env=False,  # loopback mesh: never route through an environment proxy
    )


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    body: bytes


class _Conn(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its response with httptools (llhttp)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[RawResponse] | None = None
        self.started = False  # a byte of the current response has arrived
        self.closed = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection's is a Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(ConnectionResetError(str(exc) if exc else "the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(exc)
            self.close()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        resp = RawResponse(self._parser.get_status_code(), b"".join(self._body))
        self._body = []
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(resp)

    async def exchange(self, request: bytes) -> RawResponse:
        assert self.transport is not None
        self.started = False
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class PostClient:
    """A pooled keep-alive HTTP/1.1 client that only POSTs bytes: the decider's dispatch to a runner,
    every inference's second hop.

    Measured on the shared 2-core host (``bench/client.md``), CPU per runner call one at a time / 8 at
    once: httpx over aiohttp 473 / 333 µs, aiohttp alone 403 / 135 µs, this 68 / 47 µs. The request is
    one buffer and one socket write; the response is parsed by httptools (llhttp, as uvicorn does). Connection
    failures raise ``httpx.TransportError`` subclasses, so callers handle them as any httpx call's.
    Timeouts are the caller's (an ``asyncio.timeout`` around ``post``); a cancelled exchange closes
    its connection, whose answer would otherwise arrive on the next request."""

    def __init__(self, base_url: str, *, token: str = "", keepalive: int = 64) -> None:
        url = urlsplit(base_url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = url.scheme == "https"
        host = url.netloc.rsplit("@", 1)[-1]
        self._head = f"Host: {host}\r\nContent-Type: application/json\r\n".encode()
        if token:
            self._head += f"Authorization: Bearer {token}\r\n".encode()
        self.keepalive = keepalive
        self._idle: list[_Conn] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> RawResponse:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) if headers else ""
        request = b"POST %s HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n%s" % (
            path.encode(), self._head, extra.encode(), len(body), body
        )  # fmt: skip
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            try:
                return await self._exchange(conn, request)
            except httpx.TransportError:
                if conn.started:
                    raise
                # The server closed this idle connection as we reused it (keep-alive timeout): nothing
                # of the request was answered, so it goes again on another connection.
        return await self._exchange(await self._connect(), request)

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Conn, self.host, self.port, ssl=self.ssl or None)
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return conn

    async def _exchange(self, conn: _Conn, request: bytes) -> RawResponse:
        done = False
        try:
            resp = await conn.exchange(request)
            done = True
        except (OSError, httptools.HttpParserError) as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if not done:
                conn.close()  # failed or cancelled mid-exchange: its state is unknown
        if conn.keep_alive and not conn.closed and len(self._idle) < self.keepalive:
            self._idle.append(conn)
        else:
            conn.close()
        return resp

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()
