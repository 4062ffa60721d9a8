"""One JSON error shape for every service: ``{"error": {"code", "message", "field", ...}}``.

Every error the mesh raises on purpose derives from ``services.core.errors.AutoScaleError``;
``install_error_handlers`` maps that root, in one handler, to its status and body. Validation
errors name the offending field; unexpected exceptions are logged and answered with a 500 that
carries no stack trace.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from services.core.errors import AutoScaleError
from services.core.schemas import ErrorBody

log = logging.getLogger("autoscale.errors")


class ApiError(AutoScaleError):
    """A one-off HTTP error of a route: its status and code are given, not fixed by a subclass;
    ``headers`` go out with it (``WWW-Authenticate`` on a 401, ``Retry-After`` on a 429/503)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message, field=field, **extra)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})


def error_headers(exc: AutoScaleError) -> dict[str, str]:
    return exc.headers if isinstance(exc, ApiError) else {}


_DESCRIPTIONS = {
    401: "no bearer token, or an unknown one (WWW-Authenticate: Bearer)",
    403: "the token does not grant the route's scope",
    404: "unknown resource (the error names it)",
    405: "method not allowed (Allow lists the methods)",
    409: "conflicts with the current state (the error says with what)",
    413: "body over the route's limit, or a tensor or array over its element limit",
    422: "invalid input: the error names the field",
    429: "rate limited: retry after Retry-After seconds",
    502: "a runner refused or failed the push",
    503: "not ready, or no capacity now (Retry-After when retrying helps)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route or router: each status with the mesh's error body."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}


class NotReady(AutoScaleError):
    """``GET /readyz`` before a service can serve: the message says what it still waits for."""

    status = 503
    code = "not_ready"


def error_body(code: str, message: str, field: str | None = None, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def _field_path(loc: Sequence[object]) -> str:
    # Drop the "body"/"query"/"header" prefix so the field reads as the client wrote it.
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _validation_message(err: Mapping[str, Any]) -> str:
    field = _field_path(err.get("loc", ()))
    msg = str(err.get("msg", "invalid value"))
    if err.get("type") == "json_invalid":
        return f"request body is not valid JSON: {err.get('ctx', {}).get('error', msg)}"
    return f"{field}: {msg}"


def api_error_body(exc: AutoScaleError) -> dict[str, object]:
    """The body of any deliberate error (the one mapping from the exception root to JSON)."""
    return error_body(exc.code, exc.message, exc.field, **exc.extra)


def validation_error_body(errors: Sequence[Mapping[str, Any]]) -> dict[str, object]:
    """The 422 body for pydantic/FastAPI validation errors: the first one names the field."""
    first: Mapping[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = _field_path(first.get("loc", ()))
    code = "invalid_json" if first.get("type") == "json_invalid" else "validation_error"
    details = [{"field": _field_path(e.get("loc", ())), "message": str(e.get("msg"))} for e in errors[:20]]
    return error_body(code, _validation_message(first), field if code != "invalid_json" else "body", details=details)


async def send_error(send: Send, exc: AutoScaleError) -> None:
    """Answer a pure-ASGI request with the error's status, body and headers (fast paths, middleware)."""
    payload = json.dumps(api_error_body(exc)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(exc).items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _allowed_methods(request: Request, fallback: str) -> str:
    """Every method the OpenAPI schema lists at this path (the framework's own 405 names only the
    methods of the first route that matched); ``fallback`` for paths outside the schema."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(request.app.state, "allow_table", None)
    if table is None:
        table = [
            (re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))), {m.upper() for m in ops})
            for path, ops in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.allow_table = table
    methods = set().union(*(ops for pattern, ops in table if pattern.fullmatch(request.url.path)))
    return ", ".join(sorted(methods)) if methods else fallback


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AutoScaleError)
    async def _deliberate(_: Request, exc: AutoScaleError) -> JSONResponse:
        return JSONResponse(api_error_body(exc), status_code=exc.status, headers=error_headers(exc) or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error_body(exc.errors()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body": bytes that are not UTF-8 JSON
            body = error_body("invalid_json", f"request body is not valid JSON: {exc.detail}", "body")
            return JSONResponse(body, status_code=422)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request, headers.get("Allow", ""))
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("internal_error", "internal error; see the service log"), status_code=500)
