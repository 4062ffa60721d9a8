"""A pure-ASGI fast path for a service's hot POST routes: the runner's ``/run``, the decider's
``/infer`` and Open Inference Protocol infer.

Every inference crosses these routes, and the framework around a FastAPI route (routing,
dependency solving, body re-parsing, response-model validation, the middleware layers, Request and
Response objects) costs about 1 ms per call on a 2-core VM. ``FastPath`` sits in front of the app
and hands a matching request's body straight to its handler, which answers bytes. The FastAPI
routes stay registered so that OpenAPI documents them, with the same models and error bodies.
Work that the client need not wait for (metrics, the Q update) is the reply's ``after``: it runs
once the response is sent. An unexpected exception still reaches the app's 500 handler.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.auth import Scope as AuthScope
from services.common.auth import authorize_asgi
from services.common.errors import api_error_body, error_headers, validation_error_body
from services.core.errors import AutoScaleError

JSON = b"application/json"


@dataclass(frozen=True, slots=True)
class FastRequest:
    """What a fast handler gets: the ASGI scope, the whole body and the path's named groups."""

    scope: Scope
    body: bytes
    params: dict[str, str]

    @property
    def app(self) -> Any:
        return self.scope["app"]

    def header(self, name: bytes) -> bytes | None:
        """A request header by its lower-case name (ASGI servers lower-case them)."""
        return next((v for k, v in self.scope["headers"] if k == name), None)


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole response; ``after`` (sync or async) runs once it is sent."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()
    after: Callable[[], object] | None = None


Handler = Callable[[FastRequest], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class FastRoute:
    """A route the fast path answers: ``needs`` is the token scope it requires (checked before the
    body is read, as the FastAPI route's ``require`` dependency would); ``refuse`` writes that
    refusal in the route's protocol (the mesh's error body by default)."""

    method: str
    path: re.Pattern[str]  # matched in full against the decoded path; named groups become params
    handler: Handler
    needs: AuthScope | None = None
    refuse: Callable[[AutoScaleError], Reply] = field(default=lambda exc: error_reply(exc))


class FastPath:
    """Pure ASGI middleware that answers its routes itself; every other request goes on to the app."""

    def __init__(self, app: ASGIApp, routes: Sequence[FastRoute]) -> None:
        self.app = app
        self.routes = tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                if scope["method"] != route.method:
                    continue
                m = route.path.fullmatch(scope["path"])
                if m is not None:
                    await self._serve(route, m.groupdict(), scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _serve(route: FastRoute, params: dict[str, str], scope: Scope, receive: Receive, send: Send) -> None:
        reply = _refusal(route, scope)
        if reply is None:
            body = await read_body(receive)
            if body is None:
                return  # the client went away before sending the body: nobody to answer
            reply = await route.handler(FastRequest(scope, body, params))
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", reply.content_type),
                    (b"content-length", b"%d" % len(reply.body)),
                    *reply.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})
        if reply.after is not None:
            # After the response: right after an inference the CPU caches are cold and every
            # Python step costs several times more, so only what the client needs runs before.
            done = reply.after()
            if inspect.isawaitable(done):
                await done


def _refusal(route: FastRoute, scope: Scope) -> Reply | None:
    """The route's answer to a caller without the scope it needs; None when the caller may go on."""
    if route.needs is None:
        return None
    try:
        authorize_asgi(scope["app"].state.auth, scope, route.needs)
    except AutoScaleError as exc:
        return route.refuse(exc)
    return None


async def read_body(receive: Receive) -> bytes | None:
    """The request body, or None when the client disconnects first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def json_reply(status: int, payload: object, **kw: Any) -> Reply:
    return Reply(status, json.dumps(payload).encode(), **kw)


def model_reply(model: BaseModel, **kw: Any) -> Reply:
    return Reply(200, model.model_dump_json().encode(), **kw)


def error_reply(exc: ValidationError | AutoScaleError) -> Reply:
    """The mesh's JSON error body (and headers: ``WWW-Authenticate``, ``Retry-After``), as the FastAPI
    app's handlers write it for the same error."""
    if isinstance(exc, ValidationError):
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        return json_reply(422, validation_error_body(errors))
    headers = tuple((k.lower().encode(), v.encode()) for k, v in error_headers(exc).items())
    return json_reply(exc.status, api_error_body(exc), headers=headers)


@dataclass(frozen=True, slots=True)
class FastChain:
    """The app's own middleware down to its ``FastPath``, without the framework's layers around it
    (Starlette's error and exception middleware, FastAPI's, routing): what the HTTP protocol
    (``services.common.server``) hands a fast route's request to. ``error_handler`` is the app's
    handler for unexpected exceptions, which the protocol calls in their place."""

    app: ASGIApp
    routes: tuple[FastRoute, ...]
    error_handler: Callable[..., Any] | None

    def matches(self, method: str, path: str) -> bool:
        return any(r.method == method and r.path.fullmatch(path) for r in self.routes)

    @classmethod
    def of(cls, app: Any) -> FastChain | None:
        """Built from ``app.user_middleware`` (the same classes and arguments, so the same body limits,
        rate-limit buckets, request ids and auth); None for an app without a ``FastPath``."""
        middleware = list(getattr(app, "user_middleware", ()))
        at = next((i for i, m in enumerate(middleware) if m.cls is FastPath), None)
        if at is None:
            return None
        chain: ASGIApp = app  # behind FastPath: reached only by a request it does not answer
        for m in reversed(middleware[: at + 1]):
            chain = m.cls(chain, *m.args, **m.kwargs)
        handlers = getattr(app, "exception_handlers", {})
        return cls(chain, tuple(middleware[at].kwargs["routes"]), handlers.get(Exception) or handlers.get(500))
