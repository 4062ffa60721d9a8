"""Why a policy cannot decide. Every policy raises these; the decider maps them to HTTP answers."""

from __future__ import annotations

from services.core.errors import AutoScaleError
from services.core.schemas import POLICY_NAMES


class PolicyError(AutoScaleError):
    """A policy cannot decide for this request."""

    status = 409
    code = "policy_error"


class NoCandidate(PolicyError):
    """None of the offered targets is one this policy may choose (e.g. no cloud runner up)."""

    status = 503
    code = "no_candidate"


class OracleUnavailable(PolicyError):
    """``opt`` needs the true cost of every target (ctx.oracle): simulator or profiled runners."""

    status = 409
    code = "oracle_unavailable"


class UnknownPolicy(PolicyError, KeyError):
    """A policy name that is not one of ``POLICY_NAMES`` (or not served here); lists the valid ones."""

    status = 422
    code = "unknown_policy"

    def __init__(self, name: str, valid: tuple[str, ...] = POLICY_NAMES) -> None:
        self.name = name
        self.valid = valid
        super().__init__(f"unknown policy {name!r}; valid policies: {', '.join(valid)}", field="policy")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message
