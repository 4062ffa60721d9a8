"""Liveness and readiness.

``/readyz`` answers 503 only when the decider cannot serve at all: no runner
replica available (all down or ejected) or no model. Otherwise 200, with ``status`` ``ready`` when
everything is fine, or ``degraded`` while it serves with a handicap, each one named in ``issues``:
Redis unreachable (decisions come from the cached Q-table and updates wait in the buffer: serving,
not learning), updates dropped or lost, a stale telemetry snapshot (decisions on the last reading,
nothing learned), runner replicas ejected or down (``replicas`` counts them per role). Updates
dropped (buffer full) or lost (Redis restarted without them, beyond the replay window) are counted
in ``qtable`` (and in metrics) without degrading.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.common.errors import NotReady, error_responses
from services.core.schemas import Liveness, Location
from services.decider.deps import Decider, DeciderDep

router = APIRouter(tags=["health"])


class QTableHealth(BaseModel):
    redis_up: bool
    learning: bool = Field(description="updates reach Redis (false: held in the buffer until it is back)")
    pending_updates: int = Field(description="buffered or in flight, not yet confirmed by Redis")
    buffer_max: int
    dropped_total: int = Field(description="dropped because the buffer was full (oldest first)")
    lost_total: int = Field(description="acknowledged by Redis, lost in a restart and not replayable")
    outage_s: float | None = Field(None, description="how long Redis has not answered")


class TelemetryHealth(BaseModel):
    stale: bool
    age_s: float | None = Field(description="age of the snapshot (null before the first)")
    stale_after_s: float


class ReplicaCount(BaseModel):
    available: int = Field(description="probed healthy and not ejected: dispatched to")
    listed: int = Field(description="registered or listed by URL")
    ejected: int


class DeciderReadiness(BaseModel):
    status: Literal["ready", "degraded"] = "ready"
    issues: list[str] = Field(default_factory=list, description="why degraded; empty when ready")
    runners: list[str] = Field(description="runner roles whose targets are offered (an available replica)")
    ejected: list[str] = Field(
        default_factory=list, description="runner roles with a replica ejected after consecutive failures"
    )
    replicas: dict[str, ReplicaCount] = Field(description="replicas per role (details: GET /targets)")
    models: int
    qtable: QTableHealth
    telemetry: TelemetryHealth


@router.get("/healthz", response_model=Liveness)
async def healthz() -> Liveness:
    return Liveness()


async def _redis_answers(d: Decider) -> str:
    """'' if Redis answers a PING within 1 s, else why not."""
    try:
        await asyncio.wait_for(d.qstore.redis.ping(), 1.0)
        return ""
    except Exception as exc:  # any client error or the timeout: unreachable
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _qtable_health(d: Decider, ping_error: str, issues: list[str]) -> QTableHealth:
    w = d.qstore.writer
    outage = None if w.outage_since is None else time.monotonic() - w.outage_since
    redis_up = not ping_error and w.reachable
    if not redis_up:
        why = ping_error or w.last_error
        since = f" for {outage:.1f} s" if outage is not None else ""
        issues.append(
            f"redis unreachable{since} ({why}): serving from the cached Q-table, not learning; "
            f"{w.queue_depth} updates held (buffer {w.queue_max})"
        )
    return QTableHealth(
        redis_up=redis_up,
        learning=redis_up,
        pending_updates=w.queue_depth,
        buffer_max=w.queue_max,
        dropped_total=w.dropped_total,
        lost_total=w.lost_total,
        outage_s=outage,
    )


async def readiness_problems(d: Decider) -> list[str]:
    """What keeps the decider from serving at all (empty when it can serve, degraded or not): no
    runner available (down or ejected), no model. Also the Open Inference Protocol's readiness."""
    problems: list[str] = []
    if not d.runners.roles_available():
        problems.append(f"runners: none available (down: {d.runners.down()}, ejected: {d.runners.ejected()})")
    if not d.models.names():
        problems.append("models: none registered")
    return problems


@router.get("/readyz", response_model=DeciderReadiness, responses=error_responses(503))
async def readyz(d: DeciderDep) -> DeciderReadiness:
    """503 when the decider cannot serve (no runner available, no model); else 200, ``ready`` or
    ``degraded`` with the reasons (see the module docstring)."""
    problems = await readiness_problems(d)
    if problems:
        raise NotReady("; ".join(problems))
    available = [role.value for role in d.runners.roles_available()]
    models = len(d.models.names())
    issues: list[str] = []
    qtable = _qtable_health(d, await _redis_answers(d), issues)
    tel = d.telemetry
    age = tel.age_s
    stale = tel.is_stale(age)
    if stale:
        issues.append(
            "telemetry stale: no snapshot yet"
            if tel.snapshot is None
            else f"telemetry stale: last reading {age:.1f} s ago; deciding on it, not learning"
        )
    ejected = d.runners.ejected()
    if ejected:
        issues.append(f"runners ejected after consecutive failures: {', '.join(ejected)}")
    down = d.runners.down()
    if down:
        issues.append(f"runners down: {'; '.join(down)}")
    return DeciderReadiness(
        status="degraded" if issues else "ready",
        issues=issues,
        runners=available,
        ejected=ejected,
        replicas={
            role.value: ReplicaCount(
                available=len(d.runners.pool(role)),
                listed=len(d.runners.of_role(role)),
                ejected=sum(1 for r in d.runners.of_role(role) if d.runners.outliers.is_ejected(r.id)),
            )
            for role in Location
        },
        models=models,
        qtable=qtable,
        telemetry=TelemetryHealth(
            stale=stale, age_s=None if tel.snapshot is None else age, stale_after_s=tel.stale_after_s
        ),
    )
