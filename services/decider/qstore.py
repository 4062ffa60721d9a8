"""The Q table in Redis, with a local cache so decisions never wait for Redis.

Layout, one namespace per device profile (the phone the decider serves), so a table can be
transferred between devices. The device name sits in a Redis Cluster hash tag (``{...}``):
every key of a device lands in one slot and the multi-key Lua scripts stay legal on a cluster.

    autoscale:{mi8pro}:q:<state>   hash  action id -> Q value ("%.17g", exact round trip)
    autoscale:{mi8pro}:n:<state>   hash  action id -> visits
    autoscale:{mi8pro}:ver         hash  state -> version of its last write
    autoscale:{mi8pro}:version     int   global write counter (never reset)
    autoscale:{mi8pro}:applied     hash  worker token -> last applied sequence (idempotent retries)
    autoscale:{mi8pro}:actions     set   action ids this device has offered
    autoscale:{mi8pro}:inval       pub/sub channel of invalidations

Writes
    One Q update = one Lua script (``_UPDATE_LUA``): read Q(S,A) and the S' row, apply
    Algorithm 1 with the lr/discount passed in ARGV, HINCRBY the visits, bump the version and
    PUBLISH the new value. Redis runs a script atomically, so concurrent updates from any
    number of decider processes are all applied (no lost update). Each worker stamps its
    updates with (token, seq); the script skips a seq it has already applied, so a retry after
    a connection error that hit *after* the script ran cannot double-apply.

    ``learn(update)`` (the policy's path) changes the cached row at once -- the next decision in
    this process already sees it -- and enqueues the update; it never blocks. An asyncio worker
    drains the queue in pipelined batches, retrying with backoff (tenacity); an update it finally
    gives up on is counted in ``dropped_total`` (and the Prometheus counter) and logged.

Initial values (what a missing field is worth)
    The script never computes one: ``ARGV[6]`` (Q(S,A)) and the pairs after ``ARGV[9]`` (the S'
    row) carry the values the *calling process* used for missing fields, and the script applies
    the update to them only when the field is absent. With ``q_init="random"`` they are a pure
    hash of (seed, state, action), identical in every process. With ``q_init="nearest"`` they are
    read from the caller's cache (the nearest state holding the action, rescaled -- see
    ``qlearning.EntryIndex``); two processes whose caches momentarily differ may propose
    different values for the same missing field, and the first update that reaches Redis
    materialises it, after which every process reads the stored value. ``self.entries`` (an
    ``EntryIndex``) is kept in step with every change of the cache's entry set. With
    ``lr_schedule="visits"`` the learning rate in ``ARGV[4]`` comes from the caller's cached
    visit count (1 / (n + 1), floored); a count that is one or two updates stale only changes the
    weight of one sample slightly.

Reads
    ``row(state)`` is a dict lookup in the cache: no Redis call on the decision path. The cache
    is loaded at start and kept fresh by the pub/sub messages, which carry the new value, so
    most invalidations are applied in place with no round trip. Every write has a unique
    increasing version; a gap in the versions seen on the channel (a lost message, a
    reconnect) triggers a reconcile against the per-state versions, and a periodic check of
    the global version (one GET per ``sync_interval_s``) is the safety net behind that.

Bulk operations (import, reset, transfer) validate fully first, then write in one MULTI/EXEC
and publish a "reload" message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.logging import log_event
from services.core.policies.qlearning import (
    EXPORT_FORMAT_VERSION,
    EntryIndex,
    QTableImportError,
    QUpdate,
    ValidatedTable,
    apply_update,
    transfer_table,
    valid_device,
    validate_export,
)
from services.core.state import N_STATES, StateBins

log = logging.getLogger("autoscale.qstore")

PAPER_MEMORY_BYTES = 400_000  # Sec. VI-C: "The memory requirement of AutoScale is 0.4 MB"

# Q values are stored with 17 significant digits: a double survives the text round trip
# exactly, so Python and Lua compute bit-identical updates.
_UPDATE_LUA = """
-- KEYS: 1 q(S)  2 n(S)  3 q(S')  4 ver  5 version  6 applied
-- ARGV: 1 state  2 action  3 reward  4 lr  5 discount  6 init  7 token  8 seq  9 channel
--       10.. pairs (next action, its initial value)
local seq = tonumber(ARGV[8])
local last = redis.call('HGET', KEYS[6], ARGV[7])
if last and tonumber(last) >= seq then
  return {'dup'}
end
redis.call('HSET', KEYS[6], ARGV[7], ARGV[8])
local q = redis.call('HGET', KEYS[1], ARGV[2])
if q then q = tonumber(q) else q = tonumber(ARGV[6]) end
local best = 0
if #ARGV >= 10 then
  local names = {}
  for i = 10, #ARGV, 2 do names[#names + 1] = ARGV[i] end
  local got = redis.call('HMGET', KEYS[3], unpack(names))
  for j = 1, #names do
    local v = got[j]
    if v then v = tonumber(v) else v = tonumber(ARGV[9 + 2 * j]) end
    if j == 1 or v > best then best = v end
  end
end
local new = q + tonumber(ARGV[4]) * (tonumber(ARGV[3]) + tonumber(ARGV[5]) * best - q)
local s = string.format('%.17g', new)
redis.call('HSET', KEYS[1], ARGV[2], s)
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
local prev = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
local ver = redis.call('INCR', KEYS[5])
redis.call('HSET', KEYS[4], ARGV[1], ver)
redis.call('PUBLISH', ARGV[9], 'u|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. s .. '|' .. n .. '|' .. ver .. '|' .. prev)
return {s, n, ver, prev}
"""

# Replace mode: delete every row of the namespace (the ver hash lists them all).
_CLEAR_LUA = """
-- KEYS: 1 ver   ARGV: 1 key prefix ("autoscale:{dev}")
local states = redis.call('HKEYS', KEYS[1])
for _, s in ipairs(states) do
  redis.call('DEL', ARGV[1] .. ':q:' .. s, ARGV[1] .. ':n:' .. s)
end
redis.call('DEL', KEYS[1])
return #states
"""

# End of a bulk write: one new version for every touched state, then one reload message.
_BUMP_LUA = """
-- KEYS: 1 ver  2 version   ARGV: 1 channel, 2.. states
local v = redis.call('INCR', KEYS[2])
for i = 2, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], v)
end
redis.call('PUBLISH', ARGV[1], '*|' .. v)
return v
"""


@dataclass(frozen=True, slots=True)
class Keys:
    device: str

    @property
    def prefix(self) -> str:
        return f"autoscale:{{{self.device}}}"

    def q(self, state: int) -> str:
        return f"{self.prefix}:q:{state}"

    def n(self, state: int) -> str:
        return f"{self.prefix}:n:{state}"

    @property
    def ver(self) -> str:
        return f"{self.prefix}:ver"

    @property
    def version(self) -> str:
        return f"{self.prefix}:version"

    @property
    def applied(self) -> str:
        return f"{self.prefix}:applied"

    @property
    def actions(self) -> str:
        return f"{self.prefix}:actions"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:inval"


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


# Rows per read transaction: a full row is ~66 fields; small transactions keep each reply
# well under a second of parsing even on a loaded machine (the client's socket timeout is 5 s).
_ROWS_PER_TX = 64


class _ScriptMissing(ConnectionError):
    """Redis restarted and lost its script cache: retry the batch after loading."""


_RETRYABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)
_EMPTY: Mapping[str, float] = {}


class QStore:
    """Redis-backed Q table + local cache; a ``RowSource`` for ``QLearningPolicy``.

    Lifecycle: ``await start()`` (loads the cache, subscribes, starts the worker and the sync
    task) ... ``await stop(flush_timeout)`` (drains the queue, then stops). ``row``, ``visits``,
    ``learn`` and ``submit`` are synchronous and never touch the network.

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
        retry_attempts: int = 6,
        retry_max_wait_s: float = 2.0,
        metrics: Any | None = None,
    ) -> None:
        if not valid_device(device):
            raise ValueError(f"invalid device name {device!r}")
        self._owns_client = isinstance(redis, str)
        self._r: aioredis.Redis = aioredis.Redis.from_url(redis) if isinstance(redis, str) else redis
        self.device = device
        self.keys = Keys(device)
        self.learning_rate = learning_rate
        self.discount = discount
        self.seed = seed
        self.batch_max = batch_max
        self.workers = max(1, workers)
        self.sync_interval_s = sync_interval_s
        self.retry_attempts = retry_attempts
        self.retry_max_wait_s = retry_max_wait_s
        if metrics is None:
            from services.decider.metrics import decider_metrics

            metrics = decider_metrics
        self._metrics = metrics

        self._update_sha = hashlib.sha1(_UPDATE_LUA.encode()).hexdigest()
        self._clear_script = self._r.register_script(_CLEAR_LUA)
        self._bump_script = self._r.register_script(_BUMP_LUA)

        # Cache: state -> {action: Q}, {action: visits}, version of the row we hold.
        self._q: dict[int, dict[str, float]] = {}
        # Which entries the cache holds, for q_init="nearest" (kept in step with every change of
        # the cache's entry set; see qlearning.EntryIndex).
        self.entries = EntryIndex()
        self._n: dict[int, dict[str, int]] = {}
        self._ver: dict[int, int] = {}
        # Bumped on every change of the cache: the policy memoises the last row it read (a
        # decision and the update that follows it read the same row) keyed on this.
        self.writes = 0
        self._contig = 0  # every version <= this has been seen on the channel (or reconciled)
        self._ahead: set[int] = set()  # versions seen above _contig (out of order)
        self._last_global: int | None = None
        self._dirty: set[int] = set()
        self._full_reload = False
        self._wake = asyncio.Event()
        self._pubsub_ready = asyncio.Event()

        self._queue: asyncio.Queue[QUpdate] = asyncio.Queue(maxsize=queue_max)
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._started = False

        self._names: dict[str, str] = {}
        self._actions: set[str] = set(actions or ())
        self._actions_synced: set[str] = set()
        self._last_next_actions: tuple[str, ...] | None = None
        self._memory_bytes = 0

        self.submitted_total = 0
        self.applied_total = 0
        self.dropped_total = 0
        self.duplicates_total = 0
        self.reconciles_total = 0
        self.refetches_total = 0
        self._drop_logged_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # Fail the start (not the first request) when Redis is unreachable.
        await self._r.ping()
        await self._r.script_load(_UPDATE_LUA)
        self._metrics.set_redis_up(True)
        if self._actions:
            await self._sync_actions()
        self._tasks.append(asyncio.create_task(self._listen(), name=f"qstore-listen-{self.device}"))
        try:
            # Subscribe before the initial load so nothing written in between is missed.
            await asyncio.wait_for(self._pubsub_ready.wait(), timeout=10.0)
            await self._reconcile()
        except BaseException:
            await self.stop()
            raise
        for i in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"qstore-worker-{self.device}-{i}"))
        self._tasks.append(asyncio.create_task(self._sync_loop(), name=f"qstore-sync-{self.device}"))
        self._started = True
        log_event(log, "q-table store started", device=self.device, states=len(self._q), version=self._contig)

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every submitted update has been applied (or dropped). False on timeout."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self, flush_timeout: float = 5.0) -> None:
        if self._started:
            flushed = await self.flush(flush_timeout)
            if not flushed:
                log_event(
                    log,
                    "q-table store stopped with updates still queued",
                    logging.WARNING,
                    device=self.device,
                    queued=self._queue.qsize(),
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
        self._started = False
        if self._owns_client:
            await self._r.aclose()

    # ------------------------------------------------------------------ decision path (no I/O)
    def row(self, state: int) -> Mapping[str, float]:
        return self._q.get(state, _EMPTY)

    def visits(self, state: int) -> Mapping[str, int]:
        return self._n.get(state, {})  # type: ignore[return-value]

    @property
    def redis(self) -> aioredis.Redis:
        """The client this store uses (health checks)."""
        return self._r

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(self._actions)

    def learn(self, update: QUpdate, next_max: float | None = None) -> None:
        """Apply to the cached row now (this process learns immediately), persist in background.
        ``next_max``: the caller's max over the S' row, if it has it (see ``apply_update``)."""
        new = apply_update(self._q.get(update.state, _EMPTY), self._q.get(update.next_state, _EMPTY), update, next_max)
        row = self._q.setdefault(update.state, {})
        if update.action not in row:
            self.entries.add(update.state, update.action)
        row[update.action] = new
        nrow = self._n.setdefault(update.state, {})
        nrow[update.action] = nrow.get(update.action, 0) + 1
        self.writes += 1
        self.submit(update)

    def submit(self, update: QUpdate) -> None:
        """Enqueue an update for Redis; returns at once. Safe from another thread."""
        if update.next_actions is not self._last_next_actions:
            # The candidate tuple is reused between requests: one set update per new tuple.
            self._last_next_actions = update.next_actions
            self._actions.update(update.next_actions)
        self._actions.add(update.action)
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
        for u in updates:
            self._metrics.update_dropped()
            # The provisional cached value was never persisted: refetch the row.
            self._dirty.add(u.state)
        self._wake.set()
        now = time.monotonic()
        if now - self._drop_logged_at > 5.0:  # one line per 5 s, not one per update
            self._drop_logged_at = now
            log_event(
                log,
                "q updates dropped",
                logging.WARNING,
                device=self.device,
                count=len(updates),
                reason=why,
                dropped_total=self.dropped_total,
            )

    # ------------------------------------------------------------------ update worker
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
                for u, res in zip(batch, results):
                    self._absorb(u, res)
                if self._actions - self._actions_synced:
                    try:  # the device's action set, for transfers (best effort)
                        await self._sync_actions()
                    except RedisError:
                        pass
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
                return await self._apply_batch(token, seqs, batch)
        raise AssertionError("unreachable")

    async def _apply_batch(self, token: str, seqs: list[int], batch: list[QUpdate]) -> list[Any]:
        k = self.keys
        async with self._r.pipeline(transaction=False) as pipe:
            for seq, u in zip(seqs, batch):
                args: list[Any] = [
                    u.state,
                    u.action,
                    repr(u.reward),
                    repr(u.learning_rate),
                    repr(u.discount),
                    repr(u.init),
                    token,
                    seq,
                    k.channel,
                ]
                for a, init in zip(u.next_actions, u.next_inits):
                    args.append(a)
                    args.append(repr(init))
                # Plain EVALSHA: a registered Script would make every pipeline ask SCRIPT
                # EXISTS first (a second round trip per batch). A Redis that lost its script
                # cache answers NOSCRIPT: load and retry the batch (the seq check makes the
                # retry exact).
                pipe.evalsha(
                    self._update_sha,
                    6,
                    k.q(u.state),
                    k.n(u.state),
                    k.q(u.next_state),
                    k.ver,
                    k.version,
                    k.applied,
                    *args,
                )
            results = await pipe.execute(raise_on_error=False)
        if any(isinstance(x, NoScriptError) for x in results):
            await self._r.script_load(_UPDATE_LUA)
            raise _ScriptMissing("update script not loaded")
        return results

    def _absorb(self, u: QUpdate, res: Any) -> None:
        if isinstance(res, Exception):  # a script error (not retryable): this update is lost
            self._drop([u], f"{type(res).__name__}: {res}")
            return
        if len(res) == 1:  # 'dup': already applied by an earlier attempt
            self.duplicates_total += 1
            self.applied_total += 1
            return
        self.applied_total += 1
        s_val, n, ver, prev = _s(res[0]), int(res[1]), int(res[2]), int(res[3])
        # In place only if we hold exactly the previous version; otherwise the channel message
        # (which every process, this one included, receives in order) brings us up to date.
        self._apply_message(u.state, u.action, float(s_val), n, ver, prev, from_channel=False)

    async def _sync_actions(self) -> None:
        new = sorted(self._actions - self._actions_synced)
        if new:
            await self._r.sadd(self.keys.actions, *new)
            self._actions_synced.update(new)

    # ------------------------------------------------------------------ cache maintenance
    def _apply_message(
        self, state: int, action: str, q: float, n: int, ver: int, prev: int, *, from_channel: bool
    ) -> None:
        if from_channel:
            self._note_version(ver)
        cur = self._ver.get(state)
        if cur is not None and cur >= ver:
            return  # we already hold this write or a newer one
        if cur == prev or (cur is None and prev == 0):
            row = self._q.setdefault(state, {})
            nrow = self._n.setdefault(state, {})
            if action not in row:
                self.entries.add(state, action)
            elif row[action] == q and nrow.get(action) == n:
                self._ver[state] = ver  # Redis confirms what we hold (our own update): no change
                return
            row[action] = q
            nrow[action] = n
            self._ver[state] = ver
            self.writes += 1
        elif from_channel:
            self._dirty.add(state)
            self._wake.set()

    def _note_version(self, ver: int) -> None:
        """Track the highest version up to which every write has been seen.

        A version can arrive "early" (just after a reconcile snapshot, before the reconcile
        coroutine resumes), so out-of-order ones wait in ``_ahead`` instead of counting as a
        gap. A real gap (a lost message) leaves ``_contig`` behind the global version, which
        ``_check_version`` notices one interval later; the row itself is usually repaired
        sooner, because the next message for it will not match the version we hold.
        """
        if ver <= self._contig:
            return
        if ver == self._contig + 1:
            self._contig = ver
            ahead = self._ahead
            while ahead and self._contig + 1 in ahead:
                ahead.remove(self._contig + 1)
                self._contig += 1
        else:
            self._ahead.add(ver)
            if len(self._ahead) > 100_000:
                self._ahead.clear()
                self._full_reload = True
                self._wake.set()

    def _set_contig(self, g: int) -> None:
        self._contig = g
        self._ahead = {v for v in self._ahead if v > g}
        while self._contig + 1 in self._ahead:
            self._ahead.remove(self._contig + 1)
            self._contig += 1

    def _name(self, raw: bytes | str) -> str:
        """One shared str per action id: 3,072 rows x 66 actions would otherwise hold ~400k
        copies of the same few dozen strings (most of a full cache's memory)."""
        a = _s(raw)
        return self._names.setdefault(a, a)

    def _on_message(self, data: bytes | str) -> None:
        msg = _s(data)
        if msg.startswith("u|"):
            _, s, a, q, n, ver, prev = msg.split("|")
            self._apply_message(int(s), self._name(a), float(q), int(n), int(ver), int(prev), from_channel=True)
        elif msg.startswith("*|"):  # a bulk write (import, reset, transfer): reload
            self._note_version(int(msg[2:]))
            self._full_reload = True
            self._wake.set()

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            ps = self._r.pubsub()
            try:
                await ps.subscribe(self.keys.channel)
                self._pubsub_ready.set()
                if self._started:  # a reconnect: whatever was published meanwhile is lost
                    self._full_reload = True
                    self._wake.set()
                backoff = 0.1
                while True:
                    msg = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self._on_message(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_event(
                    log,
                    "q-table invalidation channel lost; resubscribing",
                    logging.WARNING,
                    device=self.device,
                    error=f"{type(exc).__name__}: {exc}",
                )
                self._metrics.set_redis_up(False)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                try:
                    await asyncio.wait_for(ps.aclose(), 2.0)
                except (Exception, asyncio.CancelledError):
                    pass

    async def _sync_loop(self) -> None:
        next_check = time.monotonic() + self.sync_interval_s
        while True:
            timeout = max(0.0, next_check - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if self._full_reload:
                    self._full_reload = False
                    self._dirty.clear()
                    await self._reconcile()
                elif self._dirty:
                    dirty, self._dirty = self._dirty, set()
                    await self._fetch_rows(dirty)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.sync_interval_s
                    await self._check_version()
                    self._metrics.set_qtable(
                        states=len(self._q),
                        entries=sum(len(r) for r in self._q.values()),
                        bytes_=self._memory_bytes or self._cache_bytes(),
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._full_reload = True  # retry the whole sync on the next tick
                log_event(
                    log,
                    "q-table cache sync failed",
                    logging.WARNING,
                    device=self.device,
                    error=f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(min(self.sync_interval_s, 1.0))

    async def _check_version(self) -> None:
        """Safety net: the global version must have been seen on the channel by the next check."""
        g = int(await self._r.get(self.keys.version) or 0)
        behind = self._last_global is not None and self._contig < self._last_global
        if behind or g < self._contig:  # missed messages, or the namespace was wiped under us
            await self._reconcile()
        self._last_global = g

    async def _reconcile(self) -> None:
        """Bring the whole cache in line with Redis using the per-state versions."""
        k = self.keys
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.get(k.version)
            pipe.hgetall(k.ver)
            g_raw, vers_raw = await pipe.execute()
        g = int(g_raw or 0)
        if g < self._contig:  # the namespace was wiped under us (FLUSHALL): start over
            self._q.clear()
            self._n.clear()
            self._ver.clear()
            self._ahead.clear()
            self.entries.clear()
            self.writes += 1
        self._set_contig(g)
        vers = {int(_s(s)): int(v) for s, v in vers_raw.items()}
        for s in [s for s in self._ver if s not in vers]:  # rows deleted (reset, replace)
            self._ver.pop(s, None)
            self._q.pop(s, None)
            self._n.pop(s, None)
            self.entries.discard_state(s)
            self.writes += 1
        changed = [s for s, v in vers.items() if self._ver.get(s) != v]
        if changed:
            await self._fetch_rows(changed)
        self.reconciles_total += 1

    async def _fetch_rows(self, states: Iterable[int]) -> None:
        """Refetch rows atomically (row + its version); never install data older than we hold."""
        k = self.keys
        states = sorted(states)
        for i in range(0, len(states), _ROWS_PER_TX):
            chunk = states[i : i + _ROWS_PER_TX]
            async with self._r.pipeline(transaction=True) as pipe:
                for s in chunk:
                    pipe.hgetall(k.q(s))
                    pipe.hgetall(k.n(s))
                    pipe.hget(k.ver, s)
                res = await pipe.execute()
            for j, s in enumerate(chunk):
                qraw, nraw, vraw = res[3 * j : 3 * j + 3]
                self.refetches_total += 1
                if vraw is None:
                    if s in self._ver:
                        self._ver.pop(s, None)
                        self._q.pop(s, None)
                        self._n.pop(s, None)
                        self.entries.discard_state(s)
                        self.writes += 1
                    continue
                v = int(vraw)
                cur = self._ver.get(s)
                if cur is not None and cur >= v:
                    continue
                name = self._name
                self._q[s] = {name(a): float(x) for a, x in qraw.items()}
                self._n[s] = {name(a): int(x) for a, x in nraw.items()}
                self._ver[s] = v
                self.entries.set_row(s, self._q[s])
                self.writes += 1

    async def wait_synced(self, timeout: float = 2.0) -> bool:
        """Test/bench helper: wait until this cache has seen every write made so far."""
        deadline = time.monotonic() + timeout
        g = int(await self._r.get(self.keys.version) or 0)
        while time.monotonic() < deadline:
            if self._contig >= g and not self._dirty and not self._full_reload:
                return True
            await asyncio.sleep(0.01)
        return False

    # ------------------------------------------------------------------ export / import
    async def _read_table(self, keys: Keys) -> tuple[dict[int, dict[str, tuple[float, int]]], set[str]]:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hkeys(keys.ver)
            pipe.smembers(keys.actions)
            states_raw, acts_raw = await pipe.execute()
        states = sorted(int(_s(s)) for s in states_raw)
        out: dict[int, dict[str, tuple[float, int]]] = {}
        for i in range(0, len(states), _ROWS_PER_TX):
            chunk = states[i : i + _ROWS_PER_TX]
            async with self._r.pipeline(transaction=True) as pipe:
                for s in chunk:
                    pipe.hgetall(keys.q(s))
                    pipe.hgetall(keys.n(s))
                res = await pipe.execute()
            for j, s in enumerate(chunk):
                qraw, nraw = res[2 * j], res[2 * j + 1]
                nmap = {_s(a): int(x) for a, x in nraw.items()}
                row = {_s(a): (float(x), nmap.get(_s(a), 0)) for a, x in qraw.items()}
                if row:
                    out[s] = row
        return out, {_s(a) for a in acts_raw}

    async def _export_keys(self, keys: Keys) -> dict[str, Any]:
        states, acts = await self._read_table(keys)
        if keys.device == self.device:
            acts |= self._actions
        for row in states.values():
            acts.update(row)
        table = ValidatedTable(device=keys.device, actions=tuple(sorted(acts)), states=states)
        data = table.to_export()
        data["exported_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data["params"] = {"learning_rate": self.learning_rate, "discount": self.discount, "seed": self.seed}
        return data

    async def export(self) -> dict[str, Any]:
        """The whole table, from Redis (authoritative), as JSON-able data:
        ``{"format_version": 1, "device", "actions": [...], "states": {"<state>": {action: {"q", "n"}}},
        "exported_at", "params"}``."""
        return await self._export_keys(self.keys)

    async def import_(self, data: object, mode: str = "replace") -> dict[str, Any]:
        """Load an export. ``replace`` swaps the whole table; ``merge`` overwrites only the
        entries present in ``data``. Malformed or mismatched input raises ``QTableImportError``
        naming the field, before anything is written."""
        if mode not in ("replace", "merge"):
            raise QTableImportError("mode", "must be 'replace' or 'merge'")
        known = await self.device_actions(self.device)
        table = validate_export(data, expect_device=self.device, allowed_actions=known or None)
        version = await self._write_table(self.keys, table, mode)
        self._actions.update(table.actions)
        await self._sync_actions()
        await self._after_bulk_write()
        return {
            "device": self.device,
            "mode": mode,
            "states": len(table.states),
            "entries": table.entries,
            "version": version,
        }

    async def _write_table(self, keys: Keys, table: ValidatedTable, mode: str) -> int:
        async with self._r.pipeline(transaction=True) as pipe:
            if mode == "replace":
                await self._clear_script(keys=[keys.ver], args=[keys.prefix], client=pipe)
            for s, row in table.states.items():
                pipe.hset(keys.q(s), mapping={a: repr(q) for a, (q, _) in row.items()})
                pipe.hset(keys.n(s), mapping={a: n for a, (_, n) in row.items()})
            if table.actions:
                pipe.sadd(keys.actions, *table.actions)
            await self._bump_script(
                keys=[keys.ver, keys.version], args=[keys.channel, *sorted(table.states)], client=pipe
            )
            res = await pipe.execute()
        return int(res[-1])

    async def _after_bulk_write(self) -> None:
        # Make this process's cache consistent before returning (others follow the message).
        self._q.clear()
        self._n.clear()
        self._ver.clear()
        self.entries.clear()
        self.writes += 1
        await self._reconcile()

    async def reset(self) -> dict[str, Any]:
        """Forget everything learned on this device (the action set is kept)."""
        k = self.keys
        async with self._r.pipeline(transaction=True) as pipe:
            await self._clear_script(keys=[k.ver], args=[k.prefix], client=pipe)
            pipe.delete(k.applied)
            await self._bump_script(keys=[k.ver, k.version], args=[k.channel], client=pipe)
            res = await pipe.execute()
        await self._after_bulk_write()
        return {"device": self.device, "states_cleared": int(res[0]), "version": int(res[-1])}

    async def device_actions(self, device: str) -> set[str]:
        if device == self.device:
            return set(self._actions) | {_s(a) for a in await self._r.smembers(self.keys.actions)}
        return {_s(a) for a in await self._r.smembers(Keys(device).actions)}

    async def transfer(self, source: str | Mapping[str, Any], to_device: str | None = None) -> dict[str, Any]:
        """The paper's transfer learning (Sec. VI-C): initialise ``to_device``'s table (default:
        this store's device) from another device's table -- a device name whose namespace is in
        this Redis, or an export. Only the destination's actions are kept, same-kind actions are
        mapped (see ``qlearning.transfer_mapping``), and the destination table is replaced."""
        dest = to_device or self.device
        if not valid_device(dest):
            raise QTableImportError("to_device", f"invalid device name {dest!r}")
        if isinstance(source, str):
            if not valid_device(source):
                raise QTableImportError("from_device", f"invalid device name {source!r}")
            src_data = await self._export_keys(Keys(source))
            if not src_data["states"]:
                raise QTableImportError("from_device", f"device {source!r} has no Q table in this store", "mismatch")
            src = validate_export(src_data)
        elif isinstance(source, Mapping):
            src = validate_export(dict(source))
        else:
            raise QTableImportError("from_device", "give a device name or an export object")
        if src.device == dest:
            raise QTableImportError("from_device", f"source and destination are both {dest!r}", "mismatch")
        dest_actions = sorted(await self.device_actions(dest))
        if not dest_actions:
            raise QTableImportError(
                "to_device", f"actions of device {dest!r} are unknown (it has not served a request yet)", "mismatch"
            )
        table, report = transfer_table(src, dest, dest_actions)
        version = await self._write_table(Keys(dest), table, "replace")
        if dest == self.device:
            await self._after_bulk_write()
        out = report.model_dump()
        out["version"] = version
        return out

    # ------------------------------------------------------------------ introspection
    def _cache_bytes(self) -> int:
        """Approximate bytes of the cache: dicts, float/int objects, each distinct key once."""
        size = sys.getsizeof(self._q) + sys.getsizeof(self._n) + sys.getsizeof(self._ver)
        names: dict[int, int] = {}
        for row in self._q.values():
            size += sys.getsizeof(row) + 24 * len(row)  # a float object per entry
            for a in row:
                names[id(a)] = sys.getsizeof(a)
        for nrow in self._n.values():
            size += sys.getsizeof(nrow) + 28 * len(nrow)
            for a in nrow:
                names[id(a)] = sys.getsizeof(a)
        size += 28 * len(self._ver)
        return size + sum(names.values())

    async def stats(self) -> dict[str, Any]:
        """Table size in Redis and in this process, against the paper's 0.4 MB."""
        k = self.keys
        states, _ = await self._read_table(k)
        keys = [key async for key in self._r.scan_iter(match=f"{k.prefix}:*", count=1000)]
        mem = 0
        table_mem = 0
        for i in range(0, len(keys), 512):
            chunk = keys[i : i + 512]
            async with self._r.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.memory_usage(key, samples=0)
                usage = await pipe.execute()
            for key, m in zip(chunk, usage):
                mem += int(m or 0)
                name = _s(key)
                if ":q:" in name or ":n:" in name or name == k.ver:
                    table_mem += int(m or 0)
        self._memory_bytes = mem
        entries = sum(len(r) for r in states.values())
        visited = sum(1 for r in states.values() if any(n > 0 for _, n in r.values()))
        cache_bytes = self._cache_bytes()
        self._metrics.set_qtable(states=len(states), entries=entries, bytes_=mem)
        return {
            "device": self.device,
            "states": len(states),
            "states_visited": visited,
            "state_space": N_STATES,
            "entries": entries,
            "visits_total": sum(n for r in states.values() for _, n in r.values()),
            "actions": len(self._actions),
            "redis_memory_bytes": mem,
            "redis_table_bytes": table_mem,
            "redis_keys": len(keys),
            "cache_states": len(self._q),
            "cache_entries": sum(len(r) for r in self._q.values()),
            "cache_bytes": cache_bytes,
            "paper_memory_bytes": PAPER_MEMORY_BYTES,
            "redis_vs_paper": mem / PAPER_MEMORY_BYTES,
            "cache_vs_paper": cache_bytes / PAPER_MEMORY_BYTES,
            "queue_depth": self._queue.qsize(),
            "submitted_total": self.submitted_total,
            "applied_total": self.applied_total,
            "dropped_total": self.dropped_total,
            "duplicates_total": self.duplicates_total,
            "reconciles_total": self.reconciles_total,
            "version_seen": self._contig,
        }

    async def policy_view(self) -> dict[str, Any]:
        """Best action per stored state (by Q among the learned entries), visits and Q values."""
        states, _ = await self._read_table(self.keys)
        out: dict[str, Any] = {}
        for s, row in sorted(states.items()):
            visited = {a: v for a, v in row.items() if v[1] > 0} or row
            best = max(visited, key=lambda a: (visited[a][0], a))
            out[str(s)] = {
                "best": best,
                "best_q": row[best][0],
                "visits": sum(n for _, n in row.values()),
                "labels": StateBins.from_index(s).labels(),
                "actions": {a: {"q": q, "n": n} for a, (q, n) in sorted(row.items(), key=lambda kv: -kv[1][0])},
            }
        return {"device": self.device, "format_version": EXPORT_FORMAT_VERSION, "states": out}
