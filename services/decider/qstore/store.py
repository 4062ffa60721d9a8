"""``QStore``: the Redis-backed Q table, a row cache kept in step with Redis.

The facade wires the parts (see the package docstring for the protocol): the cache itself
(``RowCache``: rows, visits, entry index, ``writes``), the write-behind ``UpdateWriter``, the
``CacheSync`` that applies other processes' writes, and the bulk ``TableAdmin``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from services.common.logging import log_event
from services.core.policies.qlearning import (
    PolicyView,
    QTableExport,
    QUpdate,
    RowCache,
    TableParams,
    valid_device,
)
from services.core.state import N_STATES
from services.decider.qstore.actions import ActionSet
from services.decider.qstore.admin import TableAdmin
from services.decider.qstore.invalidation import CacheSync
from services.decider.qstore.keys import Keys
from services.decider.qstore.models import ImportResult, QTableStats, ResetResult, TransferResult
from services.decider.qstore.writer import UpdateWriter

if TYPE_CHECKING:
    from services.decider.metrics import QStoreMetrics

log = logging.getLogger("autoscale.qstore")

PAPER_MEMORY_BYTES = 400_000  # Sec. VI-C: "The memory requirement of AutoScale is 0.4 MB"


class QStore(RowCache):
    """Redis-backed Q table + local cache; a ``RowSource`` for ``QLearningPolicy``.

    The store *is* its cache (a ``RowCache`` subclass, not a wrapper): ``row``, ``visits``,
    ``writes`` and ``entries`` are read on every decision, and reading them here costs no extra
    call or property.

    Lifecycle: ``await start()`` (loads the cache, subscribes, starts the workers and the sync
    task) ... ``await stop(flush_timeout)`` (drains the queue, then stops). ``row``, ``visits``,
    ``learn`` and ``submit`` are synchronous and never touch the network. ``start`` needs Redis;
    after that the store outlives Redis outages: decisions read the cache, updates wait in the
    writer's buffer (``queue_max``) and are delivered, retried for as long as it takes
    (``retry_attempts=None``), when Redis is back.

    ``learning_rate``/``discount``/``seed`` are the table's nominal parameters, recorded in
    exports and stats; each ``QUpdate`` carries the lr/discount it is applied with (the
    policy's ``QParams``, built from the same settings).
    """

    def __init__(
        self,
        redis: aioredis.Redis | str,
        device: str,
        *,
        learning_rate: float = 0.9,
        discount: float = 0.1,
        seed: int | None = None,
        actions: Iterable[str] | None = None,
        queue_max: int = 100_000,
        batch_max: int = 256,
        workers: int = 1,
        sync_interval_s: float = 1.0,
        retry_attempts: int | None = None,
        retry_max_wait_s: float = 2.0,
        replay_window_s: float = 5.0,
        flush_interval_s: float = 0.0,
        metrics: QStoreMetrics | None = None,
    ) -> None:
        if not valid_device(device):
            raise ValueError(f"invalid device name {device!r}")
        super().__init__()
        self._owns_client = isinstance(redis, str)
        self._r: aioredis.Redis = aioredis.Redis.from_url(redis) if isinstance(redis, str) else redis
        self.device = device
        self.keys = Keys(device)
        self.learning_rate = learning_rate
        self.discount = discount
        self.seed = seed
        self.workers = max(1, workers)
        if metrics is None:
            from services.decider.metrics import decider_metrics  # Prometheus only where served

            metrics = decider_metrics
        self._metrics: QStoreMetrics = metrics
        self._actions = ActionSet(actions)
        self.sync = CacheSync(
            self._r, self.keys, self, metrics, sync_interval_s=sync_interval_s, on_tick=self._publish_gauges
        )
        self.writer = UpdateWriter(
            self._r,
            self.keys,
            self._actions,
            metrics,
            on_applied=self.sync.apply_write,
            on_lost=self.sync.mark_lost,
            queue_max=queue_max,
            batch_max=batch_max,
            retry_attempts=retry_attempts,
            retry_max_wait_s=retry_max_wait_s,
            replay_window_s=replay_window_s,
            flush_interval_s=flush_interval_s,
        )
        self.admin = TableAdmin(
            self._r,
            self.keys,
            self._actions,
            TableParams(learning_rate=learning_rate, discount=discount, seed=seed),
            reload=self.sync.reload,
        )
        # Enqueue for Redis; returns at once, safe from any thread. The writer's method itself:
        # learn() calls it on every training step.
        self.submit: Callable[[QUpdate], None] = self.writer.submit
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._memory_bytes = 0  # Redis's, as of the last stats()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._started:
            return
        self.writer.bind_loop()
        # Fail the start (not the first request) when Redis is unreachable.
        await self._r.ping()
        await self.writer.load_script()
        self._metrics.set_redis_up(True)
        if self._actions.known:
            await self._actions.sync(self._r, self.keys)
        self._tasks.append(asyncio.create_task(self.sync.listen(), name=f"qstore-listen-{self.device}"))
        try:
            # Subscribe before the initial load so nothing written in between is missed.
            await asyncio.wait_for(self.sync.ready.wait(), timeout=10.0)
            await self.sync.reconcile()
        except BaseException:
            await self.stop()
            raise
        self._tasks.extend(self.writer.spawn(self.workers))
        self._tasks.append(asyncio.create_task(self.sync.run(), name=f"qstore-sync-{self.device}"))
        self._started = self.sync.live = True
        log_event(log, "q-table store started", device=self.device, states=len(self.q), version=self.sync.version_seen)

    async def flush(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109  # answers False, never raises
        """Wait until every submitted update has been applied (or dropped). False on timeout."""
        return await self.writer.flush(timeout)

    async def stop(self, flush_timeout: float = 5.0) -> None:
        if self._started:
            flushed = await self.flush(flush_timeout)
            if not flushed:
                log_event(
                    log,
                    "q-table store stopped with updates still queued",
                    logging.WARNING,
                    device=self.device,
                    queued=self.writer.queue_depth,
                )
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            # Bounded: a task stuck in a socket call must not hang the decider's shutdown.
            _, pending = await asyncio.wait(self._tasks, timeout=5.0)
            if pending:
                log_event(
                    log,
                    "q-table store tasks did not stop in time",
                    logging.WARNING,
                    device=self.device,
                    tasks=[t.get_name() for t in pending],
                )
        self._tasks.clear()
        self._started = self.sync.live = False
        if self._owns_client:
            await self._r.aclose()

    async def wait_synced(self, timeout: float = 2.0) -> bool:  # noqa: ASYNC109  # answers False, never raises
        """Test/bench helper: wait until this cache has seen every write made so far."""
        return await self.sync.wait_synced(timeout)

    # ------------------------------------------------------------------ decision path (no I/O)
    def learn(self, update: QUpdate, next_max: float | None = None) -> None:
        """Apply to the cached row now (this process learns immediately), persist in background.
        ``next_max``: the caller's max over the S' row, if it has it (see ``apply_update``)."""
        RowCache.learn(self, update, next_max)
        self.submit(update)

    @property
    def redis(self) -> aioredis.Redis:
        """The client this store uses (health checks)."""
        return self._r

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(self._actions.known)

    # ------------------------------------------------------------------ counters
    @property
    def submitted_total(self) -> int:
        return self.writer.submitted_total

    @property
    def applied_total(self) -> int:
        return self.writer.applied_total

    @property
    def dropped_total(self) -> int:
        return self.writer.dropped_total

    @property
    def duplicates_total(self) -> int:
        return self.writer.duplicates_total

    @property
    def lost_total(self) -> int:
        return self.writer.lost_total

    @property
    def replayed_total(self) -> int:
        return self.writer.replayed_total

    @property
    def reconciles_total(self) -> int:
        return self.sync.reconciles_total

    @property
    def refetches_total(self) -> int:
        return self.sync.refetches_total

    # ------------------------------------------------------------------ bulk operations
    async def export(self) -> QTableExport:
        """The whole table, from Redis (authoritative), in the export format."""
        return await self.admin.export()

    async def import_(self, data: object, mode: str = "replace") -> ImportResult:
        """Load an export (``replace`` or ``merge``); see ``TableAdmin.import_``."""
        return await self.admin.import_(data, mode)

    async def reset(self) -> ResetResult:
        """Forget everything learned on this device (the action set is kept)."""
        return await self.admin.reset()

    async def transfer(
        self, source: str | Mapping[str, Any] | QTableExport, to_device: str | None = None
    ) -> TransferResult:
        """The paper's transfer learning (Sec. VI-C); see ``TableAdmin.transfer``."""
        return await self.admin.transfer(source, to_device)

    async def device_actions(self, device: str) -> set[str]:
        return await self.admin.device_actions(device)

    async def policy_view(self) -> PolicyView:
        """Best action per stored state (by Q among the learned entries), visits and Q values."""
        return await self.admin.policy_view()

    # ------------------------------------------------------------------ introspection
    def cache_bytes(self) -> int:
        """Approximate bytes of the cache: rows, visits and the row versions."""
        ver = self.sync.versions
        return super().cache_bytes() + sys.getsizeof(ver) + 28 * len(ver)

    def _publish_gauges(self) -> None:
        self._metrics.set_qtable(
            states=len(self.q),
            entries=sum(len(r) for r in self.q.values()),
            bytes_=self._memory_bytes or self.cache_bytes(),
        )

    async def stats(self) -> QTableStats:
        """Table size in Redis and in this process, against the paper's 0.4 MB."""
        states, _ = await self.admin.read_table()
        mem, table_mem, nkeys = await self.admin.memory_usage()
        version = int(await self._r.get(self.keys.version) or 0)
        self._memory_bytes = mem
        entries = sum(len(r) for r in states.values())
        cache_bytes = self.cache_bytes()
        self._metrics.set_qtable(states=len(states), entries=entries, bytes_=mem)
        w = self.writer
        return QTableStats(
            device=self.device,
            states=len(states),
            states_visited=sum(1 for r in states.values() if any(n > 0 for _, n in r.values())),
            state_space=N_STATES,
            entries=entries,
            visits_total=sum(n for r in states.values() for _, n in r.values()),
            version=version,
            actions=len(self._actions.known),
            redis_memory_bytes=mem,
            redis_table_bytes=table_mem,
            redis_keys=nkeys,
            cache_states=len(self.q),
            cache_entries=sum(len(r) for r in self.q.values()),
            cache_bytes=cache_bytes,
            paper_memory_bytes=PAPER_MEMORY_BYTES,
            redis_vs_paper=mem / PAPER_MEMORY_BYTES,
            cache_vs_paper=cache_bytes / PAPER_MEMORY_BYTES,
            queue_depth=w.queue_depth,
            submitted_total=w.submitted_total,
            applied_total=w.applied_total,
            dropped_total=w.dropped_total,
            duplicates_total=w.duplicates_total,
            reconciles_total=self.sync.reconciles_total,
            version_seen=self.sync.version_seen,
            replayed_total=w.replayed_total,
            lost_total=w.lost_total,
        )
