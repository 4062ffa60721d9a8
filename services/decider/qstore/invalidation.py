"""Keeping a process's row cache in step with Redis: pub/sub, versions, reconcile.

Every write has a unique increasing version (the global ``Keys.version`` counter) and records
it per state (``Keys.ver``). The update script publishes the new value with its version and
the row's previous version, so most invalidations are applied in place with no round trip
(``apply``); a message that does not follow the version we hold marks the row dirty, and it
is refetched. A gap in the versions seen on the channel (a lost message, a reconnect) leaves
``version_seen`` behind the global version, which the periodic check notices and answers with
a reconcile against the per-state versions. A bulk write (import, reset, transfer) publishes
one message and every process reloads. The learned corrections (the prior learner's) travel the same
way: the update script publishes each one it changed with the update's version, and a reconcile
reloads them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from services.common.logging import log_event
from services.core.policies.qlearning import QUpdate, RowCache
from services.decider.qstore.codec import (
    ROWS_PER_TX,
    CorrWrite,
    as_str,
    decode_corrections,
    decode_message,
    decode_read_rows,
    decode_versions,
    read_rows_args,
)
from services.decider.qstore.keys import READ_ROWS_LUA, Keys

if TYPE_CHECKING:
    from services.decider.metrics import QStoreMetrics

log = logging.getLogger("autoscale.qstore")


class CacheSync:
    """Applies Redis's writes to ``cache``: the pub/sub listener (``listen``), the sync loop
    (``run``: dirty rows, reloads, the periodic version check) and the reconcile.

    ``versions`` holds, per cached state, the version of the row we hold; ``live`` is set by
    the owner once started (a resubscription after that means messages may have been lost).
    """

    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        cache: RowCache,
        metrics: QStoreMetrics,
        *,
        sync_interval_s: float = 1.0,
        on_tick: Callable[[], None] = lambda: None,
    ) -> None:
        self._r = r
        self.keys = keys
        self.cache = cache
        self._metrics = metrics
        self.sync_interval_s = sync_interval_s
        self._on_tick = on_tick
        self.versions: dict[int, int] = {}
        self._contig = 0  # every version <= this has been seen on the channel (or reconciled)
        self._ahead: set[int] = set()  # versions seen above _contig (out of order)
        self._last_global: int | None = None
        self._dirty: set[int] = set()
        self._full_reload = False
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()  # subscribed
        self.live = False
        self._names: dict[str, str] = {}
        self._read_rows = r.register_script(READ_ROWS_LUA)
        self.reconciles_total = 0
        self.refetches_total = 0
        self.sync_failures = 0  # consecutive

    @property
    def version_seen(self) -> int:
        """Every write up to this version is in the cache."""
        return self._contig

    # ------------------------------------------------------------------ cache changes
    def _forget(self, state: int) -> None:
        self.versions.pop(state, None)
        self.cache.forget_state(state)

    def forget_all(self) -> None:
        self.versions.clear()
        self.cache.forget_all()

    def apply_write(self, u: QUpdate, q: float, n: int, ver: int, prev: int) -> None:
        """Redis's answer to one of our own updates (``UpdateWriter``'s ``on_applied``)."""
        self.apply(u.state, u.action, q, n, ver, prev, from_channel=False)

    def apply(self, state: int, action: str, q: float, n: int, ver: int, prev: int, *, from_channel: bool) -> None:
        """Install one written value if we hold exactly the row it was written over."""
        if from_channel:
            self._note_version(ver)
        cur = self.versions.get(state)
        if cur is not None and cur >= ver:
            return  # we already hold this write or a newer one
        if cur == prev or (cur is None and prev == 0):
            # In place; if it only confirms what we hold (our own update), the cache is unchanged.
            self.cache.set_entry(state, action, q, n)
            self.versions[state] = ver
        elif from_channel:
            self._dirty.add(state)
            self._wake.set()

    def mark_lost(self, states: Iterable[int]) -> None:
        """These rows hold values Redis never got (``UpdateWriter``'s ``on_lost``): refetch them."""
        self._dirty.update(states)
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

    def name(self, raw: bytes | str) -> str:
        """One shared str per action id: 3,072 rows x 66 actions would otherwise hold ~400k
        copies of the same few dozen strings (most of a full cache's memory)."""
        a = as_str(raw)
        return self._names.setdefault(a, a)

    # ------------------------------------------------------------------ pub/sub
    def _on_message(self, data: bytes | str) -> None:
        # An update script's batch publishes its updates' messages in one, newline-separated, in order.
        parts: list[bytes] | list[str] = data.split(b"\n") if isinstance(data, bytes) else data.split("\n")
        for part in parts:
            msg = decode_message(part, self.name)
            if isinstance(msg, tuple):
                s, a, q, n, ver, prev = msg
                self.apply(s, a, q, n, ver, prev, from_channel=True)
            elif isinstance(msg, CorrWrite):
                self._note_version(msg.version)
                self.cache.corrections.set(msg.key, msg.stats, msg.version)
            elif msg is not None:  # a bulk write (import, reset, transfer): reload
                self._note_version(msg)
                self._full_reload = True
                self._wake.set()

    async def listen(self) -> None:
        """Subscribe to the channel and apply its messages; resubscribe after any failure."""
        backoff = 0.1
        while True:
            ps = self._r.pubsub()
            try:
                await ps.subscribe(self.keys.channel)
                self.ready.set()
                if self.live:  # a reconnect: whatever was published meanwhile is lost
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
                    device=self.keys.device,
                    error=f"{type(exc).__name__}: {exc}",
                )
                self._metrics.set_redis_up(False)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(ps.aclose(), 2.0)

    # ------------------------------------------------------------------ sync loop
    async def run(self) -> None:
        """Refetch dirty rows and reload when told to; check the global version (and call
        ``on_tick``) every ``sync_interval_s``."""
        next_check = time.monotonic() + self.sync_interval_s
        while True:
            timeout = max(0.0, next_check - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                if self._full_reload:
                    self._full_reload = False
                    self._dirty.clear()
                    await self.reconcile()
                elif self._dirty:
                    dirty, self._dirty = self._dirty, set()
                    await self._fetch_rows(dirty)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.sync_interval_s
                    await self._check_version()
                    self._on_tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._full_reload = True  # retry the whole sync on the next tick
                self.sync_failures += 1
                if self.sync_failures in (1, 10) or self.sync_failures % 100 == 0:  # not one line a second
                    log_event(
                        log,
                        "q-table cache sync failed",
                        logging.WARNING,
                        device=self.keys.device,
                        error=f"{type(exc).__name__}: {exc}",
                        failures=self.sync_failures,
                    )
                await asyncio.sleep(min(self.sync_interval_s, 1.0))
            else:
                self.sync_failures = 0

    async def _check_version(self) -> None:
        """Safety net: the global version must have been seen on the channel by the next check."""
        g = int(await self._r.get(self.keys.version) or 0)
        behind = self._last_global is not None and self._contig < self._last_global
        if behind or g < self._contig:  # missed messages, or the namespace was wiped under us
            await self.reconcile()
        self._last_global = g

    async def reconcile(self) -> None:
        """Bring the whole cache in line with Redis using the per-state versions."""
        k = self.keys
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.get(k.version)
            pipe.get(k.vers)
            pipe.hgetall(k.corr)
            g_raw, vers_raw, corr_raw = await pipe.execute()
        g = int(g_raw or 0)
        if g < self._contig:  # the namespace was wiped under us (FLUSHALL): start over
            self.forget_all()
            self._ahead.clear()
        self._set_contig(g)
        stats, cver = decode_corrections(corr_raw)
        if cver != self.cache.corrections.versions:
            self.cache.corrections.replace_all(stats, cver)
        vers = decode_versions(vers_raw)
        for s in [s for s in self.versions if s not in vers]:  # rows deleted (reset, replace)
            self._forget(s)
        changed = [s for s, v in vers.items() if self.versions.get(s) != v]
        if changed:
            await self._fetch_rows(changed)
        self.reconciles_total += 1

    async def reload(self) -> None:
        """Drop the whole cache and reconcile: after a bulk write by this process (others
        follow its message)."""
        self.forget_all()
        await self.reconcile()

    async def _fetch_rows(self, states: Iterable[int]) -> None:
        """Refetch rows atomically (row + its version, in one script); never install data older
        than we hold."""
        k = self.keys
        states = sorted(states)
        for i in range(0, len(states), ROWS_PER_TX):
            chunk = states[i : i + ROWS_PER_TX]
            ks, args = read_rows_args(k, chunk)
            res = await self._read_rows(keys=ks, args=args)
            for s, (row, visits, v) in decode_read_rows(res, chunk, self.name).items():
                self.refetches_total += 1
                if v == 0:
                    if s in self.versions:
                        self._forget(s)
                    continue
                cur = self.versions.get(s)
                if cur is not None and cur >= v:
                    continue
                self.cache.set_row(s, row, visits)
                self.versions[s] = v

    async def wait_synced(self, timeout: float = 2.0) -> bool:  # noqa: ASYNC109  # answers False, never raises
        """Test/bench helper: wait until this cache has seen every write made so far."""
        deadline = time.monotonic() + timeout
        g = int(await self._r.get(self.keys.version) or 0)
        while time.monotonic() < deadline:
            if self._contig >= g and not self._dirty and not self._full_reload:
                return True
            await asyncio.sleep(0.01)
        return False
