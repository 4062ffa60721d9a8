"""One JSON error shape for every service: ``{"error": {"code", "message", "field", ...}}``.

Every error the mesh raises on purpose derives from ``services.core.errors.AutoScaleError``;
``install_error_handlers`` maps that root, in one handler, to its status and body. Validation
errors name the offending field; unexpected exceptions are logged and answered with a 500 that
carries no stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.core.errors import AutoScaleError

log = logging.getLogger("autoscale.errors")


class ApiError(AutoScaleError):
    """A one-off HTTP error of a route: its status and code are given, not fixed by a subclass."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, **extra: object) -> None:
        super().__init__(message, field=field, **extra)
        self.status = status
        self.code = code


class NotReady(AutoScaleError):
    """``GET /readyz`` before a service can serve: the message says what it still waits for."""

    status = 503
    code = "not_ready"


def error_body(code: str, message: str, field: str | None = None, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def _field_path(loc: Sequence[object]) -> str:
    # Drop the "body"/"query" prefix so the field reads as the client wrote it.
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AutoScaleError)
    async def _deliberate(_: Request, exc: AutoScaleError) -> JSONResponse:
        return JSONResponse(api_error_body(exc), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error_body(exc.errors()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("internal_error", "internal error; see the service log"), status_code=500)
