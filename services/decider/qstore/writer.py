"""The write-behind writer: Q updates from the request path to Redis, in the background.

``submit`` enqueues and returns at once (safe from any thread). Worker tasks drain the queue
in pipelined batches of ``UPDATE_LUA`` calls, retrying a batch with backoff (tenacity) on
connection errors; each worker stamps its updates with (token, seq) so that the script skips
one it has already applied and a retry after a reply was lost cannot double-apply. What Redis
answers goes to ``on_applied`` (the cache takes the confirmed value); an update the writer
gives up on is counted, logged and handed to ``on_lost`` (its row is refetched).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.logging import log_event
from services.core.policies.qlearning import QUpdate
from services.decider.qstore.actions import ActionSet
from services.decider.qstore.codec import decode_update_reply, update_keys_args
from services.decider.qstore.keys import UPDATE_LUA, UPDATE_SHA, Keys

if TYPE_CHECKING:
    from services.decider.metrics import QStoreMetrics

log = logging.getLogger("autoscale.qstore")


class _ScriptMissing(ConnectionError):
    """Redis restarted and lost its script cache: retry the batch after loading."""


_RETRYABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)

# (update, Q, visits, version, previous version of the row) of an update Redis applied.
OnApplied = Callable[[QUpdate, float, int, int, int], None]


class UpdateWriter:
    """Queue + worker tasks that apply Q updates to Redis; counts what happened to each."""

    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        actions: ActionSet,
        metrics: QStoreMetrics,
        *,
        on_applied: OnApplied,
        on_lost: Callable[[Iterable[int]], None],
        queue_max: int = 100_000,
        batch_max: int = 256,
        retry_attempts: int = 6,
        retry_max_wait_s: float = 2.0,
    ) -> None:
        self._r = r
        self.keys = keys
        self._actions = actions
        self._metrics = metrics
        self._on_applied = on_applied
        self._on_lost = on_lost
        self.batch_max = batch_max
        self.retry_attempts = retry_attempts
        self.retry_max_wait_s = retry_max_wait_s
        self._queue: asyncio.Queue[QUpdate] = asyncio.Queue(maxsize=queue_max)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.submitted_total = 0
        self.applied_total = 0
        self.dropped_total = 0
        self.duplicates_total = 0
        self._drop_logged_at = 0.0

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # ------------------------------------------------------------------ lifecycle
    def bind_loop(self) -> None:
        """Submissions from other threads go through the running loop from now on."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    async def load_script(self) -> None:
        await self._r.script_load(UPDATE_LUA)

    def spawn(self, workers: int) -> list[asyncio.Task[None]]:
        """Start ``workers`` worker tasks on the running loop; the caller cancels them."""
        name = self.keys.device
        return [asyncio.create_task(self._worker(), name=f"qstore-worker-{name}-{i}") for i in range(workers)]

    async def flush(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109  # answers False, never raises
        """Wait until every submitted update has been applied (or dropped). False on timeout."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    # ------------------------------------------------------------------ request path (no I/O)
    def submit(self, update: QUpdate) -> None:
        """Enqueue an update for Redis; returns at once. Safe from another thread."""
        acts = self._actions
        if update.next_actions is not acts.last_next:
            # The candidate tuple is reused between requests: one set update per new tuple.
            acts.last_next = update.next_actions
            acts.known.update(update.next_actions)
        acts.known.add(update.action)
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._enqueue, update)
        else:
            self._enqueue(update)

    def _enqueue(self, update: QUpdate) -> None:
        try:
            self._queue.put_nowait(update)
            self.submitted_total += 1
        except asyncio.QueueFull:
            self._drop([update], "queue full")

    def _drop(self, updates: list[QUpdate], why: str) -> None:
        self.dropped_total += len(updates)
        for _ in updates:
            self._metrics.update_dropped()
        # The provisional cached values were never persisted: their rows are refetched.
        self._on_lost([u.state for u in updates])
        now = time.monotonic()
        if now - self._drop_logged_at > 5.0:  # one line per 5 s, not one per update
            self._drop_logged_at = now
            log_event(
                log,
                "q updates dropped",
                logging.WARNING,
                device=self.keys.device,
                count=len(updates),
                reason=why,
                dropped_total=self.dropped_total,
            )

    # ------------------------------------------------------------------ worker
    async def _worker(self) -> None:
        token = uuid.uuid4().hex[:16]
        seq = 0
        q = self._queue
        while True:
            first = await q.get()
            batch = [first]
            while len(batch) < self.batch_max:
                try:
                    batch.append(q.get_nowait())
                except asyncio.QueueEmpty:
                    break
            seqs = list(range(seq + 1, seq + 1 + len(batch)))
            seq += len(batch)
            try:
                results = await self._apply_with_retry(token, seqs, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # gave up: count, log, keep serving
                self._metrics.redis_error()
                self._metrics.set_redis_up(False)
                self._drop(batch, f"{type(exc).__name__}: {exc}")
            else:
                self._metrics.set_redis_up(True)
                for u, res in zip(batch, results, strict=True):
                    self._absorb(u, res)
                if self._actions.unsynced():
                    with contextlib.suppress(RedisError):  # the device's action set, for transfers (best effort)
                        await self._actions.sync(self._r, self.keys)
            finally:
                for _ in batch:
                    q.task_done()

    async def _apply_with_retry(self, token: str, seqs: list[int], batch: list[QUpdate]) -> list[Any]:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.retry_attempts),
            wait=wait_exponential(multiplier=0.05, max=self.retry_max_wait_s),
            retry=retry_if_exception_type(_RETRYABLE),
            reraise=True,
        ):
            with attempt:
                return await self.apply_batch(token, seqs, batch)
        raise AssertionError("unreachable")

    async def apply_batch(self, token: str, seqs: list[int], batch: list[QUpdate]) -> list[Any]:
        """One pipelined round trip applying ``batch`` (no retry): the script's replies, or the
        exception of an update the script refused."""
        async with self._r.pipeline(transaction=False) as pipe:
            for seq, u in zip(seqs, batch, strict=True):
                ks, args = update_keys_args(self.keys, u, token, seq)
                # Plain EVALSHA: a registered Script would make every pipeline ask SCRIPT
                # EXISTS first (a second round trip per batch). A Redis that lost its script
                # cache answers NOSCRIPT: load and retry the batch (the seq check makes the
                # retry exact).
                pipe.evalsha(UPDATE_SHA, len(ks), *ks, *args)
            results = await pipe.execute(raise_on_error=False)
        if any(isinstance(x, NoScriptError) for x in results):
            await self._r.script_load(UPDATE_LUA)
            raise _ScriptMissing("update script not loaded")
        return results

    def _absorb(self, u: QUpdate, res: Any) -> None:
        if isinstance(res, Exception):  # a script error (not retryable): this update is lost
            self._drop([u], f"{type(res).__name__}: {res}")
            return
        self.applied_total += 1
        applied = decode_update_reply(res)
        if applied is None:  # already applied by an earlier attempt
            self.duplicates_total += 1
            return
        q, n, ver, prev = applied
        self._on_applied(u, q, n, ver, prev)
