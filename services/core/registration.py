"""What a runner replica tells the registry about itself, and when a decider refuses it (pure).

A runner writes a ``RunnerRecord`` to Redis (``services.common.registry``) and renews it on every
heartbeat; the deciders read the records, validate them again with the same model and list the
replicas. ``RegistryEvent`` is what goes on the registry's channel: a runner joined, left, or was
refused (with the reason, so that the deciders' logs say it too). Both sides word a refusal with
``refusal`` and ``profile_refusal``, so the runner's log and the decider's read the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

from services.core.schemas import Location, TargetInfo, WireModel

PROTOCOL: Literal[1] = 1  # bumped when a record's meaning changes: a decider ignores records of another protocol
RUNNER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"


def normalise_url(url: str) -> str:
    """A runner's base URL as the registry compares it: http(s), a host, no query or fragment, no
    trailing slash. Raises ``ValueError`` naming what is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http(s) URL")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r} has a query or fragment")
    try:
        parts.port  # noqa: B018  # raises on a port that is not a number or out of range
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    return url.strip().rstrip("/")


class RunnerRecord(WireModel):
    """One registered runner replica, as stored under its key (renewed with a TTL)."""

    protocol: Literal[1] = PROTOCOL
    id: str = Field(pattern=RUNNER_ID_PATTERN, description="unique per Redis; the key is registry:runner:<id>")
    role: Location
    url: str = Field(description="base URL the deciders dispatch to (AUTOSCALE_ADVERTISE_URL)")
    device: str = Field(min_length=1, description="device profile the runner stands for")
    targets: list[TargetInfo] = Field(min_length=1, description="what GET /targets answers")
    engines: dict[str, str] = Field(default_factory=dict, description="engine name -> version")
    models: list[str] = Field(default_factory=list, description="models the runner holds")
    started_at: float = Field(ge=0, description="process start, Unix seconds (for people; never compared)")
    version: str = Field("", description="the runner's package version")
    heartbeat_s: float = Field(gt=0)
    ttl_s: float = Field(gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return normalise_url(v)

    @model_validator(mode="after")
    def _targets_are_the_roles(self) -> RunnerRecord:
        wrong = [t.id for t in self.targets if t.target.runner is not self.role]
        if wrong:
            raise ValueError(f"targets {wrong} do not belong to the {self.role.value} role")
        return self


class RegistryEvent(WireModel):
    """A message on the registry channel. Fields are plain strings: a refusal may concern a
    record that never validated."""

    event: Literal["join", "leave", "refused"]
    id: str
    role: str
    url: str
    reason: str = ""


def refusal(exc: ValidationError) -> str:
    """A record's validation errors in one line, each naming its field."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{where}: {err['msg']}")
    return "invalid registration: " + "; ".join(parts)


def profile_refusal(record: RunnerRecord, expected: Mapping[Location, str]) -> str | None:
    """Why the deciders refuse this record's device profile, or None: a role's replicas must all be
    the device the deciders' cost model stands for (their targets and costs must agree)."""
    want = expected.get(record.role)
    if want is None or want == record.device:
        return None
    return (
        f"unknown device profile {record.device!r} for a {record.role.value} runner: the deciders model "
        f"{record.role.value} runners as {want!r} (AUTOSCALE_{record.role.value.upper()}_DEVICE)"
    )
