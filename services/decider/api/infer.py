"""POST /infer: parse, let the inference service do the pass, answer; learn after the response."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks

from services.core.schemas import InferRequest, InferResponse
from services.decider.inference import InferenceDep

router = APIRouter(tags=["inference"])


@router.post("/infer", response_model=InferResponse)
async def infer(req: InferRequest, service: InferenceDep, background: BackgroundTasks) -> InferResponse:
    outcome = await service.infer(req)
    background.add_task(service.learn, outcome.learn)  # the Q update never delays the client
    return outcome.response
