"""The prior of every candidate: the device profile's cost model (eqs. 1-4), corrected. Pure.

For a request, ``PhysicsPrior.predict`` evaluates the profile's latency and phone energy of every
candidate for the request's own network features under the observed conditions (one vectorised
``CostTable`` per network and candidate set, built once). ``expected_rewards`` turns predictions,
corrected by the learned family factors, into the reward the decider's reward mode would give on
average -- with the correction's spread as the uncertainty of the latency, so a target predicted
just under the QoS budget carries its probability of missing it.

Only what a deployed decider knows enters here: the profiles it was configured with, the request's
features and conditions, and corrections learned from outcomes it observed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from services.core.costmodel import CostTable, Mesh, supports
from services.core.partition import PlanCostTable
from services.core.policies.base import Candidate
from services.core.policies.prior.params import PriorParams
from services.core.policies.qlearning.corrections import ZERO, FamilyStats, model_key
from services.core.reward import ACCURACY_MISS_MJ, ACCURACY_MISS_MJ_PER_POINT, REWARD_MODES, RewardWeights
from services.core.schemas import CutPoint, Location, ModelFeatures, Plan, RuntimeConditions, Target
from services.core.state import WEAK_RSSI_DBM


def family_of(target: Target, weak_link: bool = False) -> str:
    """The family of an action: runner/processor/precision, a remote one split by its link's
    Table I signal bin (goodput and radio power errors of a weak link differ from a regular one's)."""
    base = f"{target.runner}/{target.processor}/{target.precision}"
    return base + ":weak" if weak_link else base


@dataclass(slots=True)
class _Case:
    """One network with one candidate set: its cost table over the candidates the profile knows."""

    table: CostTable | None
    known: np.ndarray  # (T,) bool: the profile can cost this candidate
    cols: np.ndarray  # (T,) int: column in the table (0 where unknown)
    remote: np.ndarray  # (T,) 0 edge, 1 peer, 2 cloud
    bases: tuple[str, ...]  # family without the link split
    accuracy: np.ndarray  # (T,)
    plans: PlanCostTable | None  # the split actions' costs
    is_plan: np.ndarray  # (T,) bool: a split action
    pcols: np.ndarray  # (T,) int: column in ``plans`` (0 where whole)


class PhysicsPrior:
    """The profile's predictions per candidate; holds nothing but the mesh's profiles."""

    def __init__(self, mesh: Mesh, split_links: bool = True) -> None:
        self.mesh = mesh
        self.split_links = split_links
        self._cases: dict[tuple[str, tuple[str, ...]], _Case] = {}

    def __deepcopy__(self, memo: dict[int, object]) -> PhysicsPrior:
        """Shared, not copied: everything it holds is a function of the (immutable) profiles."""
        return self

    def _case(
        self,
        model: str,
        features: ModelFeatures,
        cands: Sequence[Candidate],
        ids: tuple[str, ...],
        cuts: Sequence[CutPoint],
    ) -> _Case:
        key = (model, ids)
        c = self._cases.get(key)
        if c is None:
            whole = [k.plan is None for k in cands]
            ok = [
                w and supports(self.mesh.profile_for(k.target.runner), k.target, features)
                for k, w in zip(cands, whole, strict=True)
            ]
            runnable = [k.target for k, o in zip(cands, ok, strict=True) if o]
            plans = [k.plan for k in cands if k.plan is not None]
            cols = np.cumsum(ok) - 1
            pcols = np.cumsum([not w for w in whole]) - 1
            codes = {Location.edge: 0, Location.peer: 1, Location.cloud: 2}
            # a split action's family: its parts' families joined (its own correction), its link the last part's
            c = _Case(
                table=CostTable(self.mesh, features, runnable) if runnable else None,
                known=np.array(ok, dtype=bool),
                cols=np.where(ok, cols, 0),
                remote=np.array([codes[Location(_last(k).runner)] for k in cands], dtype=np.int8),
                bases=tuple(family_of(k.target) if k.plan is None else _plan_family(k.plan) for k in cands),
                accuracy=np.zeros(len(cands)),
                plans=PlanCostTable(self.mesh, features, cuts, plans) if plans else None,
                is_plan=~np.array(whole, dtype=bool),
                pcols=np.where(whole, 0, pcols),
            )
            if len(self._cases) >= 4096:
                self._cases.clear()
            self._cases[key] = c
        return c

    def predict(
        self,
        model: str,
        features: ModelFeatures,
        cands: Sequence[Candidate],
        ids: tuple[str, ...],
        cond: RuntimeConditions,
        cuts: Sequence[CutPoint] = (),
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
        """(latency s, phone energy J, known mask, family per candidate) under ``cond``; NaN where
        the profile cannot cost a candidate. A split action (``Candidate.plan``) is costed part by
        part (``services.core.partition``) on ``cuts``, the network's cut points."""
        c = self._case(model, features, cands, ids, cuts)
        n = len(ids)
        lat = np.full(n, np.nan)
        en = np.full(n, np.nan)
        x = (
            np.array([cond.co_cpu]),
            np.array([cond.co_mem]),
            np.array([cond.rssi_wifi_dbm]),
            np.array([cond.rssi_p2p_dbm]),
        )
        if c.table is not None:
            r = c.table.evaluate(*x)
            lat = np.where(c.known, r["latency_s"][0][c.cols], np.nan)
            en = np.where(c.known, r["energy_j"][0][c.cols], np.nan)
        if c.plans is not None:
            r = c.plans.evaluate(*x)
            lat = np.where(c.is_plan, r["latency_s"][0][c.pcols], lat)
            en = np.where(c.is_plan, r["energy_j"][0][c.pcols], en)
        known = c.known | c.is_plan
        fams = c.bases
        if self.split_links:
            weak_p = cond.rssi_p2p_dbm <= WEAK_RSSI_DBM
            weak_w = cond.rssi_wifi_dbm <= WEAK_RSSI_DBM
            if weak_p or weak_w:
                fams = tuple(
                    b + ":weak" if (code == 1 and weak_p) or (code == 2 and weak_w) else b
                    for b, code in zip(c.bases, c.remote.tolist(), strict=True)
                )
        return lat, en, known, fams


def _last(c: Candidate) -> Target:
    """The target that answers: the last part's for a split action."""
    return c.target if c.plan is None else c.plan.parts[-1].target


def _plan_family(plan: Plan) -> str:
    return "+".join(family_of(p.target) for p in plan.parts)


def family_factors(
    family: str, model: str, stats: Mapping[str, FamilyStats], params: PriorParams
) -> tuple[float, float, float]:
    """(latency factor, energy factor, log-sd of the latency) of one family for one network.

    The factor is the family's mean log ratio, moved toward the network's own (its departure from
    the family) as the network's observations outweigh ``model_weight`` pseudo-observations. The
    spread: the family's observed one (noise plus the spread between networks) shrunk toward
    ``sigma0`` by ``prior_weight`` pseudo-observations, then toward the network's own spread (noise
    only) as its observations accumulate; never below ``sigma_min``."""
    s = stats.get(family, ZERO)
    pw = params.prior_weight
    m_lat, m_en = s.m_lat, s.m_energy
    var = (s.n * s.v_lat + pw * params.sigma0 * params.sigma0) / (s.n + pw)
    own = stats.get(model_key(model, family))
    if own is not None and own.n > 0:
        w = own.n / (own.n + params.model_weight)
        m_lat += w * (own.m_lat - m_lat)
        m_en += w * (own.m_energy - m_en)
        var += w * (own.v_lat - var) if own.n > 1 else 0.0
    return math.exp(m_lat), math.exp(m_en), max(params.sigma_min, math.sqrt(max(var, 0.0)))


def expected_rewards(
    lat_s: np.ndarray,
    energy_j: np.ndarray,
    accuracy: np.ndarray,
    qos_s: float,
    accuracy_min: float | None,
    sigma: np.ndarray,
    mode: str,
    weights: RewardWeights,
) -> np.ndarray:
    """E[reward] of each candidate when its measured latency and energy are the prediction times one
    lognormal factor of unit mean and log-sd ``sigma`` (per candidate): ``reward.reward_expected``
    over arrays, with a spread per candidate."""
    if mode not in REWARD_MODES:
        raise ValueError(f"unknown reward mode {mode!r}")
    e_mj, l_ms = energy_j * 1e3, lat_s * 1e3
    sig = np.maximum(sigma, 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.log(qos_s * 1e3 / np.maximum(l_ms, 1e-300)) + 0.5 * sig * sig - sig * sig) / sig
    met = ndtr(z)  # E[f ; f < qos / latency]
    if mode == "paper":
        r = -e_mj + weights.alpha * l_ms * met + weights.beta * accuracy
        miss = accuracy - 100.0
    else:
        r = -e_mj * (1.0 + weights.qos_penalty * (1.0 - met))
        miss = (
            -e_mj * (1.0 + weights.qos_penalty)
            - ACCURACY_MISS_MJ
            - ACCURACY_MISS_MJ_PER_POINT * ((accuracy_min or 0.0) - accuracy)
        )
    if accuracy_min is not None:
        r = np.where(accuracy < accuracy_min, miss, r)
    return np.asarray(r, dtype=float)
