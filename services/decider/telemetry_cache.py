"""The decider's in-memory copy of the telemetry snapshot, refreshed in the background.

Requests read `current()` (no I/O); a task polls the telemetry service every
``telemetry_refresh_s``. If telemetry is unreachable the last snapshot is kept and aged; after
``stale_after_s`` (``telemetry_stale_intervals`` refreshes) without a reading it is *stale*:
decisions go on with it, but the answer, the metric and ``/readyz`` say so, and the decider
learns nothing from a stale state (``InferenceService.learn``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import httpx

from services.common.logging import log_event
from services.core.schemas import RuntimeConditions, TelemetrySnapshot
from services.decider.metrics import decider_metrics

log = logging.getLogger("autoscale.decider.telemetry")


@dataclass
class TelemetryCache:
    client: httpx.AsyncClient
    refresh_s: float
    stale_after_s: float = 1.5
    snapshot: TelemetrySnapshot | None = None
    received_at: float = 0.0  # monotonic
    failures: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def current(self) -> TelemetrySnapshot:
        if self.snapshot is None:
            # Before the first reading: Table I's "no variance" state, labelled as a default.
            return TelemetrySnapshot(conditions=RuntimeConditions(), readings={}, scenario="default")
        return self.snapshot

    @property
    def age_s(self) -> float:
        """Seconds since the decider received its snapshot (inf before the first)."""
        return time.monotonic() - self.received_at if self.snapshot else float("inf")

    def is_stale(self, age_s: float | None = None) -> bool:
        return (self.age_s if age_s is None else age_s) > self.stale_after_s

    def publish(self) -> None:
        age = self.age_s
        decider_metrics.set_telemetry(stale=self.is_stale(age), age_s=age)

    async def refresh(self) -> bool:
        try:
            resp = await self.client.get("/state")
            resp.raise_for_status()
            self.snapshot = TelemetrySnapshot.model_validate_json(resp.content)
            self.received_at = time.monotonic()
            if self.failures:
                log_event(log, "telemetry refresh recovered", failures=self.failures)
            self.failures = 0
            return True
        except (httpx.HTTPError, ValueError) as exc:
            self.failures += 1
            if self.failures in (1, 10) or self.failures % 100 == 0:
                log_event(
                    log, "telemetry refresh failed", level=logging.WARNING, error=str(exc), failures=self.failures
                )
            return False

    async def _loop(self) -> None:
        while True:
            await self.refresh()
            self.publish()
            await asyncio.sleep(self.refresh_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="telemetry-refresh")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
