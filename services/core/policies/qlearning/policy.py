"""AutoScale's policy (paper Sec. IV, Algorithm 1): epsilon-greedy over the Q row of the
observed state, read from any ``RowSource`` (``QTable`` or the Redis-backed ``QStore``). Pure.

* ``QParams.q_init``: ``"random"`` (the paper's) draws a missing entry's initial value from
  ``initial_q``; ``"nearest"`` borrows it from the nearest state that holds a value for that
  action (``EntryIndex``), rescaled to this state.
* ``QParams.lr_schedule``: ``"constant"`` is Algorithm 1's fixed learning rate (0.9, Sec. V-C);
  ``"visits"`` uses 1 / (n + 1) for the (n + 1)-th update of an entry, floored at
  ``lr_floor`` (a sample average that forgets slowly), which averages out measurement noise.
* Action choice: accuracy masking (``candidates.eligible_indices``), then epsilon-greedy.
  Beyond the paper, while exploring (epsilon > 0): ``explore_untried`` tries every action of a
  state once before retrying any (most promising initial value first) and ``explore_bonus`` adds
  a UCB-style bonus that decays with an entry's visits (``maths.ucb_argmax``); exploitation
  (epsilon 0) ranks Q alone.

A row covers exactly the currently available actions: argmax and the max over S' only ever
look at the actions offered now, and an action that appears is given its initial value on
first sight.

The hot paths (``decide``, ``learn``) keep the last row read in a memo (``_RowMemo``) valid
while the source's ``writes`` counter says so; ``learn`` patches it in place.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import repeat

from services.core.policies.base import Decision, DecisionContext, Outcome
from services.core.policies.candidates import CandInfo, candidate_ids, offered
from services.core.policies.qlearning.entries import EntryIndex
from services.core.policies.qlearning.maths import QUpdate, initial_q, ucb_argmax
from services.core.policies.qlearning.params import QParams
from services.core.policies.qlearning.table import QTable, RowSource


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
        return self.source.entries

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
        close = [s2 >= 0 and (radius is None or d <= radius) for s2, d in zip(near, dist, strict=True)]
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
        out = [0.0 if v is None else v for v in vals]  # every missing entry is set below
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
            unset = set(far)
            known = [v for i, v in enumerate(out) if i not in unset]
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
        return dict(zip(ids, vals, strict=True))

    def _values(self, state: int, ids: tuple[str, ...]) -> list[float]:
        """The row of ``state`` over ``ids``, missing entries at their initial value. Callers
        must not mutate the list: it is memoised.

        A decision and the update that follows it read the same row of the same table (the
        source's ``writes`` counter tells us), so the last row read is kept until the next write."""
        writes = self.source.writes
        m = self._memo
        if m is not None and m.writes == writes and m.state == state and m.ids is ids:
            return m.vals
        vals = list(map(self.source.row(state).get, ids))  # one C-level pass
        try:
            top = max(vals)  # type: ignore[type-var]  # a missing entry (None) does not compare with a float
        except TypeError:
            top = None
        if top is None:  # unseen actions: their initial values
            out = self._fill(state, ids, vals)
            best = -1
        else:
            out, best = vals, vals.index(top)  # type: ignore[assignment]  # max() met no None: all floats
        self._memo = _RowMemo(writes, state, ids, out, top is not None, best=best)
        return out

    def _visit_counts(self, state: int, ids: tuple[str, ...]) -> tuple[list[int], int]:
        """Visit counts aligned with ``ids`` and the state's total, memoised with the row (call
        ``_values`` for the same row first)."""
        m = self._memo
        if m is not None and (m.writes != self.source.writes or m.state != state or m.ids is not ids):
            m = None  # the memo holds another row (or a stale one)
        if m is not None and m.ns is not None:
            return m.ns, m.total
        nrow = self.source.visits(state)
        ns = list(map(nrow.get, ids, repeat(0, len(ids))))
        total = sum(nrow.values())
        if m is not None:
            m.ns, m.total = ns, total
        return ns, total

    # --- Policy protocol -------------------------------------------------------------------
    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        p = self.params
        info, elig = offered(ctx, p.accuracy_masking)
        if p.epsilon > 0.0 and rng.random() < p.epsilon:
            return ctx.candidates[elig[rng.randrange(len(elig))]].decision(explored=True)
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
        return ctx.candidates[best_i].decision()

    def learning_rate(self, state: int, action: str) -> float:
        """The learning rate of the next update of Q(state, action) (``lr_schedule``)."""
        p = self.params
        if p.lr_schedule == "constant":
            return p.learning_rate
        n = self.source.visits(state).get(action, 0)
        return max(p.lr_floor, 1.0 / (n + 1))

    def make_update(
        self, ctx: DecisionContext, decision: Decision, reward: float, info: CandInfo | None = None
    ) -> QUpdate:
        p = self.params
        if info is None:
            info = candidate_ids.get(ctx.candidates)
        s = ctx.state
        s2 = self._next_state(ctx) if self._next_state is not None else s
        action = decision.action_id
        if self._entries() is None:
            init = initial_q(p.init_seed, s, action, p.init_low, p.init_high)
            next_inits = self._inits(s2, info.ids)
        else:
            # The values this process would use for missing entries, shipped with the update so
            # that the Redis script starts from the same ones (see the module's consistency rule).
            stored = self.source.row(s).get(action)
            init = stored if stored is not None else self.initial_value(s, action)
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
        before = self.source.writes
        m = self._memo
        if m is not None and m.writes == before and m.full and m.state == u.next_state and m.ids is u.next_actions:
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
        if m is None or not m.full or m.writes != before or m.state != u.state:
            return
        after = self.source.writes
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
            n_new = self.source.visits(u.state).get(u.action, 0)
            m.total += n_new - m.ns[i]
            m.ns[i] = n_new
        m.writes = after
