"""POST /infer: parse, let the inference service do the pass, answer; metrics and learning after the response.

``INFER_FAST`` answers it on the ASGI fast path (``services.common.asgi``); the FastAPI route below
documents it in OpenAPI (and serves it wherever the fast path is not installed). Both call the same
``InferenceService``.
"""

from __future__ import annotations

import re
import time
from functools import partial

from fastapi import APIRouter, BackgroundTasks, Response
from pydantic import ValidationError

from services.common.asgi import FastRequest, FastRoute, Reply, error_reply
from services.common.auth import Scope, require
from services.common.errors import error_responses
from services.core.errors import AutoScaleError
from services.core.schemas import InferRequest, InferResponse
from services.decider.inference import InferenceDep, InferenceService, InferOutcome

router = APIRouter(tags=["inference"], dependencies=[require(Scope.client)], responses=error_responses(401, 403, 429))


@router.post("/infer", response_model=InferResponse, responses=error_responses(404, 409, 413, 422, 503))
async def infer(
    req: InferRequest, service: InferenceDep, background: BackgroundTasks, response: Response
) -> InferResponse:
    t0 = time.perf_counter()
    outcome = await service.infer(req)
    response.headers["server-timing"] = server_timing(outcome, t0).decode()
    background.add_task(service.finish, outcome)  # metrics and the Q update never delay the client
    return outcome.response


def server_timing(outcome: InferOutcome, t0: float) -> bytes:
    """``Server-Timing`` (W3C): what the decider added to the request and the runner's round trip, in ms."""
    total = time.perf_counter() - t0
    return b"decider;dur=%.3f, runner;dur=%.3f" % ((total - outcome.runner_s) * 1e3, outcome.runner_s * 1e3)


async def _infer_fast(request: FastRequest) -> Reply:
    t0 = time.perf_counter()
    service: InferenceService = request.app.state.inference
    try:
        req = InferRequest.model_validate_json(request.body)
    except ValidationError as exc:  # the client's body only: a ValidationError past this point is ours, a 500
        return error_reply(exc)
    try:
        outcome = await service.infer(req)
    except AutoScaleError as exc:
        return error_reply(exc)
    body = outcome.response.model_dump_json().encode()
    return Reply(
        200, body, headers=((b"server-timing", server_timing(outcome, t0)),), after=partial(service.finish, outcome)
    )


INFER_FAST = FastRoute("POST", re.compile("/infer"), _infer_fast, needs=Scope.client)
