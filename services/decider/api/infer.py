"""POST /infer: parse, let the inference service do the pass, answer; learn after the response."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks

from services.common.auth import Scope, require
from services.common.errors import error_responses
from services.core.schemas import InferRequest, InferResponse
from services.decider.inference import InferenceDep

router = APIRouter(tags=["inference"], dependencies=[require(Scope.client)], responses=error_responses(401, 403, 429))


@router.post("/infer", response_model=InferResponse, responses=error_responses(404, 409, 413, 422, 503))
async def infer(req: InferRequest, service: InferenceDep, background: BackgroundTasks) -> InferResponse:
    outcome = await service.infer(req)
    background.add_task(service.learn, outcome.learn)  # the Q update never delays the client
    return outcome.response
