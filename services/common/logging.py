"""Structured (JSON lines) logging for every service.

A line written while a request is served also carries its ``request_id``, ``trace_id`` and
``span_id`` (``services.common.tracing``), so one request can be followed through every service's log.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from services.common.tracing import current_request


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": os.environ.get("AUTOSCALE_SERVICE", ""),
            "msg": record.getMessage(),
        }
        ctx = current_request()
        if ctx is not None:
            payload.update(ctx.log_fields())
        for key, value in getattr(record, "fields", {}).items():
            payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "info", service: str = "") -> None:
    if service:
        os.environ["AUTOSCALE_SERVICE"] = service
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log is one line per request: keep it off the hot path unless debugging.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING if level != "debug" else logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def log_event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: object) -> None:
    logger.log(level, msg, extra={"fields": fields})
