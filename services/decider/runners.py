"""Registry of runners and the actions they offer, refreshed in the background.

The action set of a model is the union of the targets that available runners advertise for it; a
runner appearing or leaving changes it on the next refresh, without a restart. Candidate lists are
memoised per model and registry version so the request path does no work to build them.

A runner is *available* when its last ``/targets`` probe succeeded and outlier detection has not
ejected it (``outliers``: consecutive dispatch failures eject it, Envoy-style; it is readmitted
after its ejection time by the first successful probe). ``run`` bounds each dispatch by the
timeout the caller gives (the time the request's deadline leaves it) and counts its failures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

import httpx
from pydantic import TypeAdapter

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
    """A runner that did not answer (down, timed out, 5xx); the decider tries another target."""

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


@dataclass
class Runner:
    role: Location
    url: str
    client: httpx.AsyncClient
    targets: list[TargetInfo] = field(default_factory=list)
    healthy: bool = False
    last_error: str = ""
    checked_at: float = 0.0


@dataclass
class RunnerRegistry:
    runners: dict[Location, Runner]
    refresh_s: float
    run_timeout_s: float
    outliers: OutlierDetector[Location] = field(default_factory=OutlierDetector)
    version: int = 0
    _candidates: dict[tuple[str, int], tuple[Candidate, ...]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ discovery
    async def refresh_one(self, runner: Runner) -> None:
        was = (runner.healthy, [t.id for t in runner.targets], [t.models for t in runner.targets])
        try:
            resp = await runner.client.get("/targets", timeout=5.0)
            resp.raise_for_status()
            runner.targets = _TARGETS.validate_json(resp.content)
            runner.healthy = True
            runner.last_error = ""
        except (httpx.HTTPError, ValueError) as exc:
            if runner.healthy:
                log_event(log, "runner down", level=logging.WARNING, role=runner.role.value, error=str(exc))
            runner.healthy = False
            runner.last_error = str(exc) or type(exc).__name__
        runner.checked_at = time.monotonic()
        if runner.healthy and self.outliers.due(runner.role, runner.checked_at):
            self.outliers.readmit(runner.role, runner.checked_at)
            decider_metrics.set_ejected(runner.role.value, False)
            log_event(log, "runner readmitted", role=runner.role.value)
            self._bump()
        if was != (runner.healthy, [t.id for t in runner.targets], [t.models for t in runner.targets]):
            self._bump()

    async def refresh(self) -> None:
        await asyncio.gather(*(self.refresh_one(r) for r in self.runners.values()))

    def _bump(self) -> None:
        self.version += 1
        self._candidates.clear()

    def available(self, runner: Runner) -> bool:
        """Probed healthy and not ejected: its targets are offered."""
        return runner.healthy and not self.outliers.is_ejected(runner.role)

    def ejected(self) -> list[str]:
        return [r.value for r in self.outliers.ejected()]

    def _failed(self, role: Location, kind: str, reason: str) -> None:
        """One failed dispatch: counted, and the runner ejected if it was one too many in a row."""
        decider_metrics.dispatch_failed(role.value, kind)
        ejected_for = self.outliers.failure(role, time.monotonic())
        if ejected_for is not None:
            decider_metrics.set_ejected(role.value, True)
            log_event(
                log,
                "runner ejected",
                level=logging.WARNING,
                role=role.value,
                seconds=ejected_for,
                reason=reason,
                consecutive_failures=self.outliers.policy.consecutive,
            )
            self._bump()

    def mark_down(self, role: Location, reason: str) -> None:
        runner = self.runners[role]
        if runner.healthy:
            runner.healthy = False
            runner.last_error = reason
            self._bump()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="runner-refresh")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # ------------------------------------------------------------------ actions
    def all_targets(self) -> list[tuple[Runner, TargetInfo]]:
        return [(r, t) for r in self.runners.values() if self.available(r) for t in r.targets]

    def candidates(self, info: ModelInfo) -> tuple[Candidate, ...]:
        key = (info.name, self.version)
        cached = self._candidates.get(key)
        if cached is not None:
            return cached
        out: list[Candidate] = []
        for _, t in self.all_targets():
            acc = info.precisions.get(t.target.precision)
            if acc is None or (t.models is not None and info.name not in t.models):
                continue
            out.append(Candidate(target=t.target, accuracy=acc.top1))
        result = tuple(out)
        self._candidates[key] = result
        return result

    # ------------------------------------------------------------------ dispatch
    async def run(
        self, target: Target, request: RunRequest, timeout_s: float | None = None, *, blame_timeout: bool = True
    ) -> RunResult:
        """Dispatch one run; the whole exchange (connect, send, wait, read) is bounded by
        ``timeout_s`` (default ``run_timeout_s``). A timeout, connection error or 5xx raises
        ``RunnerUnavailable`` and counts towards the runner's ejection (a timeout only if
        ``blame_timeout``: not when the caller's own deadline left too little time); a connection
        error also marks it down until its next successful probe."""
        runner = self.runners[target.runner]
        limit = timeout_s if timeout_s is not None else self.run_timeout_s
        bound = asyncio.timeout(limit)
        try:
            async with bound:
                resp = await runner.client.post(
                    "/run",
                    content=request.model_dump_json(),
                    # The request id and trace context travel on: the runner's log lines and spans join the request's.
                    headers={"content-type": "application/json", **outgoing_headers()},
                    timeout=limit + 1.0,  # the asyncio bound above is the one that fires
                )
        except (TimeoutError, httpx.HTTPError) as exc:
            # Only our bound firing is a timeout: the aiohttp transport reports a refused or
            # reset connection as httpx.ConnectTimeout, at once.
            if bound.expired():
                reason = f"no answer within {limit:.2f} s"
                if blame_timeout:
                    self._failed(target.runner, "timeout", reason)
                raise RunnerUnavailable(target.runner.value, reason) from exc
            reason = str(exc) or type(exc).__name__
            self.mark_down(target.runner, reason)
            self._failed(target.runner, "connection", reason)
            raise RunnerUnavailable(target.runner.value, reason) from exc
        if resp.status_code >= 500:
            reason = f"HTTP {resp.status_code}: {resp.text[:300]}"
            self._failed(target.runner, "http_5xx", reason)
            raise RunnerUnavailable(target.runner.value, reason)
        self.outliers.success(target.runner)
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {"error": {"code": "runner_error", "message": resp.text[:300], "field": None}}
            raise RunnerRejected(resp.status_code, body)
        return RunResult.model_validate_json(resp.content)

    async def push_model(self, info: ModelInfo, data: bytes) -> list[str]:
        """Send an uploaded model and its accuracy entries to every runner; returns the failures."""
        failed: list[str] = []
        accuracy = json.dumps({p.value: e.model_dump() for p, e in info.precisions.items()})

        async def one(r: Runner) -> None:
            try:
                # The runner re-checks the bytes against the hash validated here, and stores by content.
                headers = {"x-accuracy": accuracy, "x-model-sha256": info.sha256}
                resp = await r.client.put(f"/models/{info.name}", content=data, timeout=120.0, headers=headers)
                resp.raise_for_status()
            except httpx.HTTPError as exc:
                failed.append(f"{r.role.value}: {exc}")

        await asyncio.gather(*(one(r) for r in self.runners.values()))
        await self.refresh()
        self._bump()
        return failed
