"""Runner replicas, the actions they offer, and dispatch balanced over them.

A *replica* is one runner process: one URL and one pooled client. It is listed statically (a URL
setting) or because it registered itself in Redis (``services.decider.registry`` adds and forgets
those). Replicas of one role stand for the same device (the registry refuses another profile), so
actions stay per role and target: the action set of a model is the union of the targets that
available replicas advertise for it, and a replica appearing or leaving changes it without a
restart. Candidate lists are memoised per model and registry version, so the request path does no
work to build them.

A replica is *available* when its last ``/targets`` probe succeeded and outlier detection has not
ejected it (``outliers``, keyed by replica id: consecutive dispatch failures eject it, Envoy-style;
it is readmitted after its ejection time by the first successful probe). A role is down only when
none of its replicas is available.

``run`` sends a dispatch to the available replica of the target's role with the fewest requests
outstanding from this decider (ties: round-robin) among those that offer the target for the model.
A connection error or a 5xx is that replica's failure, and the dispatch goes on to the next replica
of the role (each at most once); a timeout ends it, since the time is spent. The whole exchange is
bounded by the timeout the caller gives (the time the request's deadline leaves it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import TypeAdapter

from services.common.http import PostClient, RawResponse
from services.common.logging import log_event
from services.common.tracing import outgoing_headers
from services.core.errors import AutoScaleError
from services.core.policies.base import Candidate
from services.core.schemas import Location, ModelInfo, RunRequest, RunResult, Target, TargetInfo
from services.decider.metrics import decider_metrics
from services.decider.outliers import OutlierDetector

log = logging.getLogger("autoscale.decider.runners")
_TARGETS = TypeAdapter(list[TargetInfo])


class RunnerUnavailable(AutoScaleError):
    """No replica of a role answered (down, timed out, 5xx); the decider tries another target."""

    status = 503
    code = "runner_unavailable"

    def __init__(self, role: str, reason: str) -> None:
        super().__init__(f"{role} runner unavailable: {reason}")
        self.role = role
        self.reason = reason


class RunnerRejected(AutoScaleError):
    """The runner answered with a client error (bad input it caught): passed through as it came."""

    def __init__(self, status: int, body: dict[str, object]) -> None:
        err = body.get("error")
        err = err if isinstance(err, dict) else {}
        field = err.get("field")
        super().__init__(str(err.get("message", body)), field=field if isinstance(field, str) else None)
        self.status = status
        self.code = str(err.get("code", "runner_error"))
        self.body = body


# How a replica's clients are made (the decider's: pooled, sending the mesh token): httpx for probes
# and model pushes, ``PostClient`` for dispatches.
ClientsFor = Callable[[str], tuple[httpx.AsyncClient, PostClient]]


@dataclass(eq=False)  # identity: a replica is one process, whatever its fields say
class Replica:
    id: str
    role: Location
    url: str
    client: httpx.AsyncClient  # probes, model pushes
    runs: PostClient  # dispatches (the hot path)
    static: bool = False  # listed by a URL setting, not registered
    device: str = ""
    started_at: float | None = None  # the runner's own start (Unix s), from its record
    ttl_s: float = 0.0  # its registration's TTL
    targets: list[TargetInfo] = field(default_factory=list)
    offers: dict[str, TargetInfo] = field(default_factory=dict)  # targets by id
    healthy: bool = False
    ever_healthy: bool = False
    last_error: str = ""
    checked_at: float = 0.0
    outstanding: int = 0  # dispatches from this decider awaiting an answer
    served_total: int = 0
    failures_total: int = 0
    missing_since: float | None = None  # registered, but its record was absent from a scan since then
    added_at: float = field(default_factory=time.monotonic)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.runs.aclose()

    def set_targets(self, targets: list[TargetInfo]) -> None:
        self.targets = targets
        self.offers = {t.id: t for t in targets}

    def serves(self, target_id: str, model: str) -> bool:
        t = self.offers.get(target_id)
        return t is not None and (t.models is None or model in t.models)

    def fingerprint(self) -> tuple[bool, list[str], list[list[str] | None]]:
        return self.healthy, [t.id for t in self.targets], [t.models for t in self.targets]


@dataclass
class RunnerRegistry:
    refresh_s: float
    run_timeout_s: float
    outliers: OutlierDetector[str] = field(default_factory=OutlierDetector)
    replicas: dict[str, Replica] = field(default_factory=dict)
    version: int = 0
    # Called once per replica after its first successful probe (the decider pushes it uploaded models).
    on_ready: Callable[[Replica], Coroutine[Any, Any, None]] | None = None
    _candidates: dict[tuple[str, int], tuple[Candidate, ...]] = field(default_factory=dict)
    _pools: dict[Location, tuple[Replica, ...]] = field(default_factory=dict)
    _turn: dict[Location, int] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _hooks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    # ------------------------------------------------------------------ membership
    def add(self, replica: Replica) -> None:
        self.replicas[replica.id] = replica
        self.outliers.population = len(self.replicas)
        self._bump()

    async def remove(self, replica_id: str) -> Replica | None:
        """Forget a replica: its outlier state goes, its client is closed."""
        replica = self.replicas.pop(replica_id, None)
        if replica is None:
            return None
        self.outliers.hosts.pop(replica_id, None)
        self.outliers.population = len(self.replicas)
        decider_metrics.set_ejected(replica.role.value, self._role_ejected(replica.role))
        self._bump()
        with contextlib.suppress(Exception):  # closing a client of a dead peer must not fail the caller
            await replica.aclose()
        return replica

    def of_role(self, role: Location) -> list[Replica]:
        return sorted((r for r in self.replicas.values() if r.role is role), key=lambda r: r.id)

    # ------------------------------------------------------------------ health
    async def refresh_one(self, replica: Replica) -> None:
        was = replica.fingerprint()
        try:
            resp = await replica.client.get("/targets", timeout=5.0)
            resp.raise_for_status()
            replica.set_targets(_TARGETS.validate_json(resp.content))
            replica.healthy = True
            replica.last_error = ""
        except (httpx.HTTPError, ValueError) as exc:
            if replica.healthy:
                log_event(log, "runner down", logging.WARNING, role=replica.role.value, id=replica.id, error=str(exc))
            replica.healthy = False
            replica.last_error = str(exc) or type(exc).__name__
        replica.checked_at = time.monotonic()
        if replica.healthy and self.outliers.due(replica.id, replica.checked_at):
            self.outliers.readmit(replica.id, replica.checked_at)
            decider_metrics.set_ejected(replica.role.value, self._role_ejected(replica.role))
            log_event(log, "runner readmitted", role=replica.role.value, id=replica.id)
            self._bump()
        if was != replica.fingerprint():
            self._bump()
        if replica.healthy and not replica.ever_healthy:
            replica.ever_healthy = True
            if self.on_ready is not None and replica.id in self.replicas:
                task = asyncio.create_task(self.on_ready(replica), name=f"replica-ready-{replica.id}")
                self._hooks.add(task)
                task.add_done_callback(self._hooks.discard)

    async def refresh(self) -> None:
        await asyncio.gather(*(self.refresh_one(r) for r in list(self.replicas.values())))

    def _bump(self) -> None:
        self.version += 1
        self._candidates.clear()
        self._pools.clear()
        for role in Location:
            replicas = self.of_role(role)
            up = sum(1 for r in replicas if self.available(r))
            decider_metrics.set_replicas(role.value, available=up, unavailable=len(replicas) - up)

    def available(self, replica: Replica) -> bool:
        """Probed healthy and not ejected: it is dispatched to."""
        return replica.healthy and not self.outliers.is_ejected(replica.id)

    def pool(self, role: Location) -> tuple[Replica, ...]:
        """The available replicas of a role (by id), memoised per registry version."""
        cached = self._pools.get(role)
        if cached is None:
            cached = self._pools[role] = tuple(r for r in self.of_role(role) if self.available(r))
        return cached

    def roles_available(self) -> list[Location]:
        return [role for role in Location if self.pool(role)]

    def _role_ejected(self, role: Location) -> bool:
        return any(self.outliers.is_ejected(r.id) for r in self.of_role(role))

    def ejected(self) -> list[str]:
        """Roles with an ejected replica."""
        return [role.value for role in Location if self._role_ejected(role)]

    def down(self) -> list[str]:
        """Each replica whose last probe failed, with why: ``role id: error``."""
        return [
            f"{r.role.value} {r.id}: {r.last_error or 'no targets'}"
            for r in sorted(self.replicas.values(), key=lambda r: (r.role.value, r.id))
            if not r.healthy
        ]

    def _failed(self, replica: Replica, kind: str, reason: str) -> str:
        """One failed dispatch: counted, and the replica ejected if it was one too many in a row."""
        decider_metrics.dispatch_failed(replica.role.value, kind)
        replica.failures_total += 1
        ejected_for = self.outliers.failure(replica.id, time.monotonic())
        if ejected_for is not None:
            decider_metrics.runner_ejected(replica.role.value)
            log_event(
                log,
                "runner ejected",
                level=logging.WARNING,
                role=replica.role.value,
                id=replica.id,
                seconds=ejected_for,
                reason=reason,
                consecutive_failures=self.outliers.policy.consecutive,
            )
            self._bump()
        return f"{replica.id}: {reason}"

    def mark_down(self, replica: Replica, reason: str) -> None:
        if replica.healthy:
            replica.healthy = False
            replica.last_error = reason
            self._bump()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="runner-refresh")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._hooks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        for r in list(self.replicas.values()):
            await r.aclose()

    # ------------------------------------------------------------------ actions
    def role_targets(self, role: Location) -> list[tuple[TargetInfo, bool]]:
        """Every target the replicas of a role advertise, once each, and whether an available one offers it."""
        seen: dict[str, tuple[TargetInfo, bool]] = {}
        for r in self.of_role(role):
            up = self.available(r)
            for t in r.targets:
                if t.id not in seen or (up and not seen[t.id][1]):
                    seen[t.id] = (t, up)
        return list(seen.values())

    def candidates(self, info: ModelInfo) -> tuple[Candidate, ...]:
        key = (info.name, self.version)
        cached = self._candidates.get(key)
        if cached is not None:
            return cached
        out: list[Candidate] = []
        for role in Location:
            seen: set[str] = set()
            for r in self.pool(role):
                for t in r.targets:
                    acc = info.precisions.get(t.target.precision)
                    if t.id in seen or acc is None or (t.models is not None and info.name not in t.models):
                        continue
                    seen.add(t.id)
                    out.append(Candidate(target=t.target, accuracy=acc.top1))
        result = tuple(out)
        self._candidates[key] = result
        return result

    # ------------------------------------------------------------------ dispatch
    def pick(self, target: Target, model: str, tried: set[str]) -> Replica | None:
        """The available replica of the target's role that offers it for ``model`` with the fewest
        outstanding dispatches (ties: round-robin), other than those ``tried``."""
        pool = [r for r in self.pool(target.runner) if r.id not in tried and r.serves(target.id, model)]
        if not pool:
            return None
        if len(pool) == 1:
            return pool[0]
        least = min(r.outstanding for r in pool)
        ties = [r for r in pool if r.outstanding == least]
        turn = self._turn[target.runner] = self._turn.get(target.runner, -1) + 1
        return ties[turn % len(ties)]

    async def run(
        self, target: Target, request: RunRequest, timeout_s: float | None = None, *, blame_timeout: bool = True
    ) -> RunResult:
        """Dispatch one run to a replica of the target's role; the whole exchange, every replica
        tried included, is bounded by ``timeout_s`` (default ``run_timeout_s``). A connection error
        (which also marks the replica down until its next successful probe) or a 5xx counts towards
        that replica's ejection and moves on to the next replica; a timeout counts too (only if
        ``blame_timeout``: not when the caller's own deadline left too little time) and ends the
        dispatch. ``RunnerUnavailable`` when no replica answered."""
        role = target.runner
        limit = timeout_s if timeout_s is not None else self.run_timeout_s
        bound = asyncio.timeout(limit)
        tried: set[str] = set()
        current: Replica | None = None
        failures: list[str] = []
        try:
            async with bound:
                for _ in range(len(self.replicas)):  # each replica at most once
                    current = self.pick(target, request.model, tried)
                    if current is None:
                        break
                    tried.add(current.id)
                    try:
                        resp = await self._post(current, request)
                    except httpx.HTTPError as exc:
                        # A refused or reset connection, at once; a failure as our bound fired is a timeout.
                        if bound.expired():
                            raise
                        reason = str(exc) or type(exc).__name__
                        self.mark_down(current, reason)
                        failures.append(self._failed(current, "connection", reason))
                        continue
                    if resp.status >= 500:
                        text = resp.body[:300].decode(errors="replace")
                        failures.append(self._failed(current, "http_5xx", f"HTTP {resp.status}: {text}"))
                        continue
                    return self._answer(current, resp)
        except (TimeoutError, httpx.HTTPError) as exc:
            reason = f"no answer within {limit:.2f} s"
            if blame_timeout and current is not None:
                self._failed(current, "timeout", reason)
            raise RunnerUnavailable(role.value, reason) from exc
        raise RunnerUnavailable(role.value, "; ".join(failures) or "no replica available")

    async def _post(self, replica: Replica, request: RunRequest) -> RawResponse:
        replica.outstanding += 1
        try:
            # The request id and trace context travel on: the runner's log lines and spans join the request's.
            # No timeout of its own: the asyncio bound in ``run`` is the one that fires.
            return await replica.runs.post("/run", request.model_dump_json().encode(), outgoing_headers())
        finally:
            replica.outstanding -= 1

    def _answer(self, replica: Replica, resp: RawResponse) -> RunResult:
        self.outliers.success(replica.id)
        replica.served_total += 1
        if resp.status >= 400:
            try:
                body = json.loads(resp.body)
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError:
                text = resp.body[:300].decode(errors="replace")
                body = {"error": {"code": "runner_error", "message": text, "field": None}}
            raise RunnerRejected(resp.status, body)
        return RunResult.model_validate_json(resp.body)

    async def push_model(self, info: ModelInfo, data: bytes, replicas: list[Replica] | None = None) -> list[str]:
        """Send an uploaded model and its accuracy entries to every replica (or those given);
        returns the failures."""
        failed: list[str] = []
        accuracy = json.dumps({p.value: e.model_dump() for p, e in info.precisions.items()})
        targets = list(self.replicas.values()) if replicas is None else replicas

        async def one(r: Replica) -> None:
            try:
                # The runner re-checks the bytes against the hash validated here, and stores by content.
                headers = {"x-accuracy": accuracy, "x-model-sha256": info.sha256}
                resp = await r.client.put(f"/models/{info.name}", content=data, timeout=120.0, headers=headers)
                resp.raise_for_status()
            except httpx.HTTPError as exc:
                failed.append(f"{r.role.value} {r.id}: {exc}")

        await asyncio.gather(*(one(r) for r in targets))
        await asyncio.gather(*(self.refresh_one(r) for r in targets))
        self._bump()
        return failed
