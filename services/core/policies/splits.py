"""Partitioned actions for AutoScale: the few most promising splits of a network join its action
space, so the learner can pick a split where one wins (beyond the paper, which places whole
networks only). Pure.

For each remote location (the cloud over Wi-Fi, the peer over Wi-Fi Direct) the candidate splits
are: the network up to one of its cut points on the phone (each offered processor and precision
at its top DVFS step), the rest on one of that location's FP32 targets. Each is priced by the
profile's cost model (``services.core.partition``) over a grid of conditions: the location's signal
strength at every point of the profile's link table, with and without a CPU co-runner. At each
grid point the split is compared with the cheapest whole-network action that meets the QoS target
there; its *score* is its largest energy saving (a share of that action's energy) at any grid
point where it meets QoS. The ``per_location`` best-scoring splits with a positive score, on
distinct cuts, become actions; a network with no winning split gets none. The learner then finds
out, as for any action, where (if anywhere) a split really pays.

The selection depends on the network, the offered candidates and the QoS target only, so it is
worked out once per (network, candidate tuple, QoS) and the extended tuple is reused (the
Q-learner memoises on its identity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.core.costmodel import CostTable, Mesh
from services.core.partition import PlanCostTable
from services.core.policies.base import Candidate
from services.core.schemas import CutPoint, Location, ModelFeatures, Plan, Precision

REMOTE = (Location.cloud, Location.peer)


def _grid(mesh: Mesh, location: Location) -> dict[str, np.ndarray]:
    radio = mesh.edge.radio
    link = None if radio is None else (radio.wifi if location is Location.cloud else radio.p2p)
    rssi = np.array([p.rssi_dbm for p in (link.points if link is not None else [])] or [-60.0])
    co_cpu = np.array([0.0, 0.5])
    r, c = np.meshgrid(rssi, co_cpu)
    r, c = r.ravel(), c.ravel()
    default = np.full_like(r, -50.0)
    return {
        "co_cpu": c,
        "co_mem": np.zeros_like(r),
        "rssi_wifi": r if location is Location.cloud else default,
        "rssi_p2p": r if location is Location.peer else default,
    }


def _edge_tops(cands: Sequence[Candidate]) -> list[Candidate]:
    """The phone's candidates, one per (processor, precision), at the top DVFS step."""
    best: dict[tuple[str, str], Candidate] = {}
    for c in cands:
        if c.plan is None and c.target.runner == Location.edge:
            key = (c.target.processor.value, c.target.precision.value)
            cur = best.get(key)
            if cur is None or (c.target.dvfs or 0) > (cur.target.dvfs or 0):
                best[key] = c
    return list(best.values())


def split_candidates(
    mesh: Mesh,
    features: ModelFeatures,
    cuts: Sequence[CutPoint],
    cands: Sequence[Candidate],
    qos_s: float,
    per_location: int = 1,
) -> list[Candidate]:
    """The partitioned actions worth adding for one network (module docstring), best first per location."""
    whole = [c for c in cands if c.plan is None]
    if not cuts or per_location <= 0 or not whole:
        return []
    edge = _edge_tops(whole)
    table = CostTable(mesh, features, [c.target for c in whole])
    out: list[Candidate] = []
    for loc in REMOTE:
        remote = [c for c in whole if c.target.runner == loc and c.target.precision == Precision.fp32]
        if not edge or not remote:
            continue
        combos = [(e, r, cut) for cut in cuts for e in edge for r in remote]
        plans = [Plan.split([e.target, r.target], [cut.name]) for e, r, cut in combos]
        g = _grid(mesh, loc)
        conds = (g["co_cpu"], g["co_mem"], g["rssi_wifi"], g["rssi_p2p"])
        w = table.evaluate(*conds)
        best = np.where(w["latency_s"] < qos_s, w["energy_j"], np.inf).min(axis=1)
        p = PlanCostTable(mesh, features, cuts, plans).evaluate(*conds)
        with np.errstate(invalid="ignore"):
            saving = np.where(p["latency_s"] < qos_s, (best[:, None] - p["energy_j"]) / best[:, None], -np.inf)
        saving = np.where(np.isfinite(best)[:, None], saving, np.where(p["latency_s"] < qos_s, 1.0, -np.inf))
        score = saving.max(axis=0)
        used: set[str] = set()
        for i in np.argsort(-score, kind="stable"):
            if score[i] <= 0 or len(used) >= per_location:
                break
            e, r, cut = combos[int(i)]
            if cut.name in used:
                continue
            used.add(cut.name)
            out.append(Candidate(e.target, min(e.accuracy, r.accuracy), plans[int(i)]))
    return out


@dataclass
class SplitActions:
    """``extend(model, features, cuts, candidates, qos_s)``: the candidates with the network's split
    actions appended, one tuple object per (network, candidate tuple, QoS), reused."""

    mesh: Mesh
    per_location: int = 1
    _memo: dict[tuple[str, int, float], tuple[tuple[Candidate, ...], tuple[Candidate, ...]]] = field(
        default_factory=dict, repr=False
    )

    def extend(
        self,
        model: str,
        features: ModelFeatures,
        cuts: Sequence[CutPoint],
        cands: tuple[Candidate, ...],
        qos_s: float,
    ) -> tuple[Candidate, ...]:
        key = (model, id(cands), qos_s)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is cands:
            return hit[1]
        extra = split_candidates(self.mesh, features, cuts, cands, qos_s, self.per_location)
        out = (*cands, *extra) if extra else cands
        if len(self._memo) >= 1024:
            self._memo.clear()
        self._memo[key] = (cands, out)
        return out
