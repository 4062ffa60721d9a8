"""Which (state, action) entries a Q table holds, and each action's nearest holder. Pure.

``QParams.q_init = "nearest"`` seeds a missing entry from the nearest state, in Table I bin
space, that holds a value for that action (the paper's transfer-learning idea, Sec. IV / VI-C,
applied across states); ``EntryIndex`` answers "nearest" fast, incrementally.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from services.core.state import DIMENSIONS, N_STATES, StateBins

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
