"""How rows, corrections, updates and invalidation messages are written in Redis, and read back.

Rows are packed (``keys``: float32 Q and 4-bit visit fields per action slot, 64 states per string);
the learned corrections are one hash field per key, ``<6d``: n, mean and variance of the log latency
ratio, mean and variance of the log energy ratio, and the version of the write. Every reader and
writer of table data goes through the functions here (and the Lua scripts in ``keys``), so another
encoding changes only those two modules.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.asyncio.client import Pipeline

from services.core.policies.qlearning import FamilyStats, QUpdate
from services.core.state import N_STATES
from services.decider.qstore.keys import GROUP, N_GROUPS, Keys

# Rows per read script: a full record is ~300 bytes; small reads keep each reply quick to parse.
ROWS_PER_TX = 64

# An update as Redis applied it: (state, action, Q, visits, version, previous version of the row).
RowWrite = tuple[int, str, float, int, int, int]
# state -> action -> (Q, visits)
Rows = dict[int, dict[str, tuple[float, int]]]

_CORR = struct.Struct("<6d")


@dataclass(frozen=True, slots=True)
class CorrWrite:
    """A correction as Redis wrote it (the stats after the update, and the write's version)."""

    key: str
    stats: FamilyStats
    version: int


def as_str(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def stride(cap: int) -> int:
    """Bytes of one state's record: ``cap`` float32 then ``cap / 2`` bytes of 4-bit fields."""
    return cap * 4 + cap // 2


@dataclass(frozen=True, slots=True)
class Layout:
    """The slot of each action in a record (``Keys.aidx``) and the slots per record (``Keys.cap``)."""

    cap: int
    names: tuple[str | None, ...]  # slot -> action id

    @classmethod
    def decode(cls, cap_raw: Any, aidx_raw: Any, name: Callable[[bytes | str], str] = as_str) -> Layout:
        cap = int(cap_raw or 0)
        items = aidx_raw.items() if isinstance(aidx_raw, Mapping) else zip(aidx_raw[0::2], aidx_raw[1::2], strict=True)
        names: list[str | None] = [None] * cap
        for a, i in items:
            i = int(i)
            if i < cap:
                names[i] = name(a)
        return cls(cap, tuple(names))


def _codes(nibbles: np.ndarray, cap: int) -> np.ndarray:
    """The 4-bit fields of records, (rows, cap): low nibble = even slot."""
    out = np.empty((nibbles.shape[0], cap), dtype=np.uint8)
    out[:, 0::2] = nibbles & 15
    out[:, 1::2] = nibbles >> 4
    return out


def decode_records(raw: bytes, layout: Layout) -> list[tuple[dict[str, float], dict[str, int]]]:
    """({action: Q}, {action: visits}) of each record in ``raw`` (whole records, back to back)."""
    st = stride(layout.cap)
    if not raw or st == 0:
        return []
    arr = np.frombuffer(raw, dtype=np.uint8)[: len(raw) // st * st].reshape(-1, st)
    q = arr[:, : layout.cap * 4].copy().view("<f4")
    codes = _codes(arr[:, layout.cap * 4 :], layout.cap)
    out = []
    names = layout.names
    for r in range(arr.shape[0]):
        slots = np.flatnonzero(codes[r]).tolist()
        qs, ns = q[r, slots].tolist(), (codes[r, slots].astype(np.int64) - 1).tolist()
        row, visits = {}, {}
        for i, qv, nv in zip(slots, qs, ns, strict=True):
            a = names[i]
            if a is not None:
                row[a], visits[a] = qv, nv
        out.append((row, visits))
    return out


def decode_versions(raw: bytes | None) -> dict[int, int]:
    """{state: version} of every state with a row (``Keys.vers``)."""
    if not raw:
        return {}
    v = np.frombuffer(raw[: N_STATES * 8], dtype="<f8")
    nz = np.flatnonzero(v)
    return dict(zip(nz.tolist(), v[nz].astype(np.int64).tolist(), strict=True))


# ----------------------------------------------------------------------------- whole table


def queue_table_read(pipe: Pipeline, keys: Keys) -> int:
    """Queue the reads of a whole table (in a transaction: one consistent snapshot); returns how
    many replies ``decode_table`` reads."""
    pipe.get(keys.cap)
    pipe.hgetall(keys.aidx)
    pipe.get(keys.vers)
    for g in range(N_GROUPS):
        pipe.get(keys.rows(g))
    return 3 + N_GROUPS


def decode_table(
    replies: Sequence[Any], name: Callable[[bytes | str], str] = as_str
) -> tuple[dict[int, tuple[dict[str, float], dict[str, int]]], dict[int, int]]:
    """({state: (row, visits)} of every non-empty row, {state: version})."""
    layout = Layout.decode(replies[0], replies[1], name)
    versions = decode_versions(replies[2])
    rows: dict[int, tuple[dict[str, float], dict[str, int]]] = {}
    for g, raw in enumerate(replies[3 : 3 + N_GROUPS]):
        if not raw:
            continue
        for r, (row, visits) in enumerate(decode_records(raw, layout)):
            if row:
                rows[g * GROUP + r] = (row, visits)
    return rows, versions


def as_rows(table: Mapping[int, tuple[dict[str, float], dict[str, int]]]) -> Rows:
    return {s: {a: (q, visits.get(a, 0)) for a, q in row.items()} for s, (row, visits) in table.items()}


# ----------------------------------------------------------------------------- some rows


def read_rows_args(keys: Keys, states: Sequence[int]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``READ_ROWS_LUA``."""
    return [keys.aidx, keys.cap, keys.vers], [keys.prefix, *states]


def decode_read_rows(
    res: Sequence[Any], states: Sequence[int], name: Callable[[bytes | str], str] = as_str
) -> dict[int, tuple[dict[str, float], dict[str, int], int]]:
    """{state: (row, visits, version)} from ``READ_ROWS_LUA``'s reply (version 0: no row)."""
    layout = Layout.decode(res[0], res[1], name)
    out = {}
    for j, s in enumerate(states):
        rec, ver = res[2 + 2 * j], res[3 + 2 * j]
        v = int(struct.unpack("<d", ver)[0]) if ver and len(ver) == 8 else 0
        decoded = decode_records(rec, layout) if rec else []
        row, visits = decoded[0] if decoded else ({}, {})
        out[s] = (row, visits, v)
    return out


def put_row_args(keys: Keys, state: int, row: Mapping[str, tuple[float, int]]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``PUT_ROW_LUA``: write {action: (Q, visits)} into one row (others kept)."""
    args: list[Any] = [keys.prefix, state]
    for a, (q, n) in row.items():
        args += [a, repr(float(q)), int(n)]
    return [keys.aidx, keys.cap], args


# ----------------------------------------------------------------------------- updates and messages


def update_keys(keys: Keys) -> list[str]:
    """KEYS of ``UPDATE_LUA``: the same for every update of a device, so once per batch."""
    return [keys.aidx, keys.cap, keys.vers, keys.version, keys.applied, keys.corr]


def update_args(keys: Keys, u: QUpdate, token: str, seq: int) -> list[str]:
    """One update's ARGV block of ``UPDATE_LUA``, stamped (token, seq) for idempotency."""
    args: list[Any] = [
        keys.prefix,
        u.state,
        u.action,
        repr(u.reward),
        repr(u.learning_rate),
        repr(u.discount),
        repr(u.init),
        token,
        seq,
        keys.channel,
        u.next_state,
    ]
    c = u.correction
    if c is None:
        args.append(0)
    else:
        ck = c.stat_keys()
        args += [len(ck), *ck, repr(c.x_lat), repr(c.x_energy), repr(c.lr_floor)]
    for a, init in zip(u.next_actions, u.next_inits, strict=True):
        args.append(a)
        args.append(repr(init))
    return [str(a) for a in args]


def decode_update_reply(res: Sequence[Any]) -> tuple[float, int, int, int] | None:
    """(Q, visits, version, previous version) from ``UPDATE_LUA``; None for a duplicate (an
    update an earlier attempt already applied). Not for a gap reply (``update_gap``)."""
    if len(res) == 1:  # 'dup'
        return None
    return float(as_str(res[0])), int(res[1]), int(res[2]), int(res[3])


def update_gap(res: Any) -> int | None:
    """The last sequence Redis holds for the token, if ``UPDATE_LUA`` refused the update because
    an earlier one of the same token is missing (Redis lost acknowledged updates); else None."""
    if isinstance(res, list) and len(res) == 2 and as_str(res[0]) == "gap":
        return int(res[1])
    return None


def decode_corrections(raw: Mapping[Any, Any]) -> tuple[dict[str, FamilyStats], dict[str, int]]:
    """({key: stats}, {key: version}) of ``Keys.corr``."""
    stats, versions = {}, {}
    for k, v in raw.items():
        n, ml, vl, me, ve, ver = _CORR.unpack(v)
        key = as_str(k)
        stats[key] = FamilyStats(n, ml, vl, me, ve)
        versions[key] = int(ver)
    return stats, versions


def decode_message(data: bytes | str, name: Callable[[bytes | str], str] = as_str) -> RowWrite | CorrWrite | int | None:
    """An invalidation message: a ``RowWrite`` (one update), a ``CorrWrite`` (a correction it
    carried), the version of a bulk write (an import, reset or transfer: reload everything), or
    None (not ours)."""
    msg = as_str(data)
    if msg.startswith("u|"):
        _, s, a, q, n, ver, prev = msg.split("|")
        return int(s), name(a), float(q), int(n), int(ver), int(prev)
    if msg.startswith("c|"):
        _, ver, n, ml, vl, me, ve, key = msg.split("|", 7)
        return CorrWrite(key, FamilyStats(float(n), float(ml), float(vl), float(me), float(ve)), int(ver))
    if msg.startswith("*|"):
        return int(msg[2:])
    return None
