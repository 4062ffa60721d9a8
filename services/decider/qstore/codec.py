"""How rows, updates and invalidation messages are written in Redis, and read back.

Rows are two text hashes per state (``Keys.q``: action -> Q as ``repr``/"%.17g", exact round
trip; ``Keys.n``: action -> visits). Every reader and writer of row data goes through the
functions here (and the Lua scripts in ``keys``), so another row encoding changes only those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.asyncio.client import Pipeline

from services.core.policies.qlearning import QUpdate
from services.decider.qstore.keys import Keys

# Rows per read transaction: a full row is ~66 fields; small transactions keep each reply
# well under a second of parsing even on a loaded machine (the client's socket timeout is 5 s).
ROWS_PER_TX = 64

# Replies that ``queue_row_read`` adds to a pipeline, per row.
ROW_READ_REPLIES = 2

# An update as Redis applied it: (state, action, Q, visits, version, previous version of the row).
RowWrite = tuple[int, str, float, int, int, int]


def as_str(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def queue_row_read(pipe: Pipeline, keys: Keys, state: int) -> None:
    """Queue the reads of one row; ``decode_row`` reads the ``ROW_READ_REPLIES`` replies."""
    pipe.hgetall(keys.q(state))
    pipe.hgetall(keys.n(state))


def decode_row(
    replies: Sequence[Any], name: Callable[[bytes | str], str] = as_str
) -> tuple[dict[str, float], dict[str, int]]:
    """({action: Q}, {action: visits}) of one row; ``name`` turns a raw field into an action id."""
    qraw, nraw = replies
    return {name(a): float(x) for a, x in qraw.items()}, {name(a): int(x) for a, x in nraw.items()}


def queue_row_write(pipe: Pipeline, keys: Keys, state: int, row: Mapping[str, tuple[float, int]]) -> None:
    """Queue the writes of {action: (Q, visits)} into one row (entries not given are kept)."""
    pipe.hset(keys.q(state), mapping={a: repr(q) for a, (q, _) in row.items()})
    pipe.hset(keys.n(state), mapping={a: n for a, (_, n) in row.items()})


def update_keys_args(keys: Keys, u: QUpdate, token: str, seq: int) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``UPDATE_LUA`` for one update, stamped (token, seq) for idempotency."""
    ks = [keys.q(u.state), keys.n(u.state), keys.q(u.next_state), keys.ver, keys.version, keys.applied]
    args: list[Any] = [
        u.state,
        u.action,
        repr(u.reward),
        repr(u.learning_rate),
        repr(u.discount),
        repr(u.init),
        token,
        seq,
        keys.channel,
    ]
    for a, init in zip(u.next_actions, u.next_inits, strict=True):
        args.append(a)
        args.append(repr(init))
    return ks, args


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


def decode_message(data: bytes | str, name: Callable[[bytes | str], str] = as_str) -> RowWrite | int | None:
    """An invalidation message: a ``RowWrite`` (one update), the version of a bulk write (an
    import, reset or transfer: reload everything), or None (not ours)."""
    msg = as_str(data)
    if msg.startswith("u|"):
        _, s, a, q, n, ver, prev = msg.split("|")
        return int(s), name(a), float(q), int(n), int(ver), int(prev)
    if msg.startswith("*|"):
        return int(msg[2:])
    return None
