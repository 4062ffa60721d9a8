"""The decider's in-memory copy of the telemetry snapshot, refreshed in the background.

Requests read `current()` (no I/O); a task polls the telemetry service every
``telemetry_refresh_s``. If telemetry is unreachable the last snapshot is kept and aged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import httpx

from services.common.logging import log_event
from services.core.schemas import RuntimeConditions, TelemetrySnapshot

log = logging.getLogger("autoscale.decider.telemetry")


@dataclass
class TelemetryCache:
    client: httpx.AsyncClient
    refresh_s: float
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
        return time.monotonic() - self.received_at if self.snapshot else float("inf")

    async def refresh(self) -> bool:
        try:
            resp = await self.client.get("/state")
            resp.raise_for_status()
            self.snapshot = TelemetrySnapshot.model_validate_json(resp.content)
            self.received_at = time.monotonic()
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
            await asyncio.sleep(self.refresh_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="telemetry-refresh")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
