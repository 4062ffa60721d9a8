"""The write-behind writer: Q updates from the request path to Redis, in the background.

``submit`` appends to a bounded buffer and returns at once (safe from any thread). Worker tasks
drain the buffer in batches, one ``UPDATE_LUA`` call each, at most one call per
``flush_interval_s`` (the decider's ``AUTOSCALE_QTABLE_FLUSH_INTERVAL_MS``). No learning is lost while Redis is
away: a batch is retried with capped exponential backoff (tenacity) until Redis answers, while
decisions go on from the cache and new updates wait in the buffer (when it is full the oldest is
dropped and counted). Each worker stamps its updates with (token, seq), so the script skips one it
has already applied (a retry after a reply was lost cannot double-apply) and refuses one that
follows a gap: Redis no longer holds updates it acknowledged, i.e. it restarted without them (AOF
``everysec`` can lose the last second or two). The worker keeps what it delivered in the last
``replay_window_s`` and replays it, under a fresh token, before the batch; what the window no
longer holds is counted lost. What Redis answers goes to ``on_applied`` (the cache takes the
confirmed value); a dropped update is counted, logged and handed to ``on_lost`` (its row is
refetched).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential,
)

from services.common.logging import log_event
from services.core.policies.qlearning import QUpdate
from services.decider.qstore.actions import ActionSet
from services.decider.qstore.codec import decode_update_reply, update_args, update_gap, update_keys
from services.decider.qstore.keys import UPDATE_LUA, UPDATE_SHA, Keys

if TYPE_CHECKING:
    from services.decider.metrics import QStoreMetrics

log = logging.getLogger("autoscale.qstore")


class _ScriptMissing(ConnectionError):
    """Redis restarted and lost its script cache: retry the batch after loading."""


_RETRYABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)

# (update, Q, visits, version, previous version of the row) of an update Redis applied.
OnApplied = Callable[[QUpdate, float, int, int, int], None]
Stamped = list[tuple[int, QUpdate]]  # (seq, update)


def _new_token() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class _Lane:
    """One worker's idempotency stamp and the updates it delivered recently (for a replay)."""

    token: str = field(default_factory=_new_token)
    seq: int = 0
    delivered: deque[tuple[int, float, QUpdate]] = field(default_factory=deque)  # (seq, acked at, update)

    def stamp(self, batch: Sequence[QUpdate]) -> Stamped:
        out = list(zip(range(self.seq + 1, self.seq + 1 + len(batch)), batch, strict=True))
        self.seq += len(batch)
        return out

    def renew(self) -> None:
        """A fresh token: nothing of it has been applied anywhere, so no gap can be inherited."""
        self.token, self.seq = _new_token(), 0
        self.delivered.clear()

    def remember(self, stamped: Stamped, now: float, window_s: float, max_n: int) -> None:
        if window_s <= 0:
            return
        d = self.delivered
        d.extend((s, now, u) for s, u in stamped)
        while d and (len(d) > max_n or now - d[0][1] > window_s):
            d.popleft()

    def since(self, last: int) -> Stamped:
        return [(s, u) for s, _, u in self.delivered if s > last]


class UpdateWriter:
    """Bounded buffer + worker tasks that apply Q updates to Redis; counts what happened to each.

    ``retry_attempts=None`` (the decider's) retries a batch until Redis answers; a number gives up
    after that many attempts and drops the batch (counted)."""

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
        retry_attempts: int | None = None,
        retry_max_wait_s: float = 2.0,
        replay_window_s: float = 5.0,
        flush_interval_s: float = 0.0,
    ) -> None:
        self._r = r
        self.keys = keys
        self._actions = actions
        self._metrics = metrics
        self._on_applied = on_applied
        self._on_lost = on_lost
        self.queue_max = queue_max
        self.batch_max = batch_max
        self.retry_attempts = retry_attempts
        self.retry_max_wait_s = retry_max_wait_s
        self.replay_window_s = replay_window_s
        self.flush_interval_s = flush_interval_s
        self._buffer: deque[QUpdate] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.submitted_total = 0
        self.applied_total = 0  # includes replayed_total
        self.dropped_total = 0
        self.duplicates_total = 0
        self.replayed_total = 0
        self.lost_total = 0
        self.outage_since: float | None = None  # monotonic; set while Redis does not answer
        self.last_error = ""
        self._drop_logged_at = 0.0

    @property
    def queue_depth(self) -> int:
        """Updates not yet confirmed by Redis: buffered plus in flight."""
        return len(self._buffer) + self._inflight

    @property
    def reachable(self) -> bool:
        return self.outage_since is None

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
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    # ------------------------------------------------------------------ request path (no I/O)
    def submit(self, update: QUpdate) -> None:
        """Buffer an update for Redis; returns at once. Safe from another thread."""
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
        if len(self._buffer) >= self.queue_max:
            self._drop([self._buffer.popleft()], "buffer full")  # the oldest goes first
        self._buffer.append(update)
        self.submitted_total += 1
        self._idle.clear()
        self._wake.set()

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
        lane = _Lane()
        buf = self._buffer
        last_write = -math.inf
        while True:
            while not buf:
                self._wake.clear()
                await self._wake.wait()
            # At most one write per flush interval: under load, what arrives meanwhile joins the
            # batch (each script call, invalidation message and reply costs Redis and every decider
            # a few socket wake-ups); an update after a quiet spell goes at once.
            wait = last_write + self.flush_interval_s - time.monotonic()
            if wait > 0 and len(buf) < self.batch_max:
                await asyncio.sleep(wait)
            last_write = time.monotonic()
            batch = [buf.popleft() for _ in range(min(self.batch_max, len(buf)))]
            self._inflight += len(batch)
            try:
                await self._deliver(lane, lane.stamp(batch))
            finally:
                self._inflight -= len(batch)
                if not buf and not self._inflight:
                    self._idle.set()
                self._metrics.set_pending(self.queue_depth)

    async def _deliver(self, lane: _Lane, stamped: Stamped) -> None:
        """Apply one stamped batch (retrying as configured); replay first if Redis lost updates."""
        try:
            results = await self._apply_with_retry(lane.token, stamped)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # gave up (finite retry_attempts) or not retryable: count, log, keep serving
            self._metrics.redis_error()
            self._drop([u for _, u in stamped], f"{type(exc).__name__}: {exc}")
            lane.renew()  # its seqs may be half-applied: a fresh token keeps the gap check exact
            return
        self._reachable_again()
        gap = next((i for i, res in enumerate(results) if update_gap(res) is not None), None)
        self._absorb(lane, stamped[:gap], results[:gap])
        if gap is not None:
            last = update_gap(results[gap])
            assert last is not None
            await self._replay(lane, stamped[gap:], last)
            return
        if self._actions.unsynced():
            with contextlib.suppress(RedisError):  # the device's action set, for transfers (best effort)
                await self._actions.sync(self._r, self.keys)

    async def _replay(self, lane: _Lane, pending: Stamped, last: int) -> None:
        """Redis holds this lane's updates only up to ``last``: apply again what it lost (still in
        the window) and then ``pending``, under a fresh token; count what the window lost."""
        replay = lane.since(last)
        first = (replay or pending)[0][0]
        lost = first - last - 1
        if lost > 0:
            self.lost_total += lost
            self._metrics.updates_lost(lost)
        self.replayed_total += len(replay)
        self._metrics.updates_replayed(len(replay))
        log_event(
            log,
            "q-table store lost acknowledged updates (restarted without them): replaying",
            logging.WARNING,
            device=self.keys.device,
            replayed=len(replay),
            lost=lost,
            redis_last_seq=last,
        )
        lane.renew()
        items = [u for _, u in replay] + [u for _, u in pending]
        for i in range(0, len(items), self.batch_max):
            await self._deliver(lane, lane.stamp(items[i : i + self.batch_max]))

    async def _apply_with_retry(self, token: str, stamped: Stamped) -> list[Any]:
        stop = stop_never if self.retry_attempts is None else stop_after_attempt(self.retry_attempts)
        async for attempt in AsyncRetrying(
            stop=stop,
            wait=wait_exponential(multiplier=0.05, max=self.retry_max_wait_s),
            retry=retry_if_exception_type(_RETRYABLE),
            before_sleep=self._unreachable,
            reraise=True,
        ):
            with attempt:
                return await self.apply_batch(token, [s for s, _ in stamped], [u for _, u in stamped])
        raise AssertionError("unreachable")

    def _unreachable(self, state: RetryCallState) -> None:
        """Before each retry's wait: Redis did not answer. Logged once per outage, counted each time."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _ScriptMissing):
            return  # Redis answered; the retry loads the script
        self._metrics.redis_error()
        self._metrics.set_redis_up(False)
        self._metrics.set_pending(self.queue_depth)
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            log_event(
                log,
                "q-table store unreachable: deciding from the cache, holding updates",
                logging.WARNING,
                device=self.keys.device,
                error=self.last_error,
                held=self.queue_depth,
            )

    def _reachable_again(self) -> None:
        if self.outage_since is not None:
            log_event(
                log,
                "q-table store reachable again: delivering held updates",
                device=self.keys.device,
                outage_s=round(time.monotonic() - self.outage_since, 3),
                held=self.queue_depth,
                dropped_total=self.dropped_total,
            )
            self.outage_since = None
        self._metrics.set_redis_up(True)

    async def apply_batch(self, token: str, seqs: list[int], batch: list[QUpdate]) -> list[Any]:
        """One script call applying ``batch`` in order (no retry): the script's reply for each
        update, or the error of a script that failed (for each: they count as lost).

        One call, one argument and one invalidation message for the batch, instead of a call of ~20
        arguments and up to three messages per update: redis-py's per-argument packing and per-reply
        and per-message parsing were most of what learning cost the decider per request."""
        ks = update_keys(self.keys)
        blocks = [update_args(self.keys, u, token, seq) for seq, u in zip(seqs, batch, strict=True)]
        # One JSON argument: redis-py packs each argument in Python (~20 per update), json.dumps in C.
        argv = [json.dumps(blocks)]
        try:
            # Plain EVALSHA: a registered Script would ask SCRIPT EXISTS first (a second round
            # trip). A Redis that lost its script cache answers NOSCRIPT: load and retry the
            # batch (the seq check makes the retry exact).
            results: list[Any] = await self._r.evalsha(UPDATE_SHA, len(ks), *ks, *argv)
        except NoScriptError:
            await self._r.script_load(UPDATE_LUA)
            raise _ScriptMissing("update script not loaded") from None
        except ResponseError as exc:  # the script failed: what it applied before stays, its rows are refetched
            return [exc] * len(batch)
        return results

    def _absorb(self, lane: _Lane, stamped: Stamped, results: Sequence[Any]) -> None:
        """Hand each applied value to the cache, count it, and remember it for a replay."""
        ok: Stamped = []
        for (seq, u), res in zip(stamped, results, strict=True):
            if isinstance(res, Exception):  # a script error (not retryable): this update is lost
                self._drop([u], f"{type(res).__name__}: {res}")
                continue
            ok.append((seq, u))
            self.applied_total += 1
            applied = decode_update_reply(res)
            if applied is None:  # already applied by an earlier attempt
                self.duplicates_total += 1
                continue
            q, n, ver, prev = applied
            self._on_applied(u, q, n, ver, prev)
        lane.remember(ok, time.monotonic(), self.replay_window_s, self.queue_max)
