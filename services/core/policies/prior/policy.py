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
  recomputed from it (measured on a stand-in hidden world before the evaluation's own existed:
  ``scripts/measure_learner.py`` at commit 9aa7a25).

Every outcome teaches both, in one ``QUpdate`` (``correction``) applied atomically by the table.
Exploration (epsilon) draws a target family uniformly and plays its best member: what is learnt is
the family's correction, and a uniform draw over ~66 actions would try a single-action family (the
DSP) once in hundreds of explorations (``explore_families=False``: the paper's uniform draw).

Cost: the prediction row is memoised per (network, state, conditions rounded to a small grid).
Everything derived from it is kept current incrementally: a family whose published correction moved
(``Corrections.pub_versions``) has its candidates recomputed, a change of one entry of the row (this
process's update or another's, ``RowSource.changes_since``) moves its family's pooled residual, and
the family's candidates are recomputed only if that moved by more than ``residual_refresh``. The hot
path is a dict lookup and an argmax.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from services.core.costmodel import Mesh
from services.core.policies.base import Decision, DecisionContext, Outcome
from services.core.policies.candidates import CandInfo, candidate_ids, offered
from services.core.policies.prior.params import PriorParams
from services.core.policies.prior.physics import PhysicsPrior, expected_rewards, family_factors
from services.core.policies.qlearning.corrections import CorrectionObs, model_key
from services.core.policies.qlearning.maths import QUpdate
from services.core.policies.qlearning.table import QTable, RowSource
from services.core.schemas import RuntimeConditions

_MEMO_MAX = 4_096  # entries of ~10 KB (66-candidate rows): at most ~40 MB in a long-running decider


@dataclass(slots=True)
class _Entry:
    """One (network, state, conditions cell): predictions, corrections, pooled residuals, values.

    Per candidate: ``lat``/``energy`` (the profile's, uncorrected), ``cl``/``ce``/``sd`` (corrected,
    and the latency's log-sd), ``fidx`` (its family), ``q``/``n`` (the row's entry as pooled).
    Per family: ``members``, ``fver`` (publication versions of the family's and the network's
    correction used), ``psum``/``pw`` (visit-weighted sum of the entries and the weights) and
    ``rused`` (the pooled residual the values were computed with)."""

    info: CandInfo
    model: str
    qos_s: float
    accuracy_min: float | None
    lat: np.ndarray
    energy: np.ndarray
    known: np.ndarray
    fams: tuple[str, ...]
    flist: list[str]
    fidx: np.ndarray
    members: list[np.ndarray]
    acc: np.ndarray
    cl: np.ndarray
    ce: np.ndarray
    sd: np.ndarray
    fver: list[tuple[int, int]]
    keyidx: dict[str, int]  # correction key (the family's, the network's) -> family index
    epoch: int = -1
    q: list[float | None] | None = None
    n: list[int] | None = None
    psum: list[float] | None = None
    pw: list[float] | None = None
    rused: list[float] | None = None
    version: tuple[int, int] = (-1, -1)
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
        self._last: tuple[DecisionContext, _Entry] | None = None

    def __deepcopy__(self, memo: dict[int, object]) -> PriorPolicy:
        """A copy that learns on its own (the table and its corrections copied), sharing the profiles'
        predictions and starting with an empty memo (rebuilt from the copied table on first use)."""
        import copy

        twin = PriorPolicy(copy.deepcopy(self.source, memo), self.physics.mesh, self.params, name=self.name)
        twin.physics = self.physics
        return twin

    # --- building an entry ---------------------------------------------------------------------
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

    def _build(self, ctx: DecisionContext, info: CandInfo) -> _Entry:
        lat, en, known, fams = self.physics.predict(
            ctx.model, ctx.features, ctx.candidates, info.ids, ctx.conditions, ctx.cuts
        )
        flist = list(dict.fromkeys(fams))
        pos = {f: j for j, f in enumerate(flist)}
        fidx = np.array([pos[f] for f in fams], dtype=np.int64)
        members = [np.flatnonzero(fidx == j) for j in range(len(flist))]
        n = len(fams)
        keyidx = {f: j for j, f in enumerate(flist)} | {model_key(ctx.model, f): j for j, f in enumerate(flist)}
        e = _Entry(
            info, ctx.model, ctx.qos_s, ctx.accuracy_min, lat, en, known, fams, flist, fidx, members,
            np.asarray(info.accuracies, dtype=float), np.empty(n), np.empty(n), np.empty(n), [(-1, -1)] * len(flist),
            keyidx,
        )  # fmt: skip
        self._corrections(e, all_families=True)
        return e

    def _corrections(self, e: _Entry, all_families: bool = False) -> list[int]:
        """Bring the corrected predictions in line with the published corrections; returns the
        families whose candidates changed."""
        c = self.source.corrections
        since = None if all_families else c.published_since(e.epoch)
        e.epoch = c.epoch
        pv, pub, p = c.pub_versions, c.published, self.params
        families: Iterable[int] = range(len(e.flist))
        if since is not None:  # only the families of this entry whose corrections were published since
            families = sorted({j for k in since if (j := e.keyidx.get(k)) is not None})
        changed = []
        for j in families:
            f = e.flist[j]
            v = (pv.get(f, 0), pv.get(model_key(e.model, f), 0))
            if v == e.fver[j] and not all_families:
                continue
            e.fver[j] = v
            fl, fe, sd = family_factors(f, e.model, pub, p)
            ix = e.members[j]
            e.cl[ix], e.ce[ix], e.sd[ix] = e.lat[ix] * fl, e.energy[ix] * fe, sd
            changed.append(j)
        if not e.known.all():
            # A candidate the profile cannot cost: a latency over any budget and the energy of the
            # dearest costed one, so it ranks below them (exploration still tries it).
            e.cl[~e.known] = 1e6
            e.ce[~e.known] = float(np.nanmax(e.ce[e.known])) if e.known.any() else 1.0
            e.sd[~e.known] = self.params.sigma_min
        return changed

    def _values_of(self, e: _Entry, ix: np.ndarray, r: np.ndarray | float) -> np.ndarray:
        f = np.exp(r)
        p = self.params
        return expected_rewards(
            e.cl[ix] * f, e.ce[ix] * f, e.acc[ix], e.qos_s, e.accuracy_min, e.sd[ix], p.reward_mode, p.weights
        )

    def _pool(self, e: _Entry, state: int) -> None:
        """Rebuild the pooled residuals and every value from the row."""
        row, nrow = self.source.row(state), self.source.visits(state)
        ids = e.info.ids
        e.q = [row.get(a) for a in ids]
        e.n = [nrow.get(a, 0) for a in ids]
        k = len(e.flist)
        psum, pw = [0.0] * k, [0.0] * k
        for j, q, n in zip(e.fidx.tolist(), e.q, e.n, strict=True):
            if q is not None:
                w = float(max(n, 1))
                psum[j] += w * q
                pw[j] += w
        rw = self.params.residual_weight
        e.psum, e.pw = psum, pw
        e.rused = [ps / (w + rw) if w > 0.0 else 0.0 for ps, w in zip(psum, pw, strict=True)]
        r = np.asarray(e.rused)[e.fidx]
        e.vals = self._values_of(e, np.arange(len(ids)), r).tolist()
        e.best = -1

    def _refamily(self, e: _Entry, families: list[int]) -> None:
        """Recompute the values of some families' candidates (their residual or correction moved)."""
        assert e.vals is not None and e.rused is not None
        if not families:
            return
        ix = e.members[families[0]] if len(families) == 1 else np.concatenate([e.members[j] for j in families])
        r = np.asarray(e.rused)[e.fidx[ix]]
        vals = e.vals
        for i, v in zip(ix.tolist(), self._values_of(e, ix, r).tolist(), strict=True):
            vals[i] = v
        e.best = -1

    def _patch(self, e: _Entry, state: int, action: str) -> None:
        """One entry of the row changed: move its family's pool, and its values if that moved enough."""
        assert e.q is not None and e.n is not None and e.psum is not None and e.pw is not None
        assert e.rused is not None
        i = e.info.index.get(action)
        if i is None:
            return  # an action not offered here
        j = int(e.fidx[i])
        old = e.q[i]
        if old is not None:
            w = float(max(e.n[i], 1))
            e.psum[j] -= w * old
            e.pw[j] -= w
        q = self.source.row(state).get(action)
        n = self.source.visits(state).get(action, 0)
        e.q[i], e.n[i] = q, n
        if q is not None:
            w = float(max(n, 1))
            e.psum[j] += w * q
            e.pw[j] += w
        r = e.psum[j] / (e.pw[j] + self.params.residual_weight) if e.pw[j] > 0.0 else 0.0
        if abs(r - e.rused[j]) > self.params.residual_refresh:
            e.rused[j] = r
            self._refamily(e, [j])

    def _entry(self, ctx: DecisionContext, info: CandInfo) -> _Entry:
        """The memoised entry of this request, brought up to date."""
        last = self._last
        if (
            last is not None
            and last[0] is ctx
            and last[1].version == self.source.row_version(ctx.state)
            and last[1].epoch == self.source.corrections.epoch
        ):
            return last[1]  # the same request again (its update follows its decision): nothing moved
        key = (ctx.model, ctx.state, self._cell_of(ctx.conditions), id(info))
        e = self._memo.get(key)
        if e is None or e.info is not info or e.qos_s != ctx.qos_s or e.accuracy_min != ctx.accuracy_min:
            e = self._build(ctx, info)
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[key] = e
        src = self.source
        version = src.row_version(ctx.state)
        if e.vals is None:
            self._pool(e, ctx.state)
        elif version != e.version:
            changed = src.changes_since(ctx.state, e.version)
            if changed is None or len(changed) > 8:
                self._pool(e, ctx.state)
            else:  # a few entries changed since: patch them
                for action in changed:
                    self._patch(e, ctx.state, action)
        e.version = version
        if e.epoch != src.corrections.epoch:
            self._refamily(e, self._corrections(e))
        self._last = (ctx, e)
        return e

    def prior_row(self, ctx: DecisionContext) -> dict[str, float]:
        """The corrected-physics value of every candidate with no residual (a state never visited)."""
        info = candidate_ids.get(ctx.candidates)
        e = self._entry(ctx, info)
        v = self._values_of(e, np.arange(len(info.ids)), 0.0)
        return dict(zip(info.ids, v.tolist(), strict=True))

    # --- Policy protocol ---------------------------------------------------------------------
    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        p = self.params
        info, elig = offered(ctx, p.accuracy_masking)
        explore = p.epsilon > 0.0 and rng.random() < p.epsilon
        if explore and not p.explore_families:
            return ctx.candidates[elig[rng.randrange(len(elig))]].decision(explored=True)
        e = self._entry(ctx, info)
        vals = e.vals
        assert vals is not None
        if explore:
            # A family drawn uniformly, then its best eligible member: what is learnt is the family's
            # correction, and its best member is the one a decision would use.
            ok = set(elig)
            fams = sorted({int(e.fidx[i]) for i in elig})
            j = fams[rng.randrange(len(fams))]
            best_i = int(max((i for i in e.members[j].tolist() if i in ok), key=vals.__getitem__))
            return ctx.candidates[best_i].decision(explored=True)
        if elig is info.all_idx:
            if e.best < 0:
                e.best = vals.index(max(vals))
            best_i = e.best
        else:
            best_i = max(elig, key=vals.__getitem__)  # the first of equal values
        return ctx.candidates[best_i].decision()

    def make_update(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> QUpdate:
        """The residual update of (S, A) and the observation of A's family it carries. ``reward`` is
        not learned directly (see the module docstring): the outcome it was computed from is."""
        del reward
        info = candidate_ids.get(ctx.candidates)
        e = self._entry(ctx, info)
        action = decision.action_id
        i = info.index[action]
        p = self.params
        lat, en, cl = float(e.lat[i]), float(e.energy[i]), float(e.cl[i])
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
        # The entry catches up with this change (one entry of the row, maybe one correction) on the
        # next decision: a patch, not a rebuild.
        self.source.learn(self.make_update(ctx, decision, outcome, reward))
