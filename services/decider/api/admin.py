"""Admin API of the Q table: inspect, export/import, reset, transfer between devices, size.

Mounted by the app factory behind ``require(Scope.admin)``. Errors use the mesh's JSON
shape via ``ApiError``; an import that is refused leaves the table unchanged, because the
store validates the whole payload before it writes anything (and then writes in one
MULTI/EXEC).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from services.common.errors import ApiError, error_responses
from services.common.openapi import JSON_OBJECT, raw_body
from services.core.policies import ExploringPolicy
from services.core.policies.qlearning import PolicyView, QTableExport, QTableImportError
from services.core.schemas import PolicyName
from services.decider.qstore import ImportResult, QStore, QTableStats, ResetResult, TransferResult

router = APIRouter()


async def get_store(request: Request) -> QStore:
    return request.app.state.qstore


def _import_error(exc: QTableImportError) -> ApiError:
    """409 ``qtable_mismatch`` or 422 ``invalid_qtable`` (the error's own status and code)."""
    return ApiError(exc.status, exc.code, exc.message, field=exc.field)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise ApiError(422, "invalid_json", "request body is empty; expected JSON", field="body")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(422, "invalid_json", f"request body is not valid JSON: {exc}", field="body") from None


@router.get("/policy", response_model=PolicyView)
async def get_policy(store: QStore = Depends(get_store)) -> PolicyView:
    """Best learned action per stored state (Table I labels included), with visits and Q values."""
    return await store.policy_view()


class ExplorationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: `false` is not an epsilon of 0

    policy: PolicyName = "autoscale"
    epsilon: float = Field(ge=0, le=1, description="probability of exploring; 0 = exploit (still learning online)")


class ExplorationView(BaseModel):
    policy: str
    epsilon: float
    previous: float


@router.put("/policy/exploration", response_model=ExplorationView, responses=error_responses(422))
async def set_exploration(body: ExplorationRequest, request: Request) -> ExplorationView:
    """How much a learning policy explores from its next decision on, e.g. 0 once trained (exploit, as
    ``autoscale evaluate``'s test windows do). Not persisted: a restarted decider uses AUTOSCALE_EPSILON."""
    policy = request.app.state.policies.get(body.policy)
    if not isinstance(policy, ExploringPolicy):
        raise ApiError(422, "not_exploring", f"policy {body.policy!r} does not explore", field="policy")
    previous = float(policy.params.epsilon)
    policy.params = dataclasses.replace(policy.params, epsilon=body.epsilon)  # type: ignore[misc]  # frozen, replaced whole
    return ExplorationView(policy=body.policy, epsilon=body.epsilon, previous=previous)


@router.get("/qtable/export", response_model=QTableExport)
async def export_qtable(store: QStore = Depends(get_store)) -> QTableExport:
    return await store.export()


@router.post(
    "/qtable/import",
    response_model=ImportResult,
    responses=error_responses(409, 413, 422),
    openapi_extra=raw_body("a table in the format of GET /qtable/export", "application/json", JSON_OBJECT),
)
async def import_qtable(
    request: Request,
    mode: Literal["replace", "merge"] = Query(
        "replace", description="replace the table, or overwrite only the given entries"
    ),
    store: QStore = Depends(get_store),
) -> ImportResult:
    """Body: the export format. 422 ``invalid_qtable`` (malformed) or 409 ``qtable_mismatch``
    (another device / unknown actions), naming the field; the table is then unchanged."""
    data = await _json_body(request)
    try:
        return await store.import_(data, mode=mode)
    except QTableImportError as exc:
        raise _import_error(exc) from None


@router.post("/qtable/reset", response_model=ResetResult)
async def reset_qtable(store: QStore = Depends(get_store)) -> ResetResult:
    return await store.reset()


@router.post(
    "/qtable/transfer",
    response_model=TransferResult,
    responses=error_responses(409, 413, 422),
    openapi_extra=raw_body('{"from_device": name} or {"from_export": export}', "application/json", JSON_OBJECT),
)
async def transfer_qtable(request: Request, store: QStore = Depends(get_store)) -> TransferResult:
    """Body ``{"from_device": "mi8pro"}`` (a device whose table is in this Redis) or
    ``{"from_export": <export>}``: initialise this device's table from it (paper Sec. VI-C)."""
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ApiError(422, "validation_error", 'expected an object {"from_device": name}', field="body")
    extra = set(body) - {"from_device", "from_export"}
    if extra:
        raise ApiError(422, "validation_error", "unknown field", field=sorted(extra)[0])
    has_dev, has_exp = "from_device" in body, "from_export" in body
    if has_dev == has_exp:
        raise ApiError(422, "validation_error", "give exactly one of from_device or from_export", field="from_device")
    if has_dev and not isinstance(body["from_device"], str):
        raise ApiError(422, "validation_error", "from_device must be a device profile name", field="from_device")
    source = body["from_device"] if has_dev else body["from_export"]
    if has_exp and not isinstance(source, dict):
        raise ApiError(422, "invalid_qtable", "from_export must be an export object", field="from_export")
    try:
        return await store.transfer(source)
    except QTableImportError as exc:
        if has_exp and exc.field and exc.field not in ("to_device", "from_device"):
            exc.field = f"from_export.{exc.field}"
        raise _import_error(exc) from None


@router.get("/qtable/stats", response_model=QTableStats)
async def qtable_stats(store: QStore = Depends(get_store)) -> QTableStats:
    """States, entries, Redis memory (MEMORY USAGE summed) and cache size, vs the paper's 0.4 MB."""
    return await store.stats()
