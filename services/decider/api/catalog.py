"""GET /models, GET /models/{name}, POST /models (admin upload), POST /models/{name}/accuracy
(admin: measure on a labelled set), GET /targets."""

from __future__ import annotations

import asyncio
import io
import re
import zipfile

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from services.common.accuracy import LabelledSetError
from services.common.engines import get_engine
from services.common.errors import ApiError
from services.common.features import load_and_validate
from services.core.schemas import AccuracyEntry, ModelInfo, Precision, TargetInfo
from services.decider.deps import DeciderDep, require_admin

router = APIRouter(tags=["catalog"])
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class ModelList(BaseModel):
    models: list[ModelInfo]


class TargetView(TargetInfo):
    healthy: bool


class RunnerView(BaseModel):
    """A runner as the decider sees it: its URL, health, how many targets it offers, its last error."""

    url: str
    healthy: bool
    targets: int
    error: str | None


class TargetList(BaseModel):
    targets: list[TargetView]
    runners: dict[str, RunnerView]


@router.get("/models", response_model=ModelList)
async def list_models(d: DeciderDep) -> ModelList:
    return ModelList(models=[d.models.get(n) for n in d.models.names()])


@router.get("/models/{name}", response_model=ModelInfo)
async def get_model(name: str, d: DeciderDep) -> ModelInfo:
    return d.models.get(name)


@router.post("/models", response_model=ModelInfo, status_code=201, dependencies=[Depends(require_admin)])
async def upload_model(
    request: Request,
    d: DeciderDep,
    name: str = Query(..., description="name to serve the model under"),
    accuracy: float = Query(..., ge=0, le=100, description="expected top-1 (%) in FP32, used by eq. 5"),
    accuracy_int8: float | None = Query(None, ge=0, le=100, description="offer INT8 targets at this top-1 (%)"),
    accuracy_fp16: float | None = Query(None, ge=0, le=100, description="offer FP16 targets at this top-1 (%)"),
) -> ModelInfo:
    """Upload an ONNX file as the raw request body: validated, featurised, pushed to every runner.

    The uploader declares the expected accuracy per precision (labelled ``declared``); a precision
    without one is not offered. ``POST /models/{name}/accuracy`` measures it on a labelled set.
    """
    if not NAME_RE.match(name):
        raise ApiError(422, "invalid_name", "name must match ^[a-z0-9][a-z0-9_.-]{0,63}$", field="name")
    if d.models.store.has(name):
        raise ApiError(409, "name_clash", f"a model named {name!r} already exists", field="name")
    length = int(request.headers.get("content-length") or 0)
    if length > d.settings.max_upload_bytes:
        raise ApiError(
            413, "too_large", f"upload is {length} bytes; the limit is {d.settings.max_upload_bytes}", field="file"
        )
    data = await request.body()
    declared = {Precision.fp32: accuracy, Precision.int8: accuracy_int8, Precision.fp16: accuracy_fp16}
    # A model that fails validation raises ModelValidationError (422, or 413 over the limit).
    model = await asyncio.to_thread(load_and_validate, data, d.settings.max_upload_bytes)
    support = get_engine("onnxruntime").supports(model, Precision.fp32)
    if not support.ok:  # every runner's default engine must be able to run it
        raise ApiError(422, "unsupported_op", f"the model cannot be served: {support.reason}", field="file")
    info = await asyncio.to_thread(d.models.store.add, name, data, max_bytes=d.settings.max_upload_bytes)
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


@router.post("/models/{name}/accuracy", response_model=ModelInfo, dependencies=[Depends(require_admin)])
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
    length = int(request.headers.get("content-length") or 0)
    if length > d.settings.max_upload_bytes:
        raise ApiError(
            413,
            "too_large",
            f"labelled set is {length} bytes; the limit is {d.settings.max_upload_bytes}",
            field="labelled_set",
        )
    data = await request.body()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            labelled = {k: npz[k] for k in ("x", "y") if k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise LabelledSetError(f"body must be an .npz with arrays 'x' and 'y' ({exc})") from exc
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
    targets = [TargetView(**t.model_dump(), healthy=r.healthy) for r in d.runners.runners.values() for t in r.targets]
    runners = {
        r.role.value: RunnerView(url=r.url, healthy=r.healthy, targets=len(r.targets), error=r.last_error or None)
        for r in d.runners.runners.values()
    }
    return TargetList(targets=targets, runners=runners)
