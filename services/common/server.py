"""The HTTP protocol the mesh's services run under uvicorn (``--http services.common.server:HttpToolsOneWrite``).

Two savings over uvicorn's httptools protocol, both measured on the 2-core VM (``make bench``):

* **One write per response.** uvicorn writes a response's head and its body to the socket
  separately, and on loopback each send that wakes the reader costs the sender a kernel wake-up.
  The head is held back until the body's first write, so that both leave in one send. A head with
  no body write in the same event-loop step (a ``HEAD`` answer, a stream whose first chunk is not
  ready yet) leaves on its own at the end of the step.
* **Fast routes skip the framework.** A request for one of the app's ``FastPath`` routes (every
  inference: the runner's ``/run``, the decider's ``/infer`` and V2 infer) goes straight to the
  app's own middleware (request ids, body limit, rate limit, auth) and its handler
  (``asgi.FastChain``), past uvicorn's proxy-headers layer, Starlette's and FastAPI's middleware
  and routing, which cost a fast route about as much again as its handler. An unexpected
  exception gets the app's 500 handler, as it would through Starlette. Everything else, and
  every request while OpenTelemetry instrumentation is on (its middleware wraps the app), takes
  uvicorn's path unchanged.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
from typing import Any, cast

from starlette.requests import Request
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from services.common.asgi import FastChain
from services.common.tracing import tracing_enabled

log = logging.getLogger("autoscale.http")


class _HeadWithBody:
    """A transport that holds a response head back until the next write (or the end of the loop step)."""

    __slots__ = ("_held", "_loop", "_t")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._t = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._t.write(held + data)
        elif data.startswith(b"HTTP/1.") and data.endswith(b"\r\n\r\n"):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._t.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._t.write(held)

    def close(self) -> None:
        self.flush()
        self._t.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the socket transport's
        return getattr(self._t, name)


def _unwrap(app: Any) -> tuple[list[Any], Any]:
    """uvicorn's wrappers around the app (proxy headers, message logger) and the app inside them."""
    wrappers = []
    while not hasattr(app, "user_middleware") and hasattr(app, "app"):
        wrappers.append(app)
        app = app.app
    return wrappers, app


class _Fast:
    """A loaded app's fast chain inside copies of uvicorn's own wrappers (so that, say, a trusted
    proxy's client address is seen as on uvicorn's path); worked out once per loaded app."""

    __slots__ = ("app", "chain", "starlette")

    def __init__(self, starlette: Any, chain: FastChain, wrappers: list[Any]) -> None:
        self.starlette = starlette
        self.chain = chain
        app: Any = chain.app
        for w in reversed(wrappers):
            w = copy.copy(w)
            w.app = app
            app = w
        self.app = app

    @classmethod
    def of(cls, loaded: Any) -> _Fast | None:
        key = id(loaded)
        if key not in _FAST:
            wrappers, starlette = _unwrap(loaded)
            chain = FastChain.of(starlette)
            _FAST[key] = (loaded, cls(starlette, chain, wrappers) if chain is not None else None)
        return _FAST[key][1]


_FAST: dict[int, tuple[Any, _Fast | None]] = {}  # by id of the loaded app (held, so the id stays its own)


async def _run_fast(cycle: RequestResponseCycle, fast: _Fast) -> None:
    """uvicorn's ``RequestResponseCycle.run_asgi`` for the fast chain, with the app's 500 handler."""
    try:
        await fast.app(cycle.scope, cycle.receive, cycle.send)
    except Exception as exc:
        handler = fast.chain.error_handler
        if cycle.response_started or handler is None:
            log.error("unhandled error on %s %s", cycle.scope["method"], cycle.scope["path"], exc_info=exc)
            if cycle.response_started:
                cycle.transport.close()
            else:
                await cycle.send_500_response()
            return
        response = handler(Request(cast("dict[str, Any]", cycle.scope)), exc)  # it logs the error
        if inspect.isawaitable(response):
            response = await response
        await response(cycle.scope, cycle.receive, cycle.send)
    else:
        if not cycle.disconnected and not cycle.response_complete:  # FastPath always answers: a bug
            log.error("fast route returned without completing its response: %s", cycle.scope["path"])
            if cycle.response_started:
                cycle.transport.close()
            else:
                await cycle.send_500_response()
    finally:
        cycle.on_response = lambda: None  # as uvicorn does: no reference cycle through the protocol


class HttpToolsOneWrite(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        held: Any = _HeadWithBody(transport, asyncio.get_running_loop())
        self._fast = None if tracing_enabled() else _Fast.of(self.app)
        super().connection_made(held)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        fast = self._fast
        scope = cast("dict[str, Any]", cycle.scope)  # a plain dict: uvicorn's TypedDict has no "app"
        if (
            fast is not None
            and app is self.app  # not uvicorn's 503 for its concurrency limit
            and not self.config.reset_contextvars
            and fast.chain.matches(scope["method"], scope["path"])
        ):
            scope["app"] = fast.starlette  # as Starlette sets it: handlers find the app's state there
            task = self.loop.create_task(_run_fast(cycle, fast))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)
            return
        super()._start_asgi_task(cycle, app)
