"""Request ids and W3C trace context for every service; OpenTelemetry spans when configured.

Every service calls ``install_tracing(app, service, settings)`` in its app factory:

* ``RequestContextMiddleware`` (pure ASGI, outermost of the app's own middleware) accepts the
  client's ``X-Request-ID`` (1-128 visible ASCII characters; anything else is a 400 naming the
  header) or generates one, continues the W3C ``traceparent`` it is sent (an invalid one is
  ignored and a new trace started, as the W3C spec asks) or starts a trace, binds both to a
  context variable for the whole request (background work after the response included), and
  echoes ``X-Request-ID`` and ``traceresponse`` (W3C Trace Context Level 2) in the response.
  ``services.common.logging`` adds ``request_id``, ``trace_id`` and ``span_id`` to every log line
  written meanwhile.
* ``outgoing_headers()`` is what a service forwards on a call it makes for the request (the
  decider's dispatch to a runner): the same ``X-Request-ID`` and a ``traceparent`` naming the
  current span as parent.
* With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (needs the ``otel`` extra), OpenTelemetry's FastAPI
  instrumentation makes a server span per request (polling routes excluded), ``span(name)``
  makes child spans (the decider's decide / dispatch / learn, the runner's run), and a batch
  processor exports them over OTLP/HTTP from a background thread. The request context then
  carries OpenTelemetry's own ids, so logs and traces agree. Unset (the default), no SDK is
  imported, no exporter exists and ``span()`` returns one shared no-op context manager.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi import FastAPI

    from services.common.settings import Settings

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_RE = re.compile(rb"^[\x21-\x7e]{1,128}$")
_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
# Polled every fraction of a second by the mesh itself: spans of them would drown the requests.
EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$,/targets$,/state$"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who this request is: its id, its trace, this service's span in it and the caller's."""

    request_id: str
    trace_id: str  # 32 lower-case hex digits
    span_id: str  # 16 hex digits: this service's span for the request
    parent_id: str | None  # the caller's span, from its traceparent
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        """The W3C header naming this service's span as the parent of what it calls."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def log_fields(self) -> dict[str, str]:
        return {"request_id": self.request_id, "trace_id": self.trace_id, "span_id": self.span_id}


_current: ContextVar[RequestContext | None] = ContextVar("autoscale_request_context", default=None)


def current_request() -> RequestContext | None:
    """The request being served by this task (None outside a request)."""
    return _current.get()


# Ids need to be unique, not secret: a PRNG seeded from the OS (and re-seeded in a forked child)
# costs ~0.3 µs an id, where os.urandom's system call measured ~9 µs here (3 per request).
_rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def _hex_id(bits: int) -> str:
    return f"{_rng.getrandbits(bits) or 1:0{bits // 4}x}"  # all-zero ids are invalid (W3C)


def new_request_id() -> str:
    return _hex_id(128)


def parse_traceparent(value: str) -> tuple[str, str, bool] | None:
    """(trace id, parent span id, sampled) of a valid W3C ``traceparent``; None when invalid.

    Version 00 must be exactly 55 characters; a later version may append fields (kept
    forward-compatible, as the spec asks); version ff, an all-zero trace or span id are invalid."""
    m = _TRACEPARENT_RE.match(value.strip())
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id, parent_id, bool(int(flags, 16) & 1)


class RequestContextMiddleware:
    """Binds a ``RequestContext`` to each HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, otel: bool = False) -> None:
        self.app = app
        self.otel = otel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid: bytes | None = None
        parent: str | None = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = value
            elif key == b"traceparent":
                parent = value.decode("latin-1")
        if rid is not None and not _REQUEST_ID_RE.match(rid):
            await _bad_request_id(send)
            return
        ctx = self._context(rid.decode("ascii") if rid is not None else new_request_id(), parent)
        extra = [(b"x-request-id", ctx.request_id.encode()), (b"traceresponse", ctx.traceparent.encode())]

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        token = _current.set(ctx)
        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            _current.reset(token)

    def _context(self, request_id: str, traceparent: str | None) -> RequestContext:
        parsed = parse_traceparent(traceparent) if traceparent else None
        parent_id = parsed[1] if parsed else None
        if self.otel:
            from opentelemetry import trace

            sc = trace.get_current_span().get_span_context()
            if sc.is_valid:  # the instrumentation's server span: it already continued the caller's trace
                return RequestContext(
                    request_id, f"{sc.trace_id:032x}", f"{sc.span_id:016x}", parent_id, sc.trace_flags.sampled
                )
        if parsed is None:
            return RequestContext(request_id, _hex_id(128), _hex_id(64), None)
        return RequestContext(request_id, parsed[0], _hex_id(64), parent_id, parsed[2])


async def _bad_request_id(send: Send) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "invalid_header",
                "message": "X-Request-ID must be 1-128 visible ASCII characters (no spaces)",
                "field": "X-Request-ID",
            }
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------- spans


class _Tracing:
    """This process's tracer: None until ``install_tracing`` finds an OTLP endpoint."""

    tracer: Any = None  # opentelemetry.trace.Tracer when enabled
    provider: Any = None  # opentelemetry.sdk.trace.TracerProvider when enabled
    endpoint: str = ""


_tracing = _Tracing()
_NO_SPAN = contextlib.nullcontext()  # stateless: one instance serves every call


def tracing_enabled() -> bool:
    return _tracing.tracer is not None


def span(name: str, **attributes: str | int | float | bool) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one when tracing is on; a shared no-op otherwise."""
    tracer = _tracing.tracer
    if tracer is None:
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=attributes)


def outgoing_headers() -> dict[str, str]:
    """Headers to forward on a call made for the current request (none outside a request)."""
    ctx = _current.get()
    if ctx is None:
        return {}
    headers = {REQUEST_ID_HEADER: ctx.request_id}
    if _tracing.tracer is not None:
        from opentelemetry import propagate

        propagate.inject(headers)  # traceparent (+ tracestate) of the current span
    else:
        headers["traceparent"] = ctx.traceparent
    return headers


def _provider(service: str, endpoint: str) -> Any:
    """One TracerProvider per process, exporting to ``endpoint`` over OTLP/HTTP in batches."""
    try:
        import opentelemetry.instrumentation.fastapi  # noqa: F401  # install_tracing needs it next
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:  # the optional extra is missing
        raise RuntimeError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install 'autoscale-mesh[otel]' (or unset it)"
        ) from exc
    if _tracing.provider is not None and _tracing.endpoint == endpoint:
        return _tracing.provider
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"autoscale-{service}"}
    provider = TracerProvider(resource=Resource.create(attributes))
    # The OTLP/HTTP convention: a base endpoint gets the signal's path appended.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")))
    _tracing.provider, _tracing.endpoint = provider, endpoint
    _tracing.tracer = provider.get_tracer("autoscale")
    return provider


def install_tracing(app: FastAPI, service: str, settings: Settings) -> None:
    """Request ids and trace context for ``app``; OpenTelemetry spans and export when
    ``settings.otel_endpoint`` is set. Call after the app's own middleware is added, so that the
    request context wraps it (the runner's ``/run`` fast path included)."""
    endpoint = settings.otel_endpoint
    if endpoint:
        provider = _provider(service, endpoint)
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=provider,
            excluded_urls=EXCLUDED_URLS,
            exclude_spans=["receive", "send"],
        )
    app.add_middleware(RequestContextMiddleware, otel=bool(endpoint))


@contextlib.contextmanager
def request_context(ctx: RequestContext) -> Iterator[RequestContext]:
    """Bind ``ctx`` outside an HTTP request (tests, tools)."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
