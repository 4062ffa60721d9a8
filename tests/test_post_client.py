"""``PostClient``, the decider's dispatch client, against real loopback servers: keep-alive reuse, a
connection the server closed while idle, chunked answers, refused connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from services.common.http import PostClient

Answer = Callable[[bytes], bytes]


def _fixed(body: bytes, *, close: bool = False) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + (b"Connection: close\r\n" if close else b"") + b"\r\n" + body


class Server:
    """A loopback HTTP/1.1 server: reads one request head and body at a time, answers with ``answer``,
    and closes the connection after ``per_conn`` requests. Counts connections and requests."""

    def __init__(self, answer: Answer, per_conn: int = 1_000, slow: bytes = b"") -> None:
        self.answer, self.per_conn, self.slow = answer, per_conn, slow
        self.connections = self.requests = 0
        self.seen: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for _ in range(self.per_conn):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n"))
                              if k.lower() == b"content-length")  # fmt: skip
                body = await reader.readexactly(length)
                self.requests += 1
                self.seen.append(head)
                if body == self.slow:
                    await asyncio.sleep(0.3)
                writer.write(self.answer(body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Server], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(server: Server) -> str:
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()


async def test_keep_alive_reuses_one_connection_and_sends_headers(serve: Callable[[Server], Awaitable[str]]) -> None:
    server = Server(lambda body: _fixed(b'{"echo": %d}' % len(body)))
    client = PostClient(await serve(server), token="t0k")
    for i in range(5):
        resp = await client.post("/run", b"x" * i, {"x-request-id": f"r{i}"})
        assert (resp.status, resp.body) == (200, b'{"echo": %d}' % i)
    assert server.connections == 1 and server.requests == 5
    head = server.seen[-1].lower()
    assert head.startswith(b"post /run http/1.1\r\n")
    assert b"authorization: bearer t0k\r\n" in head and b"x-request-id: r4\r\n" in head
    await client.aclose()


async def test_an_idle_connection_the_server_closed_is_replaced(serve: Callable[[Server], Awaitable[str]]) -> None:
    server = Server(lambda body: _fixed(b"{}"), per_conn=1)  # closes after each answer, as a keep-alive timeout would
    client = PostClient(await serve(server))
    for _ in range(3):
        await asyncio.sleep(0.05)  # the close reaches the idle connection, or not: either way the post succeeds
        assert (await client.post("/run", b"{}")).status == 200
    assert server.requests == 3 and server.connections == 3
    await client.aclose()


async def test_connection_close_and_chunked_answers(serve: Callable[[Server], Awaitable[str]]) -> None:
    chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    server = Server(lambda body: chunked if body == b"c" else _fixed(b"bye", close=True))
    client = PostClient(await serve(server))
    assert (await client.post("/run", b"c")).body == b"abcde"
    resp = await client.post("/run", b"x")
    assert (resp.status, resp.body) == (200, b"bye")
    assert (await client.post("/run", b"c")).status == 503  # a new connection: the last one was closed
    assert server.connections == 2
    await client.aclose()


async def test_a_refused_connection_is_an_httpx_connect_error() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(httpx.ConnectError):
        await PostClient(f"http://127.0.0.1:{port}").post("/run", b"{}")


async def test_a_cancelled_exchange_drops_its_connection(serve: Callable[[Server], Awaitable[str]]) -> None:
    server = Server(_fixed, slow=b"late")
    client = PostClient(await serve(server))
    assert (await client.post("/run", b"first")).body == b"first"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await client.post("/run", b"late")  # on the kept-alive connection; answered after 0.3 s
    await asyncio.sleep(0.3)
    # The late answer went to a closed connection: the next post gets its own answer on a new one.
    assert (await client.post("/run", b"next")).body == b"next"
    assert server.connections == 2
    await client.aclose()
