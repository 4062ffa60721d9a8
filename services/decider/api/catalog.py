"""GET /models, GET /models/{name}, POST /models (admin upload), POST /models/{name}/accuracy
(admin: measure on a labelled set), GET /targets."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from services.common.accuracy import read_labelled_set
from services.common.auth import Scope, require
from services.common.errors import ApiError, error_responses
from services.common.model_store import NAME_RE, require_servable
from services.common.openapi import raw_body
from services.core.schemas import AccuracyEntry, Location, ModelInfo, Precision, TargetInfo
from services.decider.deps import DeciderDep

# Reads need the client scope; the two uploads add the admin scope (admin implies client).
router = APIRouter(tags=["catalog"], dependencies=[require(Scope.client)], responses=error_responses(401, 403, 429))
ADMIN = require(Scope.admin)


class ModelList(BaseModel):
    models: list[ModelInfo]


class TargetView(TargetInfo):
    healthy: bool = Field(description="an available replica of its role offers it")


class ReplicaView(BaseModel):
    """One runner process as the decider sees it."""

    id: str = Field(description="its registry id (a runner listed by URL: the role)")
    url: str
    registered: bool = Field(description="registered in Redis (false: listed by a URL setting)")
    device: str
    healthy: bool = Field(description="its last /targets probe succeeded")
    ejected: bool = Field(description="ejected by outlier detection after consecutive failed dispatches")
    outstanding: int = Field(description="dispatches from this decider awaiting its answer")
    served_total: int = Field(description="dispatches it answered (this decider, since it was listed)")
    failures_total: int = Field(description="dispatches that failed on it (timeout, connection, 5xx)")
    targets: int
    started_at: float | None = Field(None, description="the runner's start, Unix seconds (registered replicas)")
    error: str | None


class RunnerView(BaseModel):
    """A runner role as the decider sees it: healthy while a replica is available; its replicas."""

    url: str = Field(description="the first available replica's URL (every one: replicas)")
    healthy: bool
    targets: int
    error: str | None
    replicas: list[ReplicaView]


class TargetList(BaseModel):
    targets: list[TargetView]
    runners: dict[str, RunnerView]


@router.get("/models", response_model=ModelList)
async def list_models(d: DeciderDep) -> ModelList:
    return ModelList(models=[d.models.get(n) for n in d.models.names()])


@router.get("/models/{name}", response_model=ModelInfo, responses=error_responses(404, 422))
async def get_model(name: str, d: DeciderDep) -> ModelInfo:
    return d.models.get(name)


@router.post(
    "/models",
    response_model=ModelInfo,
    status_code=201,
    dependencies=[ADMIN],
    responses=error_responses(409, 413, 422, 502),
    openapi_extra=raw_body("the ONNX file (weights embedded), at most AUTOSCALE_MAX_UPLOAD_BYTES"),
)
async def upload_model(
    request: Request,
    d: DeciderDep,
    name: str = Query(..., pattern=NAME_RE.pattern, description="name to serve the model under"),
    accuracy: float = Query(..., ge=0, le=100, description="expected top-1 (%) in FP32, used by eq. 5"),
    accuracy_int8: float | None = Query(None, ge=0, le=100, description="offer INT8 targets at this top-1 (%)"),
    accuracy_fp16: float | None = Query(None, ge=0, le=100, description="offer FP16 targets at this top-1 (%)"),
) -> ModelInfo:
    """Upload an ONNX file as the raw request body: validated, featurised, pushed to every runner.

    The uploader declares the expected accuracy per precision (labelled ``declared``); a precision
    without one is not offered. ``POST /models/{name}/accuracy`` measures it on a labelled set.
    """
    if d.models.store.has(name):
        raise ApiError(409, "name_clash", f"a model named {name!r} already exists", field="name")
    data = await request.body()  # at most max_upload_bytes: the body limit refused more (413)
    declared = {Precision.fp32: accuracy, Precision.int8: accuracy_int8, Precision.fp16: accuracy_fp16}
    # A model that fails validation raises ModelValidationError (422, or 413 over the limit); one
    # ONNX Runtime (every runner's default engine) cannot run is refused too (422 unsupported_op).
    info = await asyncio.to_thread(
        d.models.store.add, name, data, max_bytes=d.settings.max_upload_bytes, accept=require_servable
    )
    for precision, top1 in declared.items():
        if top1 is not None:
            info = d.models.store.set_accuracy(
                name, precision, AccuracyEntry(top1=top1, source="declared", reference="declared by the uploader")
            )
    failed = await d.runners.push_model(info, data)
    if failed:
        await asyncio.to_thread(d.models.store.remove, name)
        d.models.reload()
        raise ApiError(
            502, "push_failed", "model valid but not accepted by every runner: " + "; ".join(failed), field=None
        )
    d.models.reload()
    return info


@router.post(
    "/models/{name}/accuracy",
    response_model=ModelInfo,
    dependencies=[ADMIN],
    responses=error_responses(404, 409, 413, 422, 502),
    openapi_extra=raw_body("an .npz with x (batch first) and y (integer labels or one-hot)"),
)
async def measure_model_accuracy(
    name: str,
    request: Request,
    d: DeciderDep,
    precision: list[Precision] | None = Query(
        None, description="precisions to measure (repeatable); default: FP32 and every precision already offered"
    ),
) -> ModelInfo:
    """Measure an uploaded model's top-1 on a labelled set sent as the raw body: an ``.npz`` with
    ``x`` (a batch for the model's input, batch first) and ``y`` (one integer label per sample, or
    one-hot). Each measured precision is then offered with that figure, labelled ``measured``, in
    place of the declared one; the runners receive the new entries."""
    info = d.models.get(name)  # 404 for an unknown name
    if d.models.store.builtin(name):
        raise ApiError(
            409,
            "builtin_model",
            f"{name!r} is a built-in model: its accuracies are the published figures",
            field="name",
        )
    data = await request.body()  # at most max_upload_bytes: the body limit refused more (413)
    # Members are checked for size and shape before loading (a small .npz can expand to GiBs); the
    # loading and the measuring run in worker threads, so /infer keeps being served meanwhile.
    labelled = await asyncio.to_thread(read_labelled_set, data, d.settings.max_upload_bytes)
    wanted = precision or [Precision.fp32, *(p for p in info.precisions if p != Precision.fp32)]
    for p in dict.fromkeys(wanted):  # in order, once each; a set that does not fit raises LabelledSetError
        info = await asyncio.to_thread(d.models.store.measure, name, p, labelled)
    d.models.reload()
    model_bytes = await asyncio.to_thread(d.models.store.path(name, Precision.fp32).read_bytes)
    failed = await d.runners.push_model(info, model_bytes)
    if failed:
        raise ApiError(
            502,
            "push_failed",
            "accuracy measured and recorded here, but not every runner took the new entries: " + "; ".join(failed),
            field=None,
        )
    return info


@router.get("/targets", response_model=TargetList)
async def list_targets(d: DeciderDep) -> TargetList:
    """Every target once (``healthy``: an available replica offers it) and every runner role with its replicas."""
    reg = d.runners
    targets = [TargetView(**t.model_dump(), healthy=up) for role in Location for t, up in reg.role_targets(role)]
    runners: dict[str, RunnerView] = {}
    for role in Location:
        replicas = [
            ReplicaView(
                id=r.id,
                url=r.url,
                registered=not r.static,
                device=r.device or (r.targets[0].device if r.targets else ""),
                healthy=r.healthy,
                ejected=reg.outliers.is_ejected(r.id),
                outstanding=r.outstanding,
                served_total=r.served_total,
                failures_total=r.failures_total,
                targets=len(r.targets),
                started_at=r.started_at,
                error=r.last_error or None,
            )
            for r in reg.of_role(role)
        ]
        pool = reg.pool(role)
        errors = [f"{v.id}: {v.error}" for v in replicas if v.error]
        runners[role.value] = RunnerView(
            url=pool[0].url if pool else (replicas[0].url if replicas else ""),
            healthy=bool(pool),
            targets=len(reg.role_targets(role)),
            error="; ".join(errors) or (None if replicas else "no replica registered or listed"),
            replicas=replicas,
        )
    return TargetList(targets=targets, runners=runners)
