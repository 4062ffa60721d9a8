"""The Q table in Redis, with a local cache so decisions never wait for Redis.

Layout, one namespace per device profile (the phone the decider serves), so a table can be
transferred between devices. The device name sits in a Redis Cluster hash tag (``{...}``):
every key of a device lands in one slot and the multi-key Lua scripts stay legal on a cluster.

    autoscale:{mi8pro}:q:<state>   hash  action id -> Q value ("%.17g", exact round trip)
    autoscale:{mi8pro}:n:<state>   hash  action id -> visits
    autoscale:{mi8pro}:ver         hash  state -> version of its last write
    autoscale:{mi8pro}:version     int   global write counter (never reset)
    autoscale:{mi8pro}:applied     hash  worker token -> last applied sequence (idempotent retries, gaps)
    autoscale:{mi8pro}:actions     set   action ids this device has offered
    autoscale:{mi8pro}:inval       pub/sub channel of invalidations

Writes
    One Q update = one Lua script (``keys.UPDATE_LUA``): read Q(S,A) and the S' row, apply
    Algorithm 1 with the lr/discount passed in ARGV, HINCRBY the visits, bump the version and
    PUBLISH the new value. Redis runs a script atomically, so concurrent updates from any
    number of decider processes are all applied (no lost update). Each worker stamps its
    updates with (token, seq); the script skips a seq it has already applied, so a retry after
    a connection error that hit *after* the script ran cannot double-apply, and it refuses a seq
    that follows a gap (Redis restarted without updates it had acknowledged: AOF ``everysec``),
    which the worker answers by replaying what it delivered in the last few seconds.

    ``learn(update)`` (the policy's path) changes the cached row at once -- the next decision in
    this process already sees it -- and buffers the update; it never blocks. An asyncio worker
    (``writer.UpdateWriter``) drains the buffer in pipelined batches, retrying with capped
    backoff (tenacity) for as long as Redis is away; only a full buffer drops updates (the
    oldest first), counted in ``dropped_total`` (and the Prometheus counter) and logged.

Initial values (what a missing field is worth)
    The script never computes one: ``ARGV[6]`` (Q(S,A)) and the pairs after ``ARGV[9]`` (the S'
    row) carry the values the *calling process* used for missing fields, and the script applies
    the update to them only when the field is absent. With ``q_init="random"`` they are a pure
    hash of (seed, state, action), identical in every process. With ``q_init="nearest"`` they are
    read from the caller's cache (the nearest state holding the action, rescaled -- see
    ``qlearning.entries.EntryIndex``); two processes whose caches momentarily differ may propose
    different values for the same missing field, and the first update that reaches Redis
    materialises it, after which every process reads the stored value. The cache's ``entries``
    (an ``EntryIndex``) is kept in step with every change of its entry set (``RowCache``). With
    ``lr_schedule="visits"`` the learning rate in ``ARGV[4]`` comes from the caller's cached
    visit count (1 / (n + 1), floored); a count that is one or two updates stale only changes the
    weight of one sample slightly.

Reads
    ``row(state)`` is a dict lookup in the cache: no Redis call on the decision path. The cache
    is loaded at start and kept fresh by the pub/sub messages, which carry the new value, so
    most invalidations are applied in place with no round trip. Every write has a unique
    increasing version; a gap in the versions seen on the channel (a lost message, a
    reconnect) triggers a reconcile against the per-state versions, and a periodic check of
    the global version (one GET per ``sync_interval_s``) is the safety net behind that
    (``invalidation.CacheSync``).

Bulk operations (import, reset, transfer) validate fully first, then write in one MULTI/EXEC
and publish a "reload" message (``admin.TableAdmin``).

Modules: ``keys`` (the layout above and the Lua scripts), ``codec`` (how rows, updates and
messages are written in those keys), ``actions`` (the device's action set), ``writer``,
``invalidation``, ``admin``, ``models`` (typed results) and ``store`` (``QStore``, the facade:
a ``RowCache`` that wires the parts together).
"""

from services.decider.qstore.keys import Keys
from services.decider.qstore.models import ImportResult, QTableStats, ResetResult, TransferResult
from services.decider.qstore.store import PAPER_MEMORY_BYTES, QStore

__all__ = ["PAPER_MEMORY_BYTES", "ImportResult", "Keys", "QStore", "QTableStats", "ResetResult", "TransferResult"]
