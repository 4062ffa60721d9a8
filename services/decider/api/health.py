"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from services.common.errors import ApiError
from services.decider.deps import DeciderDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(d: DeciderDep) -> dict[str, object]:
    """Ready when Redis answers, telemetry has reported and at least one runner offers targets."""
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
    if problems:
        raise ApiError(503, "not_ready", "; ".join(problems))
    return {"status": "ready", "runners": healthy, "models": len(d.models.names())}
