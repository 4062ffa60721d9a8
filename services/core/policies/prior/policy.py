"""``PriorPolicy``: AutoScale's Q-learner on top of the device profile's physics. Pure: no I/O.

For a request in state S, each candidate A is valued by the reward the configured reward mode would
give on average for the latency and phone energy predicted as::

    L(A) = profile(A | network, conditions) x correction(family of A, network) x exp(Q(S, A))

and the same for the energy (the profile's eqs. 1-4 for this network's exact features under the
observed conditions), with the latency's uncertainty -- the correction's spread -- giving a target
predicted just under the QoS budget its probability of missing it.

* ``correction``: learned per target family and per (network, family) from every outcome
  (``Corrections``); shared by every state, so a network never seen before starts from physics
  corrected by what the others taught, and a network's own departure is learned in one scenario and
  used in the next.
* ``Q(S, A)``: Algorithm 1's table with discount 0 (consecutive inferences are independent: the
  paper's own sensitivity result taken to its end), learning the log ratio of the measured latency
  to the corrected prediction -- what this state does that the shared corrections do not explain
  (a co-runner the profile's interference model gets wrong). A candidate is valued with the
  visit-weighted mean of its family's entries in the row, shrunk by ``residual_weight``
  pseudo-visits at 0: a state's slowdown of a processor applies to all of its DVFS steps, and the
  mean of many entries is steady enough to compare targets near the QoS budget (one entry's noise
  of a few per cent moves a near-budget target's expected QoS penalty by more than the energy
  differences between steps). Unvisited: 0, the corrected physics.
  It learns the latency ratio rather than the reward's residual because a reward carries a QoS miss
  as a jump of 2x the energy: one unlucky miss would bury a good target for good under greedy
  exploitation, while the latency ratio has the measurement noise only, and the expected reward is
  recomputed from it (measured: see ``scripts/measure_learner.py``).

Every outcome teaches both, in one ``QUpdate`` (``correction``) applied atomically by the table.

Cost: the prior row is memoised per (network, state, conditions rounded to a small grid) and
recomputed only when the published corrections moved (``Corrections.epoch``); the values are
recomputed when the state's row changed (``row_version``), and ``learn`` patches the one entry it
changed. The hot path is a dict lookup and an argmax.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from services.core.costmodel import Mesh
from services.core.policies.base import Decision, DecisionContext, Outcome
from services.core.policies.candidates import CandInfo, candidate_ids, eligible_indices
from services.core.policies.errors import NoCandidate
from services.core.policies.prior.params import PriorParams
from services.core.policies.prior.physics import PhysicsPrior, corrected, expected_rewards
from services.core.policies.qlearning.corrections import CorrectionObs
from services.core.policies.qlearning.maths import QUpdate
from services.core.policies.qlearning.table import QTable, RowSource
from services.core.schemas import RuntimeConditions

_MEMO_MAX = 65_536


@dataclass(slots=True)
class _Entry:
    """The prior row of one (network, state, conditions cell) and the values built on it."""

    info: CandInfo
    epoch: int  # Corrections.epoch the prior was computed at
    lat: list[float]  # the profile's latency per candidate (uncorrected), s
    energy: list[float]  # the profile's phone energy per candidate (uncorrected), J
    fams: tuple[str, ...]
    cl: np.ndarray  # corrected latency, s
    ce: np.ndarray  # corrected energy, J
    sd: np.ndarray  # log-sd of the latency
    acc: np.ndarray
    prior: list[float]  # expected reward with Q = 0
    members: dict[str, np.ndarray]  # family -> indices of its candidates
    pool: dict[str, list[float]] | None = None  # family -> [sum of n * Q, sum of n] over the row
    used: dict[str, float] | None = None  # family -> residual the values were built with
    version: tuple[int, int] = (-1, -1)  # RowSource.row_version the values were built at
    vals: list[float] | None = None
    best: int = -1  # first index of the highest value; -1: not known yet


class PriorPolicy:
    """Q-learning over the corrected physics of the device profile (module docstring).

    ``mesh``: the profiles the decider was configured with -- the only model of the world it holds.
    ``source``: the table (``QTable`` or the Redis-backed ``QStore``) holding the residual rows and
    the family corrections.
    """

    name = "autoscale"

    def __init__(
        self, source: RowSource | None, mesh: Mesh, params: PriorParams | None = None, *, name: str = "autoscale"
    ) -> None:
        self.source: RowSource = source if source is not None else QTable()
        self.params = params if params is not None else PriorParams()
        self.name = name
        self.physics = PhysicsPrior(mesh, split_links=self.params.split_links)
        self.source.corrections.refresh = self.params.refresh
        self._memo: dict[tuple[str, int, tuple[int, int, int, int], int], _Entry] = {}
        self._cond: RuntimeConditions | None = None
        self._cell: tuple[int, int, int, int] = (0, 0, 0, 0)

    # --- the prior ---------------------------------------------------------------------------
    def _cell_of(self, cond: RuntimeConditions) -> tuple[int, int, int, int]:
        """Conditions rounded to the memo's grid (the decider reuses one snapshot object)."""
        if cond is self._cond:
            return self._cell
        p = self.params
        cell = (
            round(cond.co_cpu / p.util_step),
            round(cond.co_mem / p.util_step),
            round(cond.rssi_wifi_dbm / p.rssi_step),
            round(cond.rssi_p2p_dbm / p.rssi_step),
        )
        self._cond, self._cell = cond, cell
        return cell

    def _compute(self, ctx: DecisionContext, info: CandInfo, epoch: int) -> _Entry:
        p = self.params
        targets = [c.target for c in ctx.candidates]
        lat, en, known, fams = self.physics.predict(ctx.model, ctx.features, targets, info.ids, ctx.conditions)
        cl, ce, sd = corrected(lat, en, fams, self.source.corrections.published, ctx.model, p)
        if not known.all():
            # A candidate the profile cannot cost: a latency over any budget and the energy of the
            # dearest costed one, so it ranks below them (exploration still tries it).
            cl = np.where(known, cl, 1e6)
            ce = np.where(known, ce, float(np.nanmax(ce)) if known.any() else 1.0)
        acc = np.asarray(info.accuracies, dtype=float)
        prior = expected_rewards(cl, ce, acc, ctx.qos_s, ctx.accuracy_min, sd, p.reward_mode, p.weights)
        groups: dict[str, list[int]] = {}
        for i, f in enumerate(fams):
            groups.setdefault(f, []).append(i)
        members = {f: np.array(ix, dtype=np.int64) for f, ix in groups.items()}
        return _Entry(info, epoch, lat.tolist(), en.tolist(), fams, cl, ce, sd, acc, prior.tolist(), members)

    def _residual(self, e: _Entry, fam: str) -> float:
        """The family's pooled residual in the row (shrunk toward 0)."""
        assert e.pool is not None
        sq, sn = e.pool.get(fam, (0.0, 0.0))
        return sq / (sn + self.params.residual_weight) if sn > 0.0 else 0.0

    def _family_values(self, e: _Entry, fam: str, r: float, ctx: DecisionContext) -> None:
        """Recompute the values of one family's candidates with residual ``r``."""
        assert e.vals is not None and e.used is not None
        ix = e.members[fam]
        f = math.exp(r)
        p = self.params
        v = expected_rewards(
            e.cl[ix] * f, e.ce[ix] * f, e.acc[ix], ctx.qos_s, ctx.accuracy_min, e.sd[ix], p.reward_mode, p.weights
        )
        vals = e.vals
        for j, x in zip(ix.tolist(), v.tolist(), strict=True):
            vals[j] = x
        e.used[fam] = r

    def _entry(self, ctx: DecisionContext, info: CandInfo) -> _Entry:
        """The memoised prior row of this request, with its current values."""
        key = (ctx.model, ctx.state, self._cell_of(ctx.conditions), id(info))
        e = self._memo.get(key)
        epoch = self.source.corrections.epoch
        if e is None or e.epoch != epoch or e.info is not info:
            e = self._compute(ctx, info, epoch)
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[key] = e
        version = self.source.row_version(ctx.state)
        if e.vals is None or e.version != version:
            row = self.source.row(ctx.state)
            nrow = self.source.visits(ctx.state)
            pool: dict[str, list[float]] = {}
            for a, fam in zip(info.ids, e.fams, strict=True):
                q = row.get(a)
                if q is not None:
                    w = float(max(nrow.get(a, 0), 1))
                    acc = pool.setdefault(fam, [0.0, 0.0])
                    acc[0] += w * q
                    acc[1] += w
            e.pool, e.used, e.vals = pool, {}, list(e.prior)
            for fam in pool:
                r = self._residual(e, fam)
                if r != 0.0:
                    self._family_values(e, fam, r, ctx)
            e.version, e.best = version, -1
        return e

    def prior_row(self, ctx: DecisionContext) -> dict[str, float]:
        """The corrected-physics value of every candidate (what a state never visited decides on)."""
        info = candidate_ids.get(ctx.candidates)
        return dict(zip(info.ids, self._entry(ctx, info).prior, strict=True))

    # --- Policy protocol ---------------------------------------------------------------------
    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        info = candidate_ids.get(ctx.candidates)
        if not info.ids:
            raise NoCandidate("no candidate target offered")
        p = self.params
        if ctx.accuracy_min is None or not p.accuracy_masking:
            elig: tuple[int, ...] | list[int] = info.all_idx
        else:
            elig = eligible_indices(info.accuracies, ctx.accuracy_min, True)
        if p.epsilon > 0.0 and rng.random() < p.epsilon:
            i = elig[rng.randrange(len(elig))]
            return Decision(ctx.candidates[i].target, explored=True)
        e = self._entry(ctx, info)
        vals = e.vals
        assert vals is not None
        if elig is info.all_idx:
            if e.best < 0:
                e.best = vals.index(max(vals))
            best_i = e.best
        else:
            best_i = max(elig, key=vals.__getitem__)  # the first of equal values
        return Decision(ctx.candidates[best_i].target, explored=False)

    def make_update(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> QUpdate:
        """The residual update of (S, A) and the observation of A's family it carries. ``reward`` is
        not learned directly (see the module docstring): the outcome it was computed from is."""
        del reward
        info = candidate_ids.get(ctx.candidates)
        e = self._entry(ctx, info)
        action = decision.target.id
        i = info.index[action]
        p = self.params
        lat, en, cl = e.lat[i], e.energy[i], float(e.cl[i])
        obs = None
        x_res = 0.0
        if outcome.latency_s > 0.0 and outcome.energy_j > 0.0 and lat > 0.0 and en > 0.0:
            obs = CorrectionObs(
                e.fams[i],
                math.log(outcome.latency_s / lat),
                math.log(outcome.energy_j / en),
                p.corr_lr_floor,
                ctx.model,
            )
            x_res = math.log(outcome.latency_s / cl)
        n = self.source.visits(ctx.state).get(action, 0)
        return QUpdate(
            state=ctx.state,
            action=action,
            reward=x_res,
            next_state=ctx.state,
            next_actions=(),
            init=0.0,
            next_inits=(),
            learning_rate=max(p.lr_floor, 1.0 / (n + 1 + p.residual_weight)),
            discount=0.0,
            correction=obs,
        )

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None:
        u = self.make_update(ctx, decision, outcome, reward)
        info = candidate_ids.get(ctx.candidates)
        e = self._entry(ctx, info)
        before = self.source.row_version(ctx.state)
        epoch = self.source.corrections.epoch
        old_q = self.source.row(u.state).get(u.action)
        old_n = self.source.visits(u.state).get(u.action, 0)
        self.source.learn(u)
        # Keep the values in step without rebuilding them, if this update was the only change of the
        # row since they were built and its correction did not republish (else they are rebuilt).
        after = self.source.row_version(ctx.state)
        if e.version != before or after != (before[0], before[1] + 1) or e.pool is None or e.used is None:
            return
        if self.source.corrections.epoch != epoch:
            return
        fam = e.fams[info.index[u.action]]
        acc = e.pool.setdefault(fam, [0.0, 0.0])
        if old_q is not None:
            w = float(max(old_n, 1))
            acc[0] -= w * old_q
            acc[1] -= w
        w = float(max(self.source.visits(u.state).get(u.action, 0), 1))
        acc[0] += w * self.source.row(u.state)[u.action]
        acc[1] += w
        e.version = after
        r = self._residual(e, fam)
        if abs(r - e.used.get(fam, 0.0)) > self.params.refresh:
            self._family_values(e, fam, r, ctx)
            e.best = -1
