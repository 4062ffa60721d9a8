"""The HTTP protocol the mesh's services run under uvicorn (``--http services.common.server:HttpToolsOneWrite``).

uvicorn's httptools protocol writes a response's head and its body to the socket separately: two
sends per answer, and on loopback each send that wakes the reader costs the sender a kernel
wake-up (a profile of the decider at 16 connections put a quarter of its time in socket writes).
``HttpToolsOneWrite`` is that protocol with the head held back until the body's first write, so
that both leave in one send. A head with no body write in the same event-loop step (a ``HEAD``
answer, a stream whose first chunk is not ready yet) leaves on its own at the end of the step.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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


class HttpToolsOneWrite(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        held: Any = _HeadWithBody(transport, asyncio.get_running_loop())
        super().connection_made(held)
