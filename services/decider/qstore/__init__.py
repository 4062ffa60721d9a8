"""The Q table in Redis, with a local cache so decisions never wait for Redis.

Layout, one namespace per device profile (the phone the decider serves), so a table can be
transferred between devices. The device name sits in a Redis Cluster hash tag (``{...}``):
every key of a device lands in one slot and the multi-key Lua scripts stay legal on a cluster.

    autoscale:{mi8pro}:rows:<g>    string  the packed rows of states 64g .. 64g + 63 (``keys``):
                                           per state, a float32 Q per action slot, then a 4-bit
                                           field per slot (0 = no entry, k = k - 1 visits, saturating
                                           at VISITS_MAX = 14)
    autoscale:{mi8pro}:aidx        hash    action id -> its slot (in the order actions appeared)
    autoscale:{mi8pro}:cap         int     slots per record (records grow when an action is added)
    autoscale:{mi8pro}:vers        string  3,072 float64: version of each state's last write
    autoscale:{mi8pro}:corr        hash    learned profile corrections (the prior learner's):
                                           key -> <6d n, mean/var log latency ratio, mean/var log
                                           energy ratio, version of the write
    autoscale:{mi8pro}:version     int     global write counter (never reset)
    autoscale:{mi8pro}:applied     hash    worker token -> last applied sequence (idempotent retries, gaps)
    autoscale:{mi8pro}:actions     set     action ids this device has offered
    autoscale:{mi8pro}:inval       pub/sub channel of invalidations

A full Mi8Pro table (3,072 states x 66 actions) takes 0.95 x 10^6 bytes of Redis memory
(``bench/decision.md``), against 12.5 MB as text hashes.

Writes
    One Q update = one block of a Lua script call (``keys.UPDATE_LUA``, which applies a batch of
    them in order, as if one call each): read the packed records of S and S', apply Algorithm 1
    with the lr/discount passed in ARGV, round the new value to float32 (``struct``), count the
    visit, bump the version and publish the new value; an update that carries an observation for
    the learned corrections (``QUpdate.correction``) updates those in the same script and
    publishes them too (the batch's messages leave in one PUBLISH, newline-separated). Redis runs
    a script atomically, so concurrent updates from any
    number of decider processes are all applied (no lost update). Each worker stamps its
    updates with (token, seq); the script skips a seq it has already applied, so a retry after
    a connection error that hit *after* the script ran cannot double-apply, and it refuses a seq
    that follows a gap (Redis restarted without updates it had acknowledged: AOF ``everysec``),
    which the worker answers by replaying what it delivered in the last few seconds.

    ``learn(update)`` (the policy's path) changes the cached row at once -- the next decision in
    this process already sees it -- and buffers the update; it never blocks. An asyncio worker
    (``writer.UpdateWriter``) drains the buffer in batches (one script call each), retrying with capped
    backoff (tenacity) for as long as Redis is away; only a full buffer drops updates (the
    oldest first), counted in ``dropped_total`` (and the Prometheus counter) and logged.

Initial values (what a missing field is worth)
    The script never computes one: ``ARGV[7]`` (Q(S,A)) and the pairs at the end of ARGV (the S'
    row) carry the values the *calling process* used for missing fields, and the script applies
    the update to them only when the entry is absent. With ``q_init="random"`` they are a pure
    hash of (seed, state, action), identical in every process. With ``q_init="nearest"`` they are
    read from the caller's cache (the nearest state holding the action, rescaled -- see
    ``qlearning.entries.EntryIndex``); two processes whose caches momentarily differ may propose
    different values for the same missing field, and the first update that reaches Redis
    materialises it, after which every process reads the stored value. The cache's ``entries``
    (an ``EntryIndex``) is kept in step with every change of its entry set (``RowCache``). With
    ``lr_schedule="visits"`` the learning rate in ``ARGV[5]`` comes from the caller's cached
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

Bulk operations (import, reset, transfer) validate fully first, then write in one MULTI/EXEC (one
``PUT_ROW_LUA`` per row: entries are packed into the device's layout by the same Lua helpers)
and publish a "reload" message (``admin.TableAdmin``).

Modules: ``keys`` (the layout above and the Lua scripts), ``codec`` (how rows, corrections,
updates and messages are written in those keys), ``actions`` (the device's action set), ``writer``,
``invalidation``, ``admin``, ``models`` (typed results) and ``store`` (``QStore``, the facade:
a ``RowCache`` that wires the parts together).
"""

from services.decider.qstore.keys import Keys
from services.decider.qstore.models import ImportResult, QTableStats, ResetResult, TransferResult
from services.decider.qstore.store import PAPER_MEMORY_BYTES, QStore

__all__ = ["PAPER_MEMORY_BYTES", "ImportResult", "Keys", "QStore", "QTableStats", "ResetResult", "TransferResult"]
