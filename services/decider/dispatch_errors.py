"""Errors of a dispatch that found no runner in time: every runner it tried failed (503), or the
request's deadline passed first (504). Raised by ``InferenceService.dispatch`` and by plans."""

from __future__ import annotations

from services.core.errors import AutoScaleError
from services.core.schemas import Location
from services.decider.deadlines import Deadline


class RunnersExhausted(AutoScaleError):
    """Every runner the decision fell back to was down."""

    status = 503
    code = "runner_unavailable"

    def __init__(self, failed: dict[Location, str]) -> None:
        detail = "; ".join(f"{role.value} runner: {why}" for role, why in failed.items())
        super().__init__(f"no runner could execute the request ({detail})", runners=[r.value for r in failed])


class DeadlineExceeded(AutoScaleError):
    """The request's deadline passed before any runner answered."""

    status = 504
    code = "deadline_exceeded"

    def __init__(self, deadline: Deadline, failed: dict[Location, str]) -> None:
        tried = "; ".join(f"{role.value} runner: {why}" for role, why in failed.items())
        super().__init__(
            f"no answer within the request's deadline of {deadline.budget_ms:.0f} ms"
            + (f" (tried {tried})" if tried else "")
            + "; set deadline_ms to allow more time",
            field="deadline_ms",
            deadline_ms=deadline.budget_ms,
            runners=[r.value for r in failed],
        )
