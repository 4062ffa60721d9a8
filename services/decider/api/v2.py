"""The Open Inference Protocol (KServe V2) on the decider: health, metadata and infer.

``POST /v2/models/{name}/infer`` takes JSON tensors or the binary tensor data extension, as
``tritonclient`` sends them, and goes through the same ``InferenceService`` as ``/infer`` (the
codec in ``services.decider.v2`` converts); AutoScale's controls (``qos_ms``, ``accuracy_min``,
``streaming``, ``policy``) travel in the request's ``parameters`` and the decision comes back in the
response's. ``V2_INFER_FAST`` answers it on the ASGI fast path; the FastAPI route documents it.
Errors are the protocol's ``{"error": "<message>"}``. Every model has one version, ``1``.
"""

from __future__ import annotations

import logging
import re
import time
from functools import partial
from typing import Any

from fastapi import APIRouter, BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from services.common.asgi import JSON, FastRequest, FastRoute, Reply
from services.common.auth import Scope, require
from services.common.errors import error_headers
from services.common.version import package_version
from services.core.errors import AutoScaleError
from services.core.schemas import ModelInfo, TensorSpec
from services.decider.api.health import readiness_problems
from services.decider.api.infer import server_timing
from services.decider.deps import DeciderDep
from services.decider.inference import InferenceService
from services.decider.v2 import codec
from services.decider.v2.models import (
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    Live,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
    TensorMetadata,
)

log = logging.getLogger("autoscale.decider.v2")
router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
VERSION = "1"
PLATFORM = "onnxruntime_onnx"  # Triton's name for ONNX models (TVM serves some targets where configured)
EXTENSIONS = ["binary_tensor_data", "parameters"]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 415, 422, 429, 503)
}
OCTET_STREAM = b"application/octet-stream"


class V2Refusal(Exception):
    """A caller without the client scope on a V2 route: answered in the protocol's shape by the
    handler ``install_v2_errors`` registers (not an ``AutoScaleError``, whose handler writes the mesh's)."""

    def __init__(self, error: AutoScaleError) -> None:
        super().__init__(error.message)
        self.error = error


# Model metadata and infer need the client scope, as native /models and /infer do.
CLIENT = [require(Scope.client, refusal=V2Refusal)]


def install_v2_errors(app: FastAPI) -> None:
    async def refused(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, V2Refusal)
        return v2_error(exc.error)

    app.add_exception_handler(V2Refusal, refused)


class UnknownVersion(AutoScaleError):
    status = 404
    code = "unknown_version"


def _check_version(name: str, version: str | None) -> None:
    if version is not None and version != VERSION:
        raise UnknownVersion(f"model {name!r} has one version, {VERSION!r}; there is no version {version!r}")


def v2_error(exc: AutoScaleError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=error_headers(exc))


def _refuse(exc: AutoScaleError) -> Reply:
    """A caller without the client scope, answered in the protocol's shape (with ``WWW-Authenticate``)."""
    headers = tuple((k.lower().encode(), v.encode()) for k, v in error_headers(exc).items())
    return Reply(exc.status, codec.error_body(exc.message), headers=headers)


# ---------------------------------------------------------------------------------------- health


@router.get("/health/live", response_model=Live)
async def live() -> Live:
    return Live(live=True)


@router.get("/health/ready", response_model=Ready, responses={400: {"model": ErrorResponse}})
async def ready(d: DeciderDep) -> Ready | JSONResponse:
    """200 when ready; otherwise 400 (the protocol's 4xx for false) saying what is missing."""
    problems = await readiness_problems(d)
    if problems:
        return JSONResponse({"error": "not ready: " + "; ".join(problems)}, status_code=400)
    return Ready(ready=True)


@router.get("/models/{name}/ready", dependencies=CLIENT, response_model=ModelReady, responses=ERRORS)
@router.get("/models/{name}/versions/{version}/ready", dependencies=CLIENT, response_model=ModelReady, responses=ERRORS)
async def model_ready(name: str, d: DeciderDep, version: str | None = None) -> ModelReady | JSONResponse:
    """200 when a healthy runner offers a target for the model; 400 when none does."""
    try:
        _check_version(name, version)
        info = d.models.get(name)
    except AutoScaleError as exc:
        return v2_error(exc)
    if not d.runners.candidates(info):
        return JSONResponse({"error": f"no healthy runner can execute {name} now"}, status_code=400)
    return ModelReady(name=name, ready=True)


# ---------------------------------------------------------------------------------------- metadata


@router.get("", response_model=ServerMetadata)
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="autoscale-mesh", version=package_version(), extensions=EXTENSIONS)


def _tensor(spec: TensorSpec) -> TensorMetadata:
    return TensorMetadata(
        name=spec.name, datatype=codec.datatype(spec.dtype), shape=[d if isinstance(d, int) else -1 for d in spec.shape]
    )


def model_metadata(info: ModelInfo) -> ModelMetadata:
    return ModelMetadata(
        name=info.name,
        versions=[VERSION],
        platform=PLATFORM,
        inputs=[_tensor(s) for s in info.inputs],
        outputs=[_tensor(s) for s in info.outputs],
    )


@router.get("/models/{name}", dependencies=CLIENT, response_model=ModelMetadata, responses=ERRORS)
@router.get("/models/{name}/versions/{version}", dependencies=CLIENT, response_model=ModelMetadata, responses=ERRORS)
async def get_model_metadata(name: str, d: DeciderDep, version: str | None = None) -> ModelMetadata | JSONResponse:
    try:
        _check_version(name, version)
        return model_metadata(d.models.get(name))
    except AutoScaleError as exc:
        return v2_error(exc)


# ---------------------------------------------------------------------------------------- infer


async def _infer(request: FastRequest) -> Reply:
    """One V2 infer: decode to the native request, the native pass, encode the answer."""
    t0 = time.perf_counter()
    service: InferenceService = request.app.state.inference
    name, version = request.params["name"], request.params.get("version")
    try:
        _check_version(name, version)
        decoded = codec.decode(
            name, request.body, request.header(codec.HEADER_LENGTH), request.header(b"content-encoding")
        )
        outcome = await service.infer(decoded.request)
        body, header_length = codec.encode(decoded, outcome.response, version)
    except AutoScaleError as exc:
        return Reply(exc.status, codec.error_body(exc.message))
    except Exception:
        log.exception("unexpected error on V2 infer for %s", name)
        return Reply(500, codec.error_body("internal error; see the service log"))
    headers = [(b"server-timing", server_timing(outcome, t0))]
    if header_length is not None:
        headers.append((codec.HEADER_LENGTH, b"%d" % header_length))
    return Reply(
        200,
        body,
        content_type=JSON if header_length is None else OCTET_STREAM,
        headers=tuple(headers),
        after=partial(service.finish, outcome),
    )


V2_INFER_PATH = r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer"
V2_INFER_FAST = FastRoute("POST", re.compile(V2_INFER_PATH), _infer, needs=Scope.client, refuse=_refuse)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its ``$defs`` references inlined (for ``openapi_extra``, where they would dangle)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(schema)


_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline(InferenceRequest.model_json_schema())},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "binary tensor data extension: the JSON object (Inference-Header-Content-Length "
                "bytes), then each input's raw little-endian bytes in order (parameters.binary_data_size)",
            },
        },
    }
}


@router.post(
    "/models/{name}/infer", dependencies=CLIENT, response_model=InferenceResponse, responses=ERRORS, openapi_extra=_BODY
)
@router.post(
    "/models/{name}/versions/{version}/infer",
    dependencies=CLIENT,
    response_model=InferenceResponse,
    responses=ERRORS,
    openapi_extra=_BODY,
)
async def infer(name: str, request: Request, background: BackgroundTasks, version: str | None = None) -> Response:
    """Run one inference where AutoScale decides (``V2_INFER_FAST`` answers it on the fast path)."""
    params = {"name": name} | ({"version": version} if version is not None else {})
    reply = await _infer(FastRequest(request.scope, await request.body(), params))
    if reply.after is not None:
        background.add_task(reply.after)
    return Response(
        reply.body,
        status_code=reply.status,
        media_type=reply.content_type.decode(),
        headers={k.decode(): v.decode() for k, v in reply.headers},
        background=background,
    )
