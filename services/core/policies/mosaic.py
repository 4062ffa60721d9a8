"""MOSAIC (Han et al., PACT 2019) as a policy: slice a network across the phone's processors. Pure.

MOSAIC profiles per-layer costs on each of the device's processors (and the cost of moving a tensor
between them) and picks, with a dynamic program, which processor runs each consecutive slice of
layers so that the inference is fastest while meeting the accuracy constraint. Here:

* the slices' boundaries are the network's cut points; a slice's cost on a processor is the
  profile's cost model (eqs. 1-3 inputs: its MACs and layers, the processor's launch cost: each
  slice is a dispatch) at the top DVFS step, without co-runners (MOSAIC decides from its offline
  profile);
* the processors are the phone's (processor, precision) pairs that are offered: CPU FP32 / INT8,
  GPU FP32 / FP16, DSP INT8, each below the request's ``accuracy_min`` excluded (MOSAIC's
  accuracy constraint; a slice in INT8 costs the network the INT8 accuracy);
* a hand-off between two processors costs the profile's ``interconnect`` copy of the boundary bytes;
* the program minimises latency (MOSAIC's objective); on a tie, the phone's energy.

The result depends only on the network, the offered processors and the accuracy floor: it is
computed once for each and never adapted online, as MOSAIC does. A single slice is a whole-network
decision; more are a ``Plan`` on the edge runner.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.core import costmodel
from services.core.costmodel import Mesh
from services.core.partition import copy_cost, partition_features
from services.core.policies.base import Candidate, Decision, DecisionContext, Outcome
from services.core.policies.errors import NoCandidate, OracleUnavailable
from services.core.schemas import CutPoint, Location, ModelFeatures, Partition, Plan, RuntimeConditions, Target

_IDLE = RuntimeConditions(co_cpu=0.0, co_mem=0.0)


def phone_options(cands: Sequence[Candidate], accuracy_min: float | None) -> list[Candidate]:
    """One candidate per (processor, precision) of the phone, at its top DVFS step, meeting the floor."""
    best: dict[tuple[str, str], Candidate] = {}
    for c in cands:
        t = c.target
        if c.plan is not None or t.runner != Location.edge:
            continue
        if accuracy_min is not None and c.accuracy < accuracy_min:
            continue
        key = (t.processor.value, t.precision.value)
        cur = best.get(key)
        if cur is None or (t.dvfs or 0) > (cur.target.dvfs or 0):
            best[key] = c
    return list(best.values())


def slice_program(
    mesh: Mesh, features: ModelFeatures, cuts: Sequence[CutPoint], options: Sequence[Target]
) -> list[int] | None:
    """The processor (index into ``options``) of each slice, minimising (latency, energy); None when
    no assignment can run the network (e.g. RC layers only a CPU runs and no CPU offered).

    Long because the dynamic program, its cost tables and the backtrack read best in one place."""
    n = len(cuts) + 1
    bounds: list[str | None] = [None, *(c.name for c in cuts), None]
    inf = (float("inf"), float("inf"))
    # cost[s][o]: best (latency, energy) of slices 0..s with slice s on option o; prev for the backtrack
    cost = [[inf] * len(options) for _ in range(n)]
    prev = [[-1] * len(options) for _ in range(n)]
    for s in range(n):
        f = partition_features(features, cuts, Partition(start=bounds[s], end=bounds[s + 1]))
        for o, t in enumerate(options):
            prof = mesh.profile_for(t.runner)
            if not costmodel.supports(prof, t, f):
                continue
            lat = costmodel.inference_time(prof, f, t, _IDLE)
            en = costmodel.device_energy(prof, t, lat, _IDLE)
            if s == 0:
                cost[s][o] = (lat, en)
                continue
            # Staying on the same option continues one dispatch: no second launch cost.
            cont = lat - prof.processors[t.processor].launch_ms / 1e3
            cont_en = costmodel.device_energy(prof, t, cont, _IDLE)
            for p, (pl, pe) in enumerate(cost[s - 1]):
                if pl == float("inf"):
                    continue
                if p == o:
                    cand = (pl + cont, pe + cont_en)
                else:
                    cl, ce = (0.0, 0.0)
                    if options[p].processor != t.processor:
                        cl, ce = copy_cost(prof, f.input_bytes)
                    cand = (pl + cl + lat, pe + ce + en)
                if cand < cost[s][o]:
                    cost[s][o], prev[s][o] = cand, p
    last = min(range(len(options)), key=lambda o: cost[n - 1][o], default=-1)
    if last < 0 or cost[n - 1][last][0] == float("inf"):
        return None
    picks = [last]
    for s in range(n - 1, 0, -1):
        picks.append(prev[s][picks[-1]])
    return picks[::-1]


def slicing_plan(
    mesh: Mesh, features: ModelFeatures, cuts: Sequence[CutPoint], options: Sequence[Candidate]
) -> Candidate | Plan | None:
    """MOSAIC's choice: a whole-network candidate (one slice), a ``Plan`` (consecutive slices on
    different processors merged into parts), or None when nothing can run it."""
    picks = slice_program(mesh, features, cuts, [c.target for c in options])
    if picks is None:
        return None
    targets: list[Target] = [options[picks[0]].target]
    ends: list[str] = []
    for s in range(1, len(picks)):
        if picks[s] != picks[s - 1]:
            ends.append(cuts[s - 1].name)
            targets.append(options[picks[s]].target)
    return options[picks[0]] if len(targets) == 1 else Plan.split(targets, ends)


@dataclass
class MosaicPolicy:
    """MOSAIC's static slicing (module docstring), memoised per network, offer and accuracy floor."""

    mesh: Mesh | None
    name: str = "mosaic"
    _memo: dict[tuple[str, int, float | None], tuple[tuple[Candidate, ...], Decision]] = field(
        default_factory=dict, repr=False
    )

    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        if self.mesh is None:
            raise OracleUnavailable(f"policy {self.name!r} needs the device profiles to cost its slices")
        key = (ctx.model, id(ctx.candidates), ctx.accuracy_min)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is ctx.candidates:
            return hit[1]
        choice = slicing_plan(self.mesh, ctx.features, ctx.cuts, phone_options(ctx.candidates, ctx.accuracy_min))
        if choice is None:
            raise NoCandidate(f"policy {self.name!r} needs a phone processor that runs {ctx.model}")
        d = Decision(choice.target) if isinstance(choice, Candidate) else Decision(choice.parts[0].target, plan=choice)
        if isinstance(ctx.candidates, tuple):
            if len(self._memo) >= 1024:
                self._memo.clear()
            self._memo[key] = (ctx.candidates, d)
        return d

    def plan_space(
        self, features: ModelFeatures, cuts: Sequence[CutPoint], cands: Sequence[Candidate], accuracy_min: float | None
    ) -> list[Plan]:
        """The plan it returns for a network, if it is a plan (the simulator's column)."""
        if self.mesh is None:
            return []
        choice = slicing_plan(self.mesh, features, cuts, phone_options(cands, accuracy_min))
        return [choice] if isinstance(choice, Plan) else []

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None:
        return None  # static: decided from the profile, never adapted
