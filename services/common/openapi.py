"""OpenAPI documentation of request bodies that routes read raw (an ONNX file, an ``.npz``, a JSON
document the route parses itself): ``openapi_extra`` that shows clients, and schema-driven
fuzzers, the body a route expects."""

from __future__ import annotations

from typing import Any

BINARY: dict[str, Any] = {"type": "string", "format": "binary"}
JSON_OBJECT: dict[str, Any] = {"type": "object"}


def raw_body(description: str, media_type: str = "application/octet-stream", schema: dict[str, Any] = BINARY) -> Any:
    """``openapi_extra`` declaring the required body of a route that reads ``request.body()`` itself."""
    return {"requestBody": {"required": True, "description": description, "content": {media_type: {"schema": schema}}}}
