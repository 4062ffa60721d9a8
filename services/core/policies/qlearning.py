"""AutoScale's Q-learning core (paper Sec. IV, Algorithm 1). Pure: no I/O.

Pieces, from the inside out:

* ``initial_q``: the paper initialises Q(S, A) with random values. We draw them lazily, the
  first time an action is seen in a state, from a hash of (seed, state, action): every decider
  process and the Redis script then agree on the same "random" value without coordinating.
  That is ``QParams.q_init = "random"`` (the paper's). ``"nearest"`` instead seeds a missing
  entry from the nearest state, in Table I bin space, that holds a value for that action (the
  paper's transfer-learning idea, Sec. IV / VI-C, applied across states): see ``EntryIndex``.
* ``QParams.lr_schedule``: ``"constant"`` is Algorithm 1's fixed learning rate (0.9, Sec. V-C);
  ``"visits"`` uses 1 / (n + 1) for the (n + 1)-th update of an entry, floored at
  ``lr_floor`` (a sample average that forgets slowly), which averages out measurement noise.
* ``eligible_indices`` / ``epsilon_greedy``: the action choice. Accuracy masking (our default,
  switchable) never picks a target below ``accuracy_min``; with it off we have the paper's
  penalty-only behaviour, where eq. 5's ``R_accuracy - 100`` teaches the table to avoid them.
  Beyond the paper, while exploring (epsilon > 0): ``explore_untried`` tries every action of a
  state once before retrying any (most promising initial value first) and ``explore_bonus`` adds
  a UCB-style bonus that decays with an entry's visits; exploitation (epsilon 0) ranks Q alone.
  ``QParams.paper()`` is Algorithm 1 as published (the dataclass defaults); ``QParams.improved()``
  switches every option on (what ``services.evaluation`` reports as "autoscale").
* ``q_learning_target``: Q(S,A) <- Q + lr [R + discount * max_a' Q(S',a') - Q]. The Redis Lua
  script in ``services.decider.qstore`` evaluates exactly this expression in the same order,
  so an in-memory table and the Redis table produce bit-identical values.
* ``QTable``: the in-memory table (simulator, tests); ``QLearningPolicy``: the policy, which
  reads rows from any ``RowSource`` (``QTable`` or the Redis-backed ``QStore`` cache).
* Export format, strict validation and the cross-device transfer mapping, shared by both tables.

A row covers exactly the currently available actions: the stored table keeps values of
actions that disappeared (a runner that restarts must not lose what was learned), but argmax
and the max over S' only ever look at the actions offered now, and an action that appears is
given its initial value on first sight.

Consistency rule for initial values (every process, and the Redis script, must agree on what a
*missing* entry is worth when it is first written): the value a process uses for a missing
entry travels inside the ``QUpdate`` (``init`` for Q(S,A), ``next_inits`` for the S' row), and
the script applies the update to that value only when the field is absent. ``"random"`` values
are a pure function of (seed, state, action), so every process computes the same one.
``"nearest"`` values are read from the caller's cache of the table; two processes whose caches
momentarily differ (an update still in flight on the pub/sub channel) may propose different
values for the same missing field, and whichever update reaches Redis first materialises it --
from then on every process reads the stored value. An initial value is only a prior that
orders exploration; the first update replaces it (entirely with ``lr_schedule="visits"``).
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from typing import Any, Protocol

import numpy as np

from services.core.policies.base import Candidate, Decision, DecisionContext, Outcome
from services.core.policies.errors import NoCandidate
from services.core.schemas import Target
from services.core.state import DIMENSIONS, N_STATES, StateBins

# ============================================================================ parameters

Q_INITS: tuple[str, ...] = ("random", "nearest")
LR_SCHEDULES: tuple[str, ...] = ("constant", "visits")


@dataclass(frozen=True, slots=True)
class QParams:
    """Hyper-parameters (paper Sec. V-C: lr 0.9, discount 0.1, epsilon 0.1)."""

    learning_rate: float = 0.9
    discount: float = 0.1
    epsilon: float = 0.1
    accuracy_masking: bool = True
    # Random initial Q values are drawn from [init_low, init_high). Eq. 5 rewards are almost
    # always negative (-energy in mJ dominates), so small non-negative initial values are
    # optimistic: greedy selection tries every untried action of a state once before it
    # exploits, which is what lets the table settle within tens of runs.
    init_low: float = 0.0
    init_high: float = 1.0
    init_seed: int = 0
    # --- options beyond the paper (defaults = Algorithm 1 as published; ``improved()``: the
    # --- configuration the evaluation measures as "autoscale") -------------------------------
    # Initial value of a missing entry. "random": the paper's (above). "nearest": borrowed from
    # the nearest state (weighted Table I bin distance, ``_DIM_WEIGHTS``) that holds a value for
    # that action, within ``near_radius``, rescaled to this state (median ratio of this state's
    # values to the lenders' on the actions both hold); an action no state within the radius holds
    # ranks below every known value of the row (twice the worst); a row with nothing known nearby
    # borrows from any distance, else falls back to "random". Needs a table that keeps an
    # ``EntryIndex`` (QTable, QStore); the paper's transfer learning (Sec. VI-C) applied across
    # states, so a network never seen before starts from its neighbours' experience.
    q_init: str = "random"
    near_radius: int | None = 4
    # "nearest": borrowed values made optimistic (> 0) or pessimistic (< 0) by this fraction of
    # their magnitude (0: as estimated).
    init_optimism: float = 0.0
    # "constant": Algorithm 1's learning rate. "visits": max(lr_floor, 1 / (n + 1)) for the
    # (n + 1)-th update of the entry -- the first update replaces the initial value, later ones
    # average the measurement noise out (a sample mean that slowly forgets).
    lr_schedule: str = "constant"
    lr_floor: float = 0.05
    # Exploration bonus (0: off, the paper's pure epsilon-greedy). While exploring (epsilon > 0)
    # the greedy step ranks Q + explore_bonus * |Q| * sqrt(ln(N + 1) / (n + 1)), n = the entry's
    # visits, N = the state's (UCB1's bonus, relative to |Q| so that it means the same at 10 mJ
    # as at 2 J, with an initial value counting as one observation): one unlucky measurement
    # cannot bury an action for good. Pure exploitation (epsilon 0, e.g. the evaluation's test
    # windows) ranks Q alone.
    explore_bonus: float = 0.0
    # While exploring (epsilon > 0), an action never tried in this state ranks above every tried
    # one (UCB1 plays each arm once), the most promising initial value first. Unlike optimistic
    # initial values this never leaks into exploitation: with epsilon 0 an untried action is
    # worth its initial value.
    explore_untried: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {self.discount}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if not (math.isfinite(self.init_low) and math.isfinite(self.init_high) and self.init_low <= self.init_high):
            raise ValueError("init_low <= init_high, both finite")
        if self.q_init not in Q_INITS:
            raise ValueError(f"q_init must be one of {', '.join(Q_INITS)}, got {self.q_init!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0.0 < self.lr_floor <= 1.0:
            raise ValueError(f"lr_floor must be in (0, 1], got {self.lr_floor}")
        if not (math.isfinite(self.init_optimism) and -1.0 < self.init_optimism < 1.0):
            raise ValueError(f"init_optimism must be in (-1, 1), got {self.init_optimism}")
        if not (math.isfinite(self.explore_bonus) and self.explore_bonus >= 0.0):
            raise ValueError(f"explore_bonus must be finite and >= 0, got {self.explore_bonus}")
        if self.near_radius is not None and self.near_radius < 0:
            raise ValueError(f"near_radius must be >= 0 or None, got {self.near_radius}")

    @classmethod
    def improved(cls, **kw: Any) -> QParams:
        """Every option beyond the paper switched on, as evaluated (``services.evaluation``):
        nearest-state initial values, visit-count learning rate, UCB-style exploration that
        tries every action once while exploring. Pair it with ``reward_mode="qos"``."""
        kw.setdefault("q_init", "nearest")
        kw.setdefault("lr_schedule", "visits")
        kw.setdefault("explore_bonus", 0.2)
        kw.setdefault("explore_untried", True)
        return cls(**kw)

    @classmethod
    def paper(cls, **kw: Any) -> QParams:
        """Algorithm 1 as published: random initial values, constant learning rate."""
        kw.setdefault("q_init", "random")
        kw.setdefault("lr_schedule", "constant")
        return cls(**kw)

    @classmethod
    def from_settings(cls, settings: Any, seed: int | None = None) -> QParams:
        """From ``services.common.settings.Settings`` (duck-typed to keep this module light)."""
        s = seed if seed is not None else getattr(settings, "seed", None)
        return cls(
            learning_rate=float(settings.learning_rate),
            discount=float(settings.discount),
            epsilon=float(settings.epsilon),
            accuracy_masking=bool(settings.accuracy_masking),
            init_seed=int(s) if s is not None else 0,
            q_init=str(getattr(settings, "q_init", "random")),
            lr_schedule=str(getattr(settings, "lr_schedule", "constant")),
            lr_floor=float(getattr(settings, "lr_floor", 0.05)),
            explore_bonus=float(getattr(settings, "explore_bonus", 0.0)),
            explore_untried=bool(getattr(settings, "explore_untried", False)),
        )


# ============================================================================ pure core


@lru_cache(maxsize=1 << 18)
def initial_q(seed: int, state: int, action: str, low: float = 0.0, high: float = 1.0) -> float:
    """Deterministic pseudo-random initial Q(state, action) in [low, high).

    Hash-derived rather than drawn from an RNG so that every process (and every replay of the
    simulator) materialises the same value for an unseen entry with no shared state.
    """
    h = hashlib.blake2b(f"{seed}:{state}:{action}".encode(), digest_size=8).digest()
    u = int.from_bytes(h, "big") / 2.0**64
    return low + (high - low) * u


def _median_ratio(rs: list[float]) -> float:
    """Scale of this state's values relative to the neighbours' (rewards are costs: a heavier
    network costs more on every target while the targets' ranking transfers): the median ratio
    over the actions both hold, clamped to [1/20, 20]; 1.0 when they share none."""
    if not rs:
        return 1.0
    rs.sort()
    m = len(rs) // 2
    r = rs[m] if len(rs) % 2 else 0.5 * (rs[m - 1] + rs[m])
    return min(20.0, max(0.05, r))


def q_learning_target(q_sa: float, reward: float, next_max: float, learning_rate: float, discount: float) -> float:
    """Algorithm 1's update. Keep the expression order: the Lua script mirrors it term for term."""
    return q_sa + learning_rate * (reward + discount * next_max - q_sa)


def eligible_indices(accuracies: Sequence[float], accuracy_min: float | None, masking: bool) -> list[int]:
    """Indices of the candidates the learner may pick.

    With masking on, candidates below ``accuracy_min`` are never picked. If none reaches it
    (the decider answers 422 before deciding, so only a direct caller hits this), we fall back
    to the most accurate candidates: the closest we can get, and eq. 5 still penalises them.
    """
    n = len(accuracies)
    if not masking or accuracy_min is None:
        return list(range(n))
    ok = [i for i in range(n) if accuracies[i] >= accuracy_min]
    if ok or n == 0:
        return ok
    best = max(accuracies)
    return [i for i in range(n) if accuracies[i] == best]


def epsilon_greedy(
    values: Sequence[float], eligible: Sequence[int], epsilon: float, rng: random.Random
) -> tuple[int, bool]:
    """Pick an index among ``eligible``: uniformly with probability epsilon, else the argmax.

    Returns (index, explored). With epsilon == 0 the rng is not even consulted, so a greedy
    policy never explores and does not perturb a shared random stream. Ties go to the first
    candidate (stable, deterministic).
    """
    if not eligible:
        raise NoCandidate("no eligible candidate")
    if epsilon > 0.0 and rng.random() < epsilon:
        return eligible[rng.randrange(len(eligible))], True
    best_i = eligible[0]
    best_v = values[best_i]
    for i in eligible:
        v = values[i]
        if v > best_v:
            best_i, best_v = i, v
    return best_i, False


@dataclass(slots=True)
class QUpdate:
    """One Q(S,A) update, self-describing so that any table (memory or Redis) applies it alike.

    Treat it as immutable. Not ``frozen``: a frozen dataclass's ``__init__`` costs 2 us more, and
    one is built per inference on the decider's training path.

    ``init`` is Q(S,A)'s initial value if the entry does not exist yet; ``next_inits`` are the
    initial values of S' row entries, aligned with ``next_actions`` (the actions available now).
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
    """New Q(S,A) given the current S row and S' row (both read *before* the write).

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
            next_max = max(vals)  # a missing entry (None) does not compare with a float
        except TypeError:
            next_max = None
        if next_max is None:  # missing entries: at their initial values
            next_max = max([u.next_inits[i] if v is None else v for i, v in enumerate(vals)])
    else:
        next_max = 0.0  # no action available after S: treat as terminal
    return q_learning_target(q_sa, u.reward, next_max, u.learning_rate, u.discount)


# ============================================================================ nearest-state index

# Table I bins of every state, (N_STATES, 8): the space "nearest" measures distances in.
_BINS = np.array(
    [[getattr(StateBins.from_index(i), name) for name, _ in DIMENSIONS] for i in range(N_STATES)], dtype=np.int32
)
# Per-dimension weights of the distance. One co-runner bin (CPU or memory) away is the nearest
# kind of neighbour (1): the same network under slightly more or less interference ranks the
# targets almost alike. One NN bin away -- another network -- costs 2. A different RSSI bin costs
# 3: a weak Wi-Fi or Wi-Fi Direct signal turns cloud or peer targets from the cheapest into the
# dearest, so another network under the same signal is the better guide.
_DIM_WEIGHTS = np.array(
    [{"co_cpu": 1, "co_mem": 1, "rssi_w": 3, "rssi_p": 3}.get(name, 2) for name, _ in DIMENSIONS], dtype=np.int32
)
_NO_STATE = -1


class EntryIndex:
    """Which (state, action) entries a Q table holds, and each action's nearest holder.

    Kept by the tables themselves (``QTable``, ``QStore``'s cache) in step with their rows:
    ``add`` when an entry appears, ``set_row`` when a row is replaced, ``discard_state`` /
    ``clear`` / ``rebuild`` when rows go or are reloaded.

    Distance between states = weighted L1 over their Table I bin indices (every dimension is
    ordinal: small < medium < large, none < small < ..., regular < weak; weights in
    ``_DIM_WEIGHTS``: runtime variance first, then the NN bins); ties go to the lower state index,
    which makes the answer a pure function of the set of entries.

    ``nearest`` answers are cached per queried state and kept current incrementally: an ``add``
    updates every cached answer it improves (one vectorised comparison), anything that removes
    entries drops the cache. ``version(state)`` changes whenever ``state``'s answers may have
    changed, so callers can memoise what they derive from them.
    """

    __slots__ = (
        "_aidx",
        "_bins",
        "_ch",
        "_ck",
        "_col",
        "_has",
        "_qbins",
        "_qidx",
        "_qstates",
        "_qver",
        "_states",
        "generation",
    )

    _BIG = np.iinfo(np.int64).max

    def __init__(self) -> None:
        self._aidx: dict[str, int] = {}
        self._col: dict[int, int] = {}
        self._states = np.zeros(64, dtype=np.int64)
        self._has = np.zeros((16, 64), dtype=bool)
        self._bins = np.zeros((64, len(DIMENSIONS)), dtype=np.int32)
        # cache of answers: one row per queried state, one column per action row
        self._qidx: dict[int, int] = {}
        self._qstates = np.zeros(64, dtype=np.int64)
        self._qbins = np.zeros((64, len(DIMENSIONS)), dtype=np.int32)
        self._ck = np.full((64, 16), self._BIG, dtype=np.int64)  # best key (distance * N + state)
        self._ch = np.full((64, 16), _NO_STATE, dtype=np.int64)  # nearest holder
        self._qver: dict[int, int] = {}
        self.generation = 0  # bumped whenever the cache is dropped (rows replaced or removed)

    # --- bookkeeping --------------------------------------------------------------------
    def _row(self, action: str) -> int:
        i = self._aidx.get(action)
        if i is None:
            i = len(self._aidx)
            if i >= self._has.shape[0]:
                self._has = np.concatenate([self._has, np.zeros_like(self._has)], axis=0)
            if i >= self._ck.shape[1]:
                self._ck = np.concatenate([self._ck, np.full_like(self._ck, self._BIG)], axis=1)
                self._ch = np.concatenate([self._ch, np.full_like(self._ch, _NO_STATE)], axis=1)
            self._aidx[action] = i
        return i

    def _column(self, state: int) -> int:
        c = self._col.get(state)
        if c is None:
            c = len(self._col)
            if c >= self._has.shape[1]:
                self._has = np.concatenate([self._has, np.zeros_like(self._has)], axis=1)
                self._states = np.concatenate([self._states, np.zeros_like(self._states)])
                self._bins = np.concatenate([self._bins, np.zeros_like(self._bins)])
            self._col[state] = c
            self._states[c] = state
            self._bins[c] = _BINS[state]
        return c

    def _drop_cache(self) -> None:
        self._qidx.clear()
        self.generation += 1

    # --- updates --------------------------------------------------------------------------
    def add(self, state: int, action: str) -> None:
        i, c = self._row(action), self._column(state)
        if self._has[i, c]:
            return
        self._has[i, c] = True
        nq = len(self._qidx)
        if nq:
            qs = self._qstates[:nq]
            k = (np.abs(self._qbins[:nq] - _BINS[state]) * _DIM_WEIGHTS).sum(axis=1).astype(np.int64) * N_STATES + state
            k[qs == state] = self._BIG  # never itself
            better = k < self._ck[:nq, i]
            if better.any():
                self._ck[:nq, i] = np.where(better, k, self._ck[:nq, i])
                self._ch[:nq, i] = np.where(better, state, self._ch[:nq, i])
                for q in qs[better].tolist():
                    self._qver[q] = self._qver.get(q, 0) + 1

    def set_row(self, state: int, actions: Iterable[str]) -> None:
        c = self._column(state)
        self._has[:, c] = False
        for a in actions:
            i = self._row(a)  # may grow self._has: index only after
            self._has[i, c] = True
        self._drop_cache()

    def discard_state(self, state: int) -> None:
        c = self._col.get(state)
        if c is not None:
            self._has[:, c] = False
        self._drop_cache()

    def clear(self) -> None:
        self._has[:] = False
        self._drop_cache()

    def rebuild(self, rows: Mapping[int, Mapping[str, Any]]) -> None:
        self._has[:] = False
        for s, row in rows.items():
            for a in row:
                i, c = self._row(a), self._column(s)  # may grow self._has: index only after
                self._has[i, c] = True
        self._drop_cache()

    # --- queries --------------------------------------------------------------------------
    def holds(self, state: int, action: str) -> bool:
        i, c = self._aidx.get(action), self._col.get(state)
        return i is not None and c is not None and bool(self._has[i, c])

    def version(self, state: int) -> tuple[int, int]:
        """Changes whenever ``nearest(state, ...)`` may answer differently."""
        return self.generation, self._qver.get(state, 0)

    def _query_row(self, state: int) -> int:
        r = self._qidx.get(state)
        if r is not None:
            return r
        r = len(self._qidx)
        if r >= self._ck.shape[0]:
            self._ck = np.concatenate([self._ck, np.full_like(self._ck, self._BIG)], axis=0)
            self._ch = np.concatenate([self._ch, np.full_like(self._ch, _NO_STATE)], axis=0)
            self._qstates = np.concatenate([self._qstates, np.zeros_like(self._qstates)])
            self._qbins = np.concatenate([self._qbins, np.zeros_like(self._qbins)])
        self._qidx[state] = r
        self._qstates[r] = state
        self._qbins[r] = _BINS[state]
        n, na = len(self._col), len(self._aidx)
        self._ck[r, :] = self._BIG
        self._ch[r, :] = _NO_STATE
        if n and na:
            states = self._states[:n]
            key = (np.abs(self._bins[:n] - _BINS[state]) * _DIM_WEIGHTS).sum(axis=1).astype(
                np.int64
            ) * N_STATES + states
            key[states == state] = self._BIG
            masked = np.where(self._has[:na, :n], key, self._BIG)
            best = masked.argmin(axis=1)
            bk = masked[np.arange(na), best]
            self._ck[r, :na] = bk
            self._ch[r, :na] = np.where(bk != self._BIG, states[best], _NO_STATE)
        self._qver[state] = self._qver.get(state, 0) + 1
        return r

    def nearest(self, state: int, actions: Sequence[str]) -> list[int]:
        """For each action, the nearest *other* state holding a value for it (-1: none)."""
        return self.nearest_with_distance(state, actions)[0]

    def nearest_with_distance(self, state: int, actions: Sequence[str]) -> tuple[list[int], list[int]]:
        """``nearest`` and the weighted distance to each holder (-1 where none)."""
        r = self._query_row(state)
        ch, ck = self._ch[r], self._ck[r]
        aidx = self._aidx
        near, dist = [], []
        for a in actions:
            i = aidx.get(a)
            h = int(ch[i]) if i is not None else _NO_STATE
            near.append(h)
            dist.append(int(ck[i]) // N_STATES if h >= 0 else -1)
        return near, dist


# ============================================================================ tables


class RowSource(Protocol):
    """Where a QLearningPolicy reads Q rows from and sends its updates to.

    ``row`` must be cheap and free of I/O (it is on the decision path); the mapping may lack
    actions never stored for that state, and callers must not mutate it. ``learn`` must not
    block (the Redis store applies its update in the background).
    """

    def row(self, state: int) -> Mapping[str, float]: ...

    def learn(self, update: QUpdate, next_max: float | None = None) -> None: ...


_EMPTY: Mapping[str, float] = {}
_EMPTY_N: Mapping[str, int] = {}
_N_INV = 4096
_INV_SQRT = [1.0 / math.sqrt(n + 1) for n in range(_N_INV)]


@dataclass
class QTable:
    """In-memory Q table: {state: {action: Q}} and visit counts. For the simulator and tests."""

    q: dict[int, dict[str, float]] = field(default_factory=dict)
    n: dict[int, dict[str, int]] = field(default_factory=dict)
    entries: EntryIndex = field(default_factory=EntryIndex, repr=False, compare=False)
    writes: int = field(default=0, repr=False, compare=False)  # bumped on every change (memo key)

    def __post_init__(self) -> None:
        if self.q:
            self.entries.rebuild(self.q)

    def row(self, state: int) -> Mapping[str, float]:
        return self.q.get(state, _EMPTY)

    def visits(self, state: int) -> Mapping[str, int]:
        return self.n.get(state, {})  # type: ignore[return-value]

    def learn(self, update: QUpdate, next_max: float | None = None) -> None:
        new = apply_update(self.q.get(update.state, _EMPTY), self.q.get(update.next_state, _EMPTY), update, next_max)
        row = self.q.get(update.state)
        if row is None:
            row = self.q[update.state] = {}
        if update.action not in row:
            self.entries.add(update.state, update.action)
        row[update.action] = new
        nrow = self.n.setdefault(update.state, {})
        nrow[update.action] = nrow.get(update.action, 0) + 1
        self.writes += 1

    def sync_entries(self) -> None:
        """Re-derive the entry index after ``q`` was edited directly."""
        self.entries.rebuild(self.q)
        self.writes += 1

    def reset(self) -> None:
        self.q.clear()
        self.n.clear()
        self.entries.clear()
        self.writes += 1

    # --- export / import in the same format as the Redis store ---------------------------
    def export(self, device: str, actions: Iterable[str] | None = None) -> dict[str, Any]:
        acts = set(actions or ())
        for r in self.q.values():
            acts.update(r)
        states = {
            str(s): {a: {"q": v, "n": self.n.get(s, {}).get(a, 0)} for a, v in sorted(row.items())}
            for s, row in sorted(self.q.items())
            if row
        }
        return {"format_version": EXPORT_FORMAT_VERSION, "device": device, "actions": sorted(acts), "states": states}

    def load(self, table: ValidatedTable, mode: str = "replace") -> None:
        if mode not in ("replace", "merge"):
            raise ValueError("mode must be 'replace' or 'merge'")
        if mode == "replace":
            self.reset()
        for s, row in table.states.items():
            qrow = self.q.setdefault(s, {})
            nrow = self.n.setdefault(s, {})
            for a, (qv, nv) in row.items():
                qrow[a] = qv
                nrow[a] = nv
        self.entries.rebuild(self.q)
        self.writes += 1

    def stats(self) -> dict[str, int]:
        return {
            "states": sum(1 for r in self.q.values() if r),
            "states_visited": sum(1 for r in self.n.values() if any(r.values())),
            "entries": sum(len(r) for r in self.q.values()),
            "visits_total": sum(sum(r.values()) for r in self.n.values()),
        }


# ============================================================================ the policy


@dataclass(frozen=True, slots=True)
class _CandInfo:
    candidates: tuple[Candidate, ...]
    ids: tuple[str, ...]
    accuracies: tuple[float, ...]
    all_idx: tuple[int, ...]
    index: dict[str, int]  # action id -> position


class _CandidateIds:
    """Memo of candidate ids per candidates tuple.

    ``Target.id`` builds a string on every access; on a 66-action row that alone would cost more
    than the whole lookup. The decider reuses candidate tuples between requests, so a small
    identity-keyed memo (holding the tuple, so its id cannot be recycled) removes that cost.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._memo: dict[int, _CandInfo] = {}

    def get(self, cands: tuple[Candidate, ...]) -> _CandInfo:
        hit = self._memo.get(id(cands))
        if hit is not None and hit.candidates is cands:
            return hit
        ids = tuple(c.target.id for c in cands)
        info = _CandInfo(
            cands,
            ids,
            tuple(float(c.accuracy) for c in cands),
            tuple(range(len(cands))),
            {a: i for i, a in enumerate(ids)},
        )
        if len(self._memo) >= self._size:
            self._memo.pop(next(iter(self._memo)))
        self._memo[id(cands)] = info
        return info


candidate_ids = _CandidateIds()


@dataclass(slots=True)
class _RowMemo:
    """The last row a policy read, valid while the source's ``writes`` counter says so."""

    writes: int
    state: int
    ids: tuple[str, ...]
    vals: list[float]  # aligned with ids; missing entries at their initial value
    full: bool  # no entry was missing: every value is a stored one
    ns: list[int] | None = None  # visit counts aligned with ids, read on demand
    total: int = 0  # the state's visits over every action it holds
    best: int = -1  # first index of the highest value; -1: not known yet
    order: list[int] | None = None  # indices by descending value (exploring argmax), on demand


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


class QLearningPolicy:
    """AutoScale: epsilon-greedy over the cached Q row of the observed state (Algorithm 1).

    ``next_state`` gives S' for the update. By default S' is the state of the request itself:
    the decider re-observes the same model under a telemetry snapshot that refreshes every
    ~0.5 s, so the state observed when the inference ends is almost always the one it began in
    (and with the paper's discount 0.1 the S' term is a small correction anyway). The simulator
    can pass a hook that returns the true next state.
    """

    name = "autoscale"

    def __init__(
        self,
        source: RowSource | None = None,
        params: QParams = QParams(),
        *,
        next_state: Callable[[DecisionContext], int] | None = None,
        name: str = "autoscale",
    ) -> None:
        self.source: RowSource = source if source is not None else QTable()
        self.params = params
        self._next_state = next_state
        self.name = name
        self._init_memo: dict[tuple[int, tuple[str, ...]], tuple[float, ...]] = {}
        # "nearest": per (state, action tuple), the nearest holder of each action and its row,
        # valid for one ``EntryIndex.version(state)``.
        self._near_memo: dict[
            tuple[int, tuple[str, ...]], tuple[tuple[int, int], list[Mapping[str, float] | None], list[bool]]
        ] = {}
        self._memo: _RowMemo | None = None

    # --- initial values ------------------------------------------------------------------
    def _entries(self) -> EntryIndex | None:
        if self.params.q_init != "nearest":
            return None
        return getattr(self.source, "entries", None)

    def _inits(self, state: int, ids: tuple[str, ...]) -> tuple[float, ...]:
        """Random initial values of a row's actions, memoised per (state, action set): the hash
        per action would otherwise dominate the cost of an update."""
        key = (state, ids)
        hit = self._init_memo.get(key)
        if hit is None:
            p = self.params
            hit = tuple(initial_q(p.init_seed, state, a, p.init_low, p.init_high) for a in ids)
            if len(self._init_memo) >= 65_536:
                self._init_memo.clear()
            self._init_memo[key] = hit
        return hit

    def _holder_rows(
        self, entries: EntryIndex, state: int, ids: tuple[str, ...]
    ) -> tuple[list[Mapping[str, float] | None], list[bool]]:
        """The row of each action's nearest holder (None: no state holds it), and whether that
        holder is within ``near_radius``. Row objects are kept: a table mutates rows in place,
        and replacing one drops the index's cache."""
        key = (state, ids)
        ver = entries.version(state)
        hit = self._near_memo.get(key)
        if hit is not None and hit[0] == ver:
            return hit[1], hit[2]
        near, dist = entries.nearest_with_distance(state, ids)
        ver = entries.version(state)  # a first query registers the state
        row_of = self.source.row
        rows = [row_of(s2) if s2 >= 0 else None for s2 in near]
        radius = self.params.near_radius
        close = [s2 >= 0 and (radius is None or d <= radius) for s2, d in zip(near, dist)]
        if len(self._near_memo) >= 16_384:
            self._near_memo.clear()
        self._near_memo[key] = (ver, rows, close)
        return rows, close

    def _fill(self, state: int, ids: tuple[str, ...], vals: list[float | None]) -> list[float]:
        """``vals`` (the stored row, None where missing) with every missing entry at its initial
        value: the random one, or with ``q_init="nearest"`` the current value of the nearest
        state holding that action (random where none does)."""
        inits = self._inits(state, ids)
        entries = self._entries()
        if entries is None:
            return [inits[i] if v is None else v for i, v in enumerate(vals)]
        hrows, close = self._holder_rows(entries, state, ids)
        out: list[float] = list(vals)  # type: ignore[arg-type]
        missing: list[int] = []
        ratios: list[float] = []
        for i, v in enumerate(vals):
            if v is None:
                missing.append(i)
            elif v < 0.0 and close[i]:
                hr = hrows[i]
                if hr is not None:
                    sd = hr.get(ids[i])
                    if sd is not None and sd < 0.0:
                        ratios.append(v / sd)  # this state's value vs the neighbour's, same action
        r = _median_ratio(ratios)
        opt = self.params.init_optimism
        neg, pos = r * (1.0 - opt), r * (1.0 + opt)  # rescaled, then optimistic by opt x |value|
        far: list[int] = []
        for i in missing:
            hr = hrows[i]
            sd = hr.get(ids[i]) if hr is not None and close[i] else None
            if sd is None:
                far.append(i)
            else:
                out[i] = sd * (neg if sd < 0.0 else pos)
        if far:
            known = [v for v in out if v is not None]
            if known:
                # No state within near_radius holds the action: a far state's cost (a network
                # ten times lighter, another signal) says little about it here. Rank it below
                # every known value -- twice the worst one -- so that exploitation never bets on
                # it (exploration still tries it).
                worst = min(known)
                low = worst - abs(worst) - 1.0
                for i in far:
                    out[i] = low
            else:
                # Nothing known nearby at all: the nearest holder at any distance, else the random
                # initial value (the paper's).
                for i in far:
                    hr = hrows[i]
                    sd = hr.get(ids[i]) if hr is not None else None
                    out[i] = inits[i] if sd is None else sd
        return out

    def initial_value(self, state: int, action: str) -> float:
        """What a missing Q(state, action) is worth now (see ``q_init``)."""
        return self._fill(state, (action,), [None])[0]

    def row_view(self, state: int, actions: Iterable[str]) -> dict[str, float]:
        """The row as the policy sees it: exactly ``actions``, unseen ones at their initial value."""
        ids = tuple(actions)
        row = self.source.row(state)
        vals = self._fill(state, ids, list(map(row.get, ids)))
        return dict(zip(ids, vals))

    def _values(self, state: int, ids: tuple[str, ...]) -> list[float]:
        """The row of ``state`` over ``ids``, missing entries at their initial value. Callers
        must not mutate the list: it is memoised.

        A decision and the update that follows it read the same row of the same table (a source
        that counts its writes tells us), so the last row read is kept until the next write."""
        writes = getattr(self.source, "writes", None)
        m = self._memo
        if writes is not None and m is not None and m.writes == writes and m.state == state and m.ids is ids:
            return m.vals
        vals = list(map(self.source.row(state).get, ids))  # one C-level pass
        try:
            top = max(vals)  # a missing entry (None) does not compare with a float
        except TypeError:
            top = None
        if top is None:  # unseen actions: their initial values
            out = self._fill(state, ids, vals)
            best = -1
        else:
            out, best = vals, vals.index(top)  # type: ignore[assignment]
        if writes is not None:
            self._memo = _RowMemo(writes, state, ids, out, top is not None, best=best)
        return out

    def _visit_counts(self, state: int, ids: tuple[str, ...]) -> tuple[list[int], int]:
        """Visit counts aligned with ``ids`` and the state's total, memoised with the row (call
        ``_values`` for the same row first)."""
        m = self._memo
        valid = m is not None and m.writes == getattr(self.source, "writes", None) and m.state == state and m.ids is ids
        if valid and m.ns is not None:  # type: ignore[union-attr]
            return m.ns, m.total  # type: ignore[union-attr]
        visits = getattr(self.source, "visits", None)
        nrow = visits(state) if visits is not None else _EMPTY_N
        ns = list(map(nrow.get, ids, repeat(0, len(ids))))
        total = sum(nrow.values())
        if valid:
            m.ns, m.total = ns, total  # type: ignore[union-attr]
        return ns, total

    # --- Policy protocol -------------------------------------------------------------------
    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        info = candidate_ids.get(ctx.candidates)
        if not info.ids:
            raise NoCandidate("no candidate target offered")
        p = self.params
        if ctx.accuracy_min is None or not p.accuracy_masking:
            elig: Sequence[int] = info.all_idx
        else:
            elig = eligible_indices(info.accuracies, ctx.accuracy_min, True)
        if p.epsilon > 0.0 and rng.random() < p.epsilon:
            i = elig[rng.randrange(len(elig))]
            return Decision(ctx.candidates[i].target, explored=True)
        vals = self._values(ctx.state, info.ids)
        if (p.explore_bonus > 0.0 or p.explore_untried) and p.epsilon > 0.0:
            ns, total = self._visit_counts(ctx.state, info.ids)
            k = p.explore_bonus * math.sqrt(math.log(total + 1.0)) if p.explore_bonus > 0.0 else 0.0
            m = self._memo
            order = None
            if m is not None and m.vals is vals and m.ns is ns:
                if m.order is None:
                    m.order = sorted(range(len(vals)), key=vals.__getitem__, reverse=True)
                order = m.order
            best_i = ucb_argmax(vals, ns, elig, k, p.explore_untried, order)
        elif elig is info.all_idx:
            m = self._memo
            if m is not None and m.vals is vals:  # the memo's argmax, kept through updates
                if m.best < 0:
                    m.best = vals.index(max(vals))
                best_i = m.best
            else:
                best_i = vals.index(max(vals))  # first of equal values, like max() below
        else:
            # max() keeps the first of equal values: ties go to the earlier candidate.
            best_i = max(elig, key=vals.__getitem__)
        return Decision(ctx.candidates[best_i].target, explored=False)

    def learning_rate(self, state: int, action: str) -> float:
        """The learning rate of the next update of Q(state, action) (``lr_schedule``)."""
        p = self.params
        if p.lr_schedule == "constant":
            return p.learning_rate
        visits = getattr(self.source, "visits", None)
        n = visits(state).get(action, 0) if visits is not None else 0
        return max(p.lr_floor, 1.0 / (n + 1))

    def make_update(
        self, ctx: DecisionContext, decision: Decision, reward: float, info: _CandInfo | None = None
    ) -> QUpdate:
        p = self.params
        if info is None:
            info = candidate_ids.get(ctx.candidates)
        s = ctx.state
        s2 = self._next_state(ctx) if self._next_state is not None else s
        action = decision.target.id
        if self._entries() is None:
            init = initial_q(p.init_seed, s, action, p.init_low, p.init_high)
            next_inits = self._inits(s2, info.ids)
        else:
            # The values this process would use for missing entries, shipped with the update so
            # that the Redis script starts from the same ones (see the module's consistency rule).
            init = self.source.row(s).get(action)
            if init is None:
                init = self.initial_value(s, action)
            next_inits = tuple(self._values(s2, info.ids))
        return QUpdate(
            state=s,
            action=action,
            reward=float(reward),
            next_state=s2,
            next_actions=info.ids,
            init=init,
            next_inits=next_inits,
            learning_rate=self.learning_rate(s, action),
            discount=p.discount,
        )

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None:
        info = candidate_ids.get(ctx.candidates)
        u = self.make_update(ctx, decision, reward, info)
        before = getattr(self.source, "writes", None)
        m = self._memo
        if (
            m is not None
            and before is not None
            and m.writes == before
            and m.full
            and m.state == u.next_state
            and m.ids is u.next_actions
        ):
            # S' is the row this policy holds: its max is known (the S' row with no initial values
            # in it is exactly what apply_update would read).
            self.source.learn(u, m.vals[m.best] if m.best >= 0 else max(m.vals))
        else:
            self.source.learn(u)
        # The next decision in this state would re-read the row it just read, changed in one
        # entry: patch the memo instead. Only for a row with no initial values in it (those may
        # depend on the entry that changed) and when this update was the only write. In place:
        # no caller keeps the lists past its call.
        m = self._memo
        if m is None or before is None or not m.full or m.writes != before or m.state != u.state:
            return
        after = self.source.writes  # type: ignore[attr-defined]
        i = info.index.get(u.action)
        if i is None or after != before + 1 or m.ids is not info.ids:
            return
        new = self.source.row(u.state)[u.action]
        b = m.best
        if b >= 0:
            if i == b:
                if new < m.vals[i]:
                    m.best = -1  # the best fell: find the new one when asked
            elif new > m.vals[b] or (new == m.vals[b] and i < b):
                m.best = i
        old = m.vals[i]
        m.vals[i] = new
        if m.order is not None and new != old:  # move i to its place in the descending order
            m.order.remove(i)
            bisect.insort(m.order, i, key=lambda j: -m.vals[j])
        if m.ns is not None:
            n_new = self.source.visits(u.state).get(u.action, 0)  # type: ignore[attr-defined]
            m.total += n_new - m.ns[i]
            m.ns[i] = n_new
        m.writes = after


# ============================================================================ export format

EXPORT_FORMAT_VERSION = 1
_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOP_KEYS_REQUIRED = ("format_version", "device", "actions", "states")
_TOP_KEYS_OPTIONAL = ("exported_at", "params", "stats")
MAX_ACTIONS = 1024


class QTableImportError(ValueError):
    """A Q-table payload was refused. ``field`` names the offending field (dotted path).

    ``kind`` is "malformed" (bad shape/values) or "mismatch" (well formed, but for another
    device or with actions this device does not have).
    """

    def __init__(self, field: str | None, message: str, kind: str = "malformed") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.kind = kind


@dataclass(frozen=True, slots=True)
class ValidatedTable:
    device: str
    actions: tuple[str, ...]
    states: dict[int, dict[str, tuple[float, int]]]  # state -> action -> (q, n)

    @property
    def entries(self) -> int:
        return sum(len(r) for r in self.states.values())

    def to_export(self) -> dict[str, Any]:
        return {
            "format_version": EXPORT_FORMAT_VERSION,
            "device": self.device,
            "actions": list(self.actions),
            "states": {
                str(s): {a: {"q": q, "n": n} for a, (q, n) in sorted(row.items())}
                for s, row in sorted(self.states.items())
            },
        }


def valid_device(name: object) -> bool:
    return isinstance(name, str) and bool(_DEVICE_RE.match(name))


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_export(
    data: object,
    *,
    expect_device: str | None = None,
    allowed_actions: Collection[str] | None = None,
) -> ValidatedTable:
    """Check a Q-table payload completely; raise ``QTableImportError`` at the first problem.

    Nothing is written by this function, so a caller that validates first and writes after
    leaves the table unchanged on any error.
    """
    if not isinstance(data, dict):
        raise QTableImportError("body", "expected a JSON object in the export format")
    for k in data:
        if k not in _TOP_KEYS_REQUIRED and k not in _TOP_KEYS_OPTIONAL:
            raise QTableImportError(str(k), "unknown field")
    for k in _TOP_KEYS_REQUIRED:
        if k not in data:
            raise QTableImportError(k, "required field missing")
    fv = data["format_version"]
    if not isinstance(fv, int) or isinstance(fv, bool) or fv != EXPORT_FORMAT_VERSION:
        raise QTableImportError(
            "format_version", f"unsupported format version {fv!r}; expected {EXPORT_FORMAT_VERSION}"
        )
    device = data["device"]
    if not valid_device(device):
        raise QTableImportError("device", "must be a device profile name ([A-Za-z0-9_.-], up to 64 chars)")
    if expect_device is not None and device != expect_device:
        raise QTableImportError(
            "device", f"table is for device {device!r}, this store is {expect_device!r} (use transfer)", "mismatch"
        )
    actions = data["actions"]
    if not isinstance(actions, list):
        raise QTableImportError("actions", "expected a list of action ids")
    if len(actions) > MAX_ACTIONS:
        raise QTableImportError("actions", f"at most {MAX_ACTIONS} actions")
    seen: set[str] = set()
    for i, a in enumerate(actions):
        f = f"actions[{i}]"
        if not isinstance(a, str):
            raise QTableImportError(f, "action ids are strings")
        try:
            if Target.parse(a).id != a:
                raise ValueError("not canonical")
        except Exception:
            raise QTableImportError(f, f"{a!r} is not an action id like 'edge/cpu/int8@3'") from None
        if a in seen:
            raise QTableImportError(f, f"duplicate action {a!r}")
        if allowed_actions is not None and a not in allowed_actions:
            raise QTableImportError(f, f"this device has no action {a!r}", "mismatch")
        seen.add(a)
    states = data["states"]
    if not isinstance(states, dict):
        raise QTableImportError("states", "expected an object {state index: {action: {q, n}}}")
    out: dict[int, dict[str, tuple[float, int]]] = {}
    for sk, row in states.items():
        f = f"states.{sk}"
        if not isinstance(sk, str) or not sk.isdigit() or (len(sk) > 1 and sk[0] == "0"):
            raise QTableImportError(f, "state keys are decimal indices")
        s = int(sk)
        if not 0 <= s < N_STATES:
            raise QTableImportError(f, f"state index must be in [0, {N_STATES})")
        if not isinstance(row, dict):
            raise QTableImportError(f, "expected an object {action: {q, n}}")
        vals: dict[str, tuple[float, int]] = {}
        for a, entry in row.items():
            fa = f"{f}.{a}"
            if a not in seen:
                raise QTableImportError(fa, "action not listed in `actions`")
            if not isinstance(entry, dict) or set(entry) != {"q", "n"}:
                raise QTableImportError(fa, 'expected exactly {"q": number, "n": integer}')
            q, n = entry["q"], entry["n"]
            if not _is_number(q) or not math.isfinite(float(q)):
                raise QTableImportError(f"{fa}.q", "must be a finite number")
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise QTableImportError(f"{fa}.n", "must be a non-negative integer")
            vals[a] = (float(q), int(n))
        if vals:
            out[s] = vals
    return ValidatedTable(device=device, actions=tuple(actions), states=out)


# ============================================================================ transfer learning


def _dvfs_steps(actions: Iterable[str]) -> dict[str, int]:
    """base id (runner/processor/precision) -> number of DVFS steps (max index + 1)."""
    steps: dict[str, int] = {}
    for a in actions:
        base, _, d = a.partition("@")
        if d:
            steps[base] = max(steps.get(base, 0), int(d) + 1)
    return steps


def transfer_mapping(src_actions: Iterable[str], dest_actions: Iterable[str]) -> dict[str, str]:
    """For each destination action, the source action whose Q values it inherits.

    The paper transfers a table trained on one phone to another (Sec. VI-C) to speed up
    convergence; the phones differ in DVFS steps and processors. Rules, by destination action:

    1. the same action id exists on the source (cloud and peer targets, DSP, fixed targets,
       DVFS steps when both devices have the same number of steps): take it;
    2. same runner/processor/precision with DVFS steps on both sides: take the source step at
       the same *relative* position, round(i_dest / (N_dest - 1) * (N_src - 1)) -- endpoints
       map to endpoints (lowest to lowest, top to top), e.g. Mi8Pro CPU 23 steps -> Galaxy
       S10e 21 steps (its step 20 takes Mi8Pro's 22, step 10 takes 11), GPU 7 -> 9;
    3. a fixed-frequency destination action (no ``@step``) takes the source's top step, and a
       fixed-frequency source action feeds only the destination's top step (a fixed target
       runs at the governor's top frequency);
    4. otherwise (a processor or precision the source does not have) nothing: the entry keeps
       its lazy random initial value. Source actions no destination action maps to (e.g. the
       DSP when the destination has none) are dropped.
    """
    src = list(src_actions)
    src_set = set(src)
    src_steps = _dvfs_steps(src)
    dest = list(dest_actions)
    dest_steps = _dvfs_steps(dest)
    mapping: dict[str, str] = {}
    for d in dest:
        base, _, step = d.partition("@")
        ns = src_steps.get(base)
        if d in src_set and not (step and ns != dest_steps[base]):
            mapping[d] = d  # same action; DVFS steps only when both sides have as many steps
            continue
        if ns:
            if step:
                nd = dest_steps[base]
                rel = int(step) / (nd - 1) if nd > 1 else 1.0
            else:
                rel = 1.0
            si = int(round(rel * (ns - 1)))
            cand = f"{base}@{si}"
            if cand in src_set:
                mapping[d] = cand
            else:  # sparse source step list: nearest existing step
                present = [int(a.partition("@")[2]) for a in src if a.partition("@")[0] == base and "@" in a]
                if present:
                    mapping[d] = f"{base}@{min(present, key=lambda x: (abs(x - si), -x))}"
        elif base in src_set and step and int(step) == dest_steps[base] - 1:
            mapping[d] = base
    return mapping


@dataclass(frozen=True, slots=True)
class TransferReport:
    from_device: str
    to_device: str
    mapping: dict[str, str]
    entries_copied: int
    entries_dropped: int
    states: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "from_device": self.from_device,
            "to_device": self.to_device,
            "mapping": dict(sorted(self.mapping.items())),
            "entries_copied": self.entries_copied,
            "entries_dropped": self.entries_dropped,
            "states": self.states,
        }


def transfer_table(
    src: ValidatedTable, to_device: str, dest_actions: Sequence[str]
) -> tuple[ValidatedTable, TransferReport]:
    """Initialise ``to_device``'s table from ``src`` keeping only the destination's actions.

    Visit counts start at 0: they count this device's own experience, and the Q values are
    only a starting point (the paper's "learning transfer").
    """
    mapping = transfer_mapping(src.actions, dest_actions)
    used_src = set(mapping.values())
    out: dict[int, dict[str, tuple[float, int]]] = {}
    copied = dropped = 0
    for s, row in src.states.items():
        new: dict[str, tuple[float, int]] = {}
        for d, a in mapping.items():
            if a in row:
                new[d] = (row[a][0], 0)
        if new:
            out[s] = new
        copied += len(new)
        dropped += sum(1 for a in row if a not in used_src)
    table = ValidatedTable(device=to_device, actions=tuple(sorted(dest_actions)), states=out)
    return table, TransferReport(src.device, to_device, mapping, copied, dropped, len(out))
