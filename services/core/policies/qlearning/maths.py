"""The Q-learning maths (paper Algorithm 1), shared by every table. Pure: no I/O.

* ``initial_q``: the paper initialises Q(S, A) with random values. We draw them lazily, the
  first time an action is seen in a state, from a hash of (seed, state, action): every decider
  process and the Redis script then agree on the same "random" value without coordinating.
* ``q_learning_target``: Q(S,A) <- Q + lr [R + discount * max_a' Q(S',a') - Q]. The Redis Lua
  script in ``services.decider.qstore`` evaluates exactly this expression in the same order,
  so an in-memory table and the Redis table produce bit-identical values.
* ``QUpdate`` / ``apply_update``: one self-describing update and the new value it gives,
  rounded to float32 (``f32``): a table stores rows packed, one float32 per entry, and the Redis
  script rounds the same double to the same float32.
* ``VISITS_MAX``: visit counts saturate there (a 4-bit field of the packed row, 0 = no entry).
* ``ucb_score`` / ``ucb_argmax``: the exploration bonus (``QParams.explore_bonus``) and the
  argmax under it.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from services.core.policies.qlearning.corrections import CorrectionObs
from services.core.state import N_STATES

_N_INV = 4096
# Visits of an entry saturate here: the packed row keeps them in 4 bits (0 = no entry, k = k - 1
# visits). The visit-count learning rate 1 / (n + 1) therefore bottoms out at 1 / 15.
VISITS_MAX = 14
_F32 = struct.Struct("<f")


def f32(x: float) -> float:
    """``x`` rounded to the nearest float32 (round half to even, as C's cast): what a packed row
    stores. The Lua script packs the same double with ``struct.pack('<f')``."""
    return float(_F32.unpack(_F32.pack(x))[0])


_INV_SQRT = [1.0 / math.sqrt(n + 1) for n in range(_N_INV)]


@lru_cache(maxsize=1 << 18)
def initial_q(seed: int, state: int, action: str, low: float = 0.0, high: float = 1.0) -> float:
    """Deterministic pseudo-random initial Q(state, action) in [low, high).

    Hash-derived rather than drawn from an RNG so that every process (and every replay of the
    simulator) materialises the same value for an unseen entry with no shared state.
    """
    h = hashlib.blake2b(f"{seed}:{state}:{action}".encode(), digest_size=8).digest()
    u = int.from_bytes(h, "big") / 2.0**64
    return low + (high - low) * u


def q_learning_target(q_sa: float, reward: float, next_max: float, learning_rate: float, discount: float) -> float:
    """Algorithm 1's update. Keep the expression order: the Lua script mirrors it term for term."""
    return q_sa + learning_rate * (reward + discount * next_max - q_sa)


@dataclass(slots=True)
class QUpdate:
    """One Q(S,A) update, self-describing so that any table (memory or Redis) applies it alike.

    Treat it as immutable. Not ``frozen``: a frozen dataclass's ``__init__`` costs 2 us more, and
    one is built per inference on the decider's training path.

    ``init`` is Q(S,A)'s initial value if the entry does not exist yet; ``next_inits`` are the
    initial values of S' row entries, aligned with ``next_actions`` (the actions available now).
    ``correction``: an observation of the action's family for the table's learned profile
    corrections (the prior learner), applied in the same atomic step.
    """

    state: int
    action: str
    reward: float
    next_state: int
    next_actions: tuple[str, ...]
    init: float
    next_inits: tuple[float, ...]
    learning_rate: float
    discount: float
    correction: CorrectionObs | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.state < N_STATES or not 0 <= self.next_state < N_STATES:
            raise ValueError(f"state out of range: {self.state} -> {self.next_state}")
        if not math.isfinite(self.reward):
            raise ValueError(f"reward must be finite, got {self.reward}")
        if len(self.next_actions) != len(self.next_inits):
            raise ValueError("next_actions and next_inits must align")


def apply_update(
    row: Mapping[str, float], next_row: Mapping[str, float], u: QUpdate, next_max: float | None = None
) -> float:
    """New Q(S,A) given the current S row and S' row (both read *before* the write), as the
    float32 a packed row stores.

    ``next_max``: max over the S' row of ``u.next_actions`` when the caller already knows it (the
    policy's memo of that row); computed here otherwise."""
    q_sa = row.get(u.action)
    if q_sa is None:
        q_sa = u.init
    if next_max is not None:
        pass
    elif u.next_actions:
        vals = list(map(next_row.get, u.next_actions))
        try:
            next_max = max(vals)  # type: ignore[type-var]  # a missing entry (None) does not compare with a float
        except TypeError:
            next_max = None
        if next_max is None:  # missing entries: at their initial values
            next_max = max([u.next_inits[i] if v is None else v for i, v in enumerate(vals)])
    else:
        next_max = 0.0  # no action available after S: treat as terminal
    return f32(q_learning_target(q_sa, u.reward, next_max, u.learning_rate, u.discount))


def ucb_score(v: float, n: int, k: float) -> float:
    """An entry's rank while exploring: Q + k |Q| / sqrt(n + 1) (UCB1's bonus relative to |Q|)."""
    return v + k * abs(v) * (_INV_SQRT[n] if n < _N_INV else 1.0 / math.sqrt(n + 1))


def ucb_argmax(
    vals: Sequence[float],
    ns: Sequence[int],
    elig: Sequence[int],
    k: float,
    untried_first: bool,
    order: Sequence[int] | None = None,
) -> int:
    """The first index of ``elig`` with the highest rank (``untried_first`` and n == 0, then
    ``ucb_score``), without scoring every entry.

    Exact: an entry's score is at most v + c |v|, c = k for an untried entry and k / sqrt(2) for
    a tried one, which increases with v when c < 1; an entry whose v cannot reach the score of
    the entry holding the plain best value is skipped, the others are scored in full. ``order``
    (every index by descending value, when the caller keeps one) finds those without a scan.
    """
    pool = elig
    everyone = len(elig) == len(vals)  # elig is then 0..n-1 (the policy passes it so)
    has_fresh = (0 in ns) if everyone else any(ns[i] == 0 for i in elig)
    if has_fresh and untried_first:
        pool = [i for i in elig if ns[i] == 0]  # only while some action is still untried
        everyone = len(pool) == len(vals)
    c = k if has_fresh else k * _INV_SQRT[1]
    if c >= 1.0 or len(pool) <= 2:
        return max(pool, key=lambda i: ucb_score(vals[i], ns[i], k))
    if everyone and order is not None:
        b = order[0]
    else:
        b = vals.index(max(vals)) if everyone else max(pool, key=vals.__getitem__)
    ms = ucb_score(vals[b], ns[b], k)
    t = ms / (1.0 - c) if ms < 0.0 else ms / (1.0 + c)
    t -= 1e-9 * abs(t) + 1e-12  # slack for rounding: skipping must never drop a winner
    if everyone and order is not None:
        cand = []
        for i in order:
            if vals[i] < t:
                break
            cand.append(i)
        cand.sort()  # ties go to the first index
    else:
        cand = [i for i, v in enumerate(vals) if v >= t] if everyone else [i for i in pool if vals[i] >= t]
    return max(cand, key=lambda i: ucb_score(vals[i], ns[i], k))
