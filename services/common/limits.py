"""How much a caller may send and how often: body limits, a per-client rate limit, in-flight bounds.

``BodyLimit`` is pure ASGI and sits outside every other layer: it reads the request body itself,
counting bytes as they arrive (chunked bodies too), and answers 413 naming the limit as soon as
the count passes it, before buffering more; a declared ``Content-Length`` over the limit is
refused before a byte is read. Every route of the mesh reads its whole body anyway, so reading it
here first costs one join, and nothing behind this layer ever holds more than the limit.

``RateLimit`` (the decider) is a token bucket per client: the name of its token, or its address
when it sent none. ``InFlightLimit`` (a runner) bounds the runs it holds at once. Both answer
with ``Retry-After``.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import ApiError, send_error

INFER_BODY_FACTOR = 4  # /infer's body limit: this many inputs of the largest model, base64 ...
JSON_ALLOWANCE = 64 * 1024  # ... plus the JSON around them
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes are never rate limited
MAX_TRACKED_CLIENTS = 10_000  # rate-limit buckets kept (least recently seen dropped): bounded memory


@dataclass(frozen=True, slots=True)
class RouteLimit:
    """The body limit of the routes whose method and path match; ``limit`` may be computed per request."""

    method: str
    path: re.Pattern[str]
    limit: int | Callable[[], int]
    setting: str  # the variable that sets it, named in the 413
    field: str = "body"  # what the 413 names: the body is the upload, the labelled set, ...

    @classmethod
    def of(
        cls, method: str, path: str, limit: int | Callable[[], int], setting: str, field: str = "body"
    ) -> RouteLimit:
        return cls(method, re.compile(path), limit, setting, field)


def too_large(limit: int, what: str, setting: str, field: str = "body") -> ApiError:
    return ApiError(
        413,
        "too_large",
        f"{what} is over the {limit}-byte limit ({setting})",
        field=field,
        limit_bytes=limit,
        headers={"Connection": "close"},  # the rest of the body is not read: this connection is done
    )


class BodyLimit:
    """Pure ASGI middleware: the request body, bounded per route (see the module docstring)."""

    def __init__(self, app: ASGIApp, default: int, routes: Sequence[RouteLimit] = ()) -> None:
        self.app = app
        self.default = default
        self.routes = tuple(routes)

    def limit_for(self, method: str, path: str) -> tuple[int, str, str]:
        """The limit of a route, the variable that sets it and the field a 413 names."""
        for r in self.routes:
            if r.method == method and r.path.fullmatch(path):
                return (r.limit() if callable(r.limit) else r.limit), r.setting, r.field
        return self.default, "AUTOSCALE_MAX_REQUEST_BYTES", "body"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = chunked = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
            elif key == b"transfer-encoding":
                chunked = value
        if declared is None and chunked is None:  # no body: nothing to bound
            await self.app(scope, receive, send)
            return
        limit, setting, field = self.limit_for(scope["method"], scope["path"])
        what = f"the body of {scope['method']} {scope['path']}"
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_error(send, too_large(limit, f"{what} ({int(declared)} bytes)", setting, field))
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_error(send, too_large(limit, what, setting, field))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body read here, then the server's own messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class TokenBuckets:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst``; least recently seen keys are
    dropped beyond ``MAX_TRACKED_CLIENTS`` (a dropped key starts again with a full bucket)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst or max(1, math.ceil(2 * rate)))
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """0 when the request may go; otherwise the seconds until a token is back."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)
        return wait


class RateLimit:
    """Pure ASGI middleware: 429 with ``Retry-After`` once a client's bucket is empty."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets, client_key: Callable[[Scope], str]) -> None:
        self.app = app
        self.buckets = buckets
        self.client_key = client_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in UNLIMITED_PATHS:
            wait = self.buckets.take(self.client_key(scope))
            if wait > 0:
                retry = max(1, math.ceil(wait))
                await send_error(
                    send,
                    ApiError(
                        429,
                        "rate_limited",
                        f"over {self.buckets.rate:g} requests/s for this client; retry in {retry} s",
                        headers={"Retry-After": str(retry)},
                    ),
                )
                return
        await self.app(scope, receive, send)


def infer_body_limit(largest_input_bytes: int, configured: int, floor: int) -> int:
    """``/infer``'s (and ``/run``'s) body limit: the setting, else a few base64 inputs of the largest model."""
    if configured:
        return configured
    return max(floor, INFER_BODY_FACTOR * 4 * math.ceil(largest_input_bytes / 3) + JSON_ALLOWANCE)


def rate_limit_rps(configured: float | None, loopback: bool) -> float:
    """The decider's rate per client: the setting, else off on a loopback bind and 100/s elsewhere."""
    if configured is not None:
        return configured
    return 0.0 if loopback else 100.0


class InFlightLimit:
    """At most ``limit`` requests inside ``slot()`` at once (one event loop: a plain counter suffices)."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.current = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.current >= self.limit:
            raise ApiError(
                503,
                "busy",
                f"{self.what} already holds {self.limit} requests (AUTOSCALE_RUNNER_MAX_IN_FLIGHT); retry shortly",
                headers={"Retry-After": "1"},
            )
        self.current += 1
        try:
            yield
        finally:
            self.current -= 1
