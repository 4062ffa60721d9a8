"""GET /models, GET /models/{name}, POST /models (admin upload), GET /targets."""

from __future__ import annotations

import asyncio
import re

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from services.common.errors import ApiError
from services.common.features import ModelValidationError
from services.common.schemas import ModelInfo, TargetInfo
from services.decider.deps import DeciderDep, require_admin

router = APIRouter(tags=["catalog"])
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class ModelList(BaseModel):
    models: list[ModelInfo]


class TargetView(TargetInfo):
    healthy: bool


class TargetList(BaseModel):
    targets: list[TargetView]
    runners: dict[str, dict[str, object]]


@router.get("/models", response_model=ModelList)
async def list_models(d: DeciderDep) -> ModelList:
    return ModelList(models=[d.models.get(n) for n in d.models.names()])


@router.get("/models/{name}", response_model=ModelInfo)
async def get_model(name: str, d: DeciderDep) -> ModelInfo:
    return d.models.get(name)


@router.post("/models", response_model=ModelInfo, status_code=201, dependencies=[Depends(require_admin)])
async def upload_model(
    request: Request, d: DeciderDep,
    name: str = Query(..., description="name to serve the model under"),
) -> ModelInfo:
    """Upload an ONNX file as the raw request body: validated, featurised, pushed to every runner."""
    if not NAME_RE.match(name):
        raise ApiError(422, "invalid_name", "name must match ^[a-z0-9][a-z0-9_.-]{0,63}$", field="name")
    if d.models.store.has(name):
        raise ApiError(409, "name_clash", f"a model named {name!r} already exists", field="name")
    declared = int(request.headers.get("content-length") or 0)
    if declared > d.settings.max_upload_bytes:
        raise ApiError(413, "too_large", f"upload is {declared} bytes; the limit is {d.settings.max_upload_bytes}", field="file")
    data = await request.body()
    try:
        info = await asyncio.to_thread(d.models.store.add, name, data, max_bytes=d.settings.max_upload_bytes)
    except ModelValidationError as exc:
        status = 413 if "limit" in str(exc) and "bytes" in str(exc) else 422
        raise ApiError(status, "invalid_model", str(exc), field=getattr(exc, "field", None) or "file") from exc
    failed = await d.runners.push_model(name, data)
    if failed:
        await asyncio.to_thread(d.models.store.remove, name)
        d.models.reload()
        raise ApiError(502, "push_failed", "model valid but not accepted by every runner: " + "; ".join(failed), field=None)
    d.models.reload()
    return info


@router.get("/targets", response_model=TargetList)
async def list_targets(d: DeciderDep) -> TargetList:
    targets = [
        TargetView(**t.model_dump(), healthy=r.healthy)
        for r in d.runners.runners.values() for t in r.targets
    ]
    runners = {
        r.role.value: {"url": r.url, "healthy": r.healthy, "targets": len(r.targets), "error": r.last_error or None}
        for r in d.runners.runners.values()
    }
    return TargetList(targets=targets, runners=runners)
