"""The services' HTTP protocol (``services.common.server``) under a real uvicorn on loopback: a fast
route skips the framework but keeps the app's own middleware (request ids, body limit) and its 500
handler; keep-alive, pipelining, ``Connection: close`` and chunked bodies behave as on uvicorn's path;
every other route takes uvicorn's path."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import pytest
import uvicorn
from fastapi import FastAPI

from services.common.asgi import FastPath, FastRequest, FastRoute, Reply
from services.common.errors import install_error_handlers
from services.common.limits import BodyLimit, RouteLimit
from services.common.server import HttpToolsOneWrite
from services.common.settings import Settings
from services.common.tracing import current_request, install_tracing

LIMIT = 1_000


async def _echo(request: FastRequest) -> Reply:
    rc = current_request()  # bound by the request-context middleware of the fast chain
    payload = {"body": request.body.decode(), "app": request.app.title, "request_id": rc.request_id if rc else None}
    return Reply(200, json.dumps(payload).encode())


async def _boom(_: FastRequest) -> Reply:
    raise RuntimeError("a bug in a fast handler")


def _app() -> FastAPI:
    app = FastAPI(title="protocol-test")
    install_error_handlers(app)
    app.add_middleware(
        FastPath, routes=[FastRoute("POST", re.compile("/echo"), _echo), FastRoute("POST", re.compile("/boom"), _boom)]
    )
    app.add_middleware(BodyLimit, default=1 << 20, routes=[RouteLimit.of("POST", "/echo", LIMIT, "TEST_LIMIT")])
    install_tracing(app, "test", Settings(host="127.0.0.1"))

    @app.get("/plain")
    async def plain() -> dict[str, str]:
        return {"route": "framework"}

    return app


@pytest.fixture
async def server() -> AsyncIterator[tuple[FastAPI, int]]:
    app = _app()
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=HttpToolsOneWrite, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    async with asyncio.timeout(30):
        while not srv.started:  # noqa: ASYNC110  # uvicorn has no start event; bounded by the timeout
            await asyncio.sleep(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield app, port
    finally:
        srv.should_exit = True
        await asyncio.wait_for(task, 30)


async def _exchange(port: int, raw: bytes, answers: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    """Send ``raw`` as is on one connection; read ``answers`` responses (Content-Length framed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    try:
        writer.write(raw)
        async with asyncio.timeout(30):
            for _ in range(answers):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers["content-length"]))
                out.append((int(lines[0].split()[1]), headers, body))
            if out and out[-1][1].get("connection") == "close":
                assert await reader.read() == b""  # the server closed the connection
    finally:
        writer.close()
    return out


def _post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_fast_route_skips_the_framework_but_keeps_the_apps_middleware(server: tuple[FastAPI, int]) -> None:
    app, port = server
    [(status, headers, body)] = await _exchange(port, _post("/echo", b"hello", "X-Request-ID: abc-1"))
    assert status == 200 and json.loads(body) == {"body": "hello", "app": "protocol-test", "request_id": "abc-1"}
    assert headers["x-request-id"] == "abc-1" and "traceresponse" in headers and "date" in headers
    # Starlette builds its middleware stack on its first call: no fast request made one.
    assert app.middleware_stack is None
    [(status, _, body)] = await _exchange(port, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and json.loads(body) == {"route": "framework"} and app.middleware_stack is not None


async def test_fast_route_errors_are_the_apps(server: tuple[FastAPI, int]) -> None:
    _, port = server
    [(status, headers, body)] = await _exchange(port, _post("/boom", b"{}"))
    assert status == 500 and json.loads(body)["error"]["code"] == "internal_error"
    assert headers["content-type"] == "application/json"
    [(status, headers, body)] = await _exchange(port, _post("/echo", b"x" * (LIMIT + 1)))
    assert status == 413 and json.loads(body)["error"]["limit_bytes"] == LIMIT
    assert headers["connection"] == "close"  # the rest of the body is not read: the connection is done
    [(status, _, body)] = await _exchange(port, _post("/echo", b"{}", "X-Request-ID: has space"))
    assert status == 400 and json.loads(body)["error"]["field"] == "X-Request-ID"


async def test_keep_alive_pipelining_close_and_chunked(server: tuple[FastAPI, int]) -> None:
    _, port = server
    # Three requests in one write on one connection: answered in order, the connection kept.
    raw = _post("/echo", b"one") + _post("/echo", b"two") + b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = await _exchange(port, raw, answers=3)
    assert [a[0] for a in answers] == [200, 200, 200]
    assert [json.loads(a[2]).get("body") for a in answers] == ["one", "two", None]
    assert all(a[1].get("connection") != "close" for a in answers)
    # Connection: close is honoured (the helper checks the server closed the socket).
    [(status, headers, _)] = await _exchange(port, _post("/echo", b"bye", "Connection: close"))
    assert status == 200 and headers["connection"] == "close"
    # A chunked body reaches the handler whole.
    chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    [(status, _, body)] = await _exchange(port, chunked)
    assert status == 200 and json.loads(body)["body"] == "abcde"
