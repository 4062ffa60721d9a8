"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from services.common.errors import NotReady, error_responses
from services.core.schemas import Liveness, Readiness
from services.decider.deps import Decider, DeciderDep

router = APIRouter(tags=["health"])


class DeciderReadiness(Readiness):
    runners: list[str]
    models: int


@router.get("/healthz", response_model=Liveness)
async def healthz() -> Liveness:
    return Liveness()


@router.get("/readyz", response_model=DeciderReadiness, responses=error_responses(503))
async def readyz(d: DeciderDep) -> DeciderReadiness:
    """Ready when Redis answers, telemetry has reported and at least one runner offers targets."""
    problems = await readiness_problems(d)
    if problems:
        raise NotReady("; ".join(problems))
    healthy = [r.role.value for r in d.runners.runners.values() if r.healthy]
    return DeciderReadiness(runners=healthy, models=len(d.models.names()))


async def readiness_problems(d: Decider) -> list[str]:
    """What keeps the decider from serving (empty when ready): also the V2 protocol's readiness."""
    problems: list[str] = []
    try:
        await d.qstore.redis.ping()
    except Exception as exc:  # any Redis client error means not ready
        problems.append(f"redis: {exc}")
    if d.telemetry.snapshot is None:
        problems.append("telemetry: no snapshot yet")
    healthy = [r.role.value for r in d.runners.runners.values() if r.healthy]
    if not healthy:
        problems.append("runners: none healthy")
    return problems
