"""The paper's baselines (Sec. V-A): Edge (CPU FP32), Edge (Best), Cloud, Connected Edge, Opt.

Pure logic: they read the candidates, an optional oracle, and (for the "best static" ones)
their own running statistics of observed outcomes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.core.policies.base import Candidate, Decision, DecisionContext, Outcome
from services.core.policies.candidates import eligible_indices
from services.core.policies.errors import NoCandidate, OracleUnavailable
from services.core.schemas import Location, Precision, Processor, Target


def _dvfs_rank(t: Target) -> float:
    # A fixed-frequency target (dvfs None) runs at the governor's top frequency.
    return math.inf if t.dvfs is None else float(t.dvfs)


def _top_step(cands: Sequence[Candidate]) -> Candidate:
    return max(cands, key=lambda c: _dvfs_rank(c.target))


def _where(
    cands: Sequence[Candidate],
    runner: Location,
    processor: Processor | None = None,
    precision: Precision | None = None,
) -> list[Candidate]:
    return [
        c
        for c in cands
        if c.target.runner == runner
        and (processor is None or c.target.processor == processor)
        and (precision is None or c.target.precision == precision)
    ]


class FixedPolicy:
    """Always the same kind of target, chosen by ``pick`` from the offered candidates."""

    def __init__(self, name: str, pick: Callable[[Sequence[Candidate]], Candidate | None], what: str) -> None:
        self.name = name
        self._pick = pick
        self._what = what
        # The pick depends on the candidates only; the decider and the simulator reuse candidate
        # tuples, so remember the last few answers (keyed by identity, holding the tuple).
        self._memo: dict[int, tuple[tuple[Candidate, ...], Candidate | None]] = {}

    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        cands = ctx.candidates
        hit = self._memo.get(id(cands))
        if hit is not None and hit[0] is cands:
            c = hit[1]
        else:
            c = self._pick(cands)
            if isinstance(cands, tuple):
                if len(self._memo) >= 64:
                    self._memo.clear()
                self._memo[id(cands)] = (cands, c)
        if c is None:
            raise NoCandidate(f"policy {self.name!r} needs {self._what}, which no healthy runner offers")
        return Decision(c.target)

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None:
        return None


def pick_edge_cpu_fp32(cands: Sequence[Candidate]) -> Candidate | None:
    """Edge (CPU FP32): the phone's CPU in FP32 at its top DVFS step."""
    pool = _where(cands, Location.edge, Processor.cpu, Precision.fp32)
    return _top_step(pool) if pool else None


def pick_cloud(cands: Sequence[Candidate]) -> Candidate | None:
    """Cloud: the server GPU in FP32, falling back to the server CPU (FP32 preferred)."""
    for proc in (Processor.gpu, Processor.cpu):
        pool = _where(cands, Location.cloud, proc, Precision.fp32) or _where(cands, Location.cloud, proc)
        if pool:
            return _top_step(pool)
    return None


def pick_peer_gpu(cands: Sequence[Candidate]) -> Candidate | None:
    """Connected edge, fixed variant: the peer's GPU (FP32 preferred), else any peer target."""
    pool = _where(cands, Location.peer, Processor.gpu, Precision.fp32) or _where(cands, Location.peer, Processor.gpu)
    pool = pool or _where(cands, Location.peer)
    return _top_step(pool) if pool else None


@dataclass(slots=True)
class _Stat:
    count: int = 0
    energy_sum: float = 0.0
    latency_sum: float = 0.0
    qos_met: int = 0

    def add(self, o: Outcome, qos_s: float) -> None:
        self.count += 1
        self.energy_sum += o.energy_j
        self.latency_sum += o.latency_s
        self.qos_met += o.latency_s < qos_s

    @property
    def mean_energy(self) -> float:
        return self.energy_sum / self.count if self.count else math.inf

    @property
    def qos_ratio(self) -> float:
        return self.qos_met / self.count if self.count else 0.0


class StaticBestPolicy:
    """Edge (Best) / Connected Edge: the best *static* target of one location for each model.

    "Best" = the lowest average energy (highest energy efficiency; the work per inference is
    fixed) among the targets that meet QoS on the majority of runs; if none does, the one that
    meets it most often. Statistics are kept per (model, QoS target) and are averaged over all
    the runtime conditions seen, which is what makes the choice static rather than adaptive.

    Learned from observations: each target is tried ``min_obs`` times first (round robin, the
    decisions are reported as explored), then the best is exploited. With an oracle the
    statistics come from the true costs of every target at once, sampled on the first
    ``oracle_samples`` decisions of each (model, QoS) and then frozen.
    """

    def __init__(
        self,
        name: str,
        location: Location,
        *,
        accuracy_masking: bool = True,
        min_obs: int = 3,
        oracle_samples: int = 32,
    ) -> None:
        self.name = name
        self.location = location
        self.accuracy_masking = accuracy_masking
        self.min_obs = min_obs
        self.oracle_samples = oracle_samples
        self._stats: dict[tuple[str, int], dict[str, _Stat]] = {}
        self._oracle_n: dict[tuple[str, int], int] = {}
        # Once the oracle statistics of a key are complete they never change: its best target is
        # remembered per (candidate tuple, accuracy requirement).
        self._frozen: dict[tuple[tuple[str, int], int, float | None], tuple[tuple[Candidate, ...], Candidate]] = {}

    @staticmethod
    def _key(ctx: DecisionContext) -> tuple[str, int]:
        return ctx.model, round(ctx.qos_s * 1e6)

    def _pool(self, ctx: DecisionContext) -> list[Candidate]:
        local = _where(ctx.candidates, self.location)
        if not local:
            raise NoCandidate(f"policy {self.name!r} needs a {self.location.value} target, and none is offered")
        idx = eligible_indices([c.accuracy for c in local], ctx.accuracy_min, self.accuracy_masking)
        return [local[i] for i in idx]

    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        key = self._key(ctx)
        frozen = ctx.oracle is not None and self._oracle_n.get(key, 0) >= self.oracle_samples
        if frozen:
            fkey = (key, id(ctx.candidates), ctx.accuracy_min)
            hit = self._frozen.get(fkey)
            if hit is not None and hit[0] is ctx.candidates:
                return Decision(hit[1].target)
        pool = self._pool(ctx)
        stats = self._stats.setdefault(key, {})
        if frozen:
            best = self._best(pool, stats)
            if isinstance(ctx.candidates, tuple):
                if len(self._frozen) >= 4096:
                    self._frozen.clear()
                self._frozen[fkey] = (ctx.candidates, best)
            return Decision(best.target)
        if ctx.oracle is not None and self._oracle_n.get(key, 0) < self.oracle_samples:
            self._oracle_n[key] = self._oracle_n.get(key, 0) + 1
            for c in _where(ctx.candidates, self.location):
                stats.setdefault(c.target.id, _Stat()).add(ctx.oracle(c.target), ctx.qos_s)
        if ctx.oracle is None:
            # Learn by trying: the least-tried target until each has min_obs observations.
            least = min(pool, key=lambda c: stats.get(c.target.id, _Stat()).count)
            if stats.get(least.target.id, _Stat()).count < self.min_obs:
                return Decision(least.target, explored=True)
        return Decision(self._best(pool, stats).target)

    @staticmethod
    def _best(pool: Sequence[Candidate], stats: dict[str, _Stat]) -> Candidate:
        def score(c: Candidate) -> tuple[int, float, float]:
            s = stats.get(c.target.id)
            if s is None or s.count == 0:
                return (2, 0.0, math.inf)
            if s.qos_ratio >= 0.5:
                return (0, 0.0, s.mean_energy)
            return (1, -s.qos_ratio, s.mean_energy)

        return min(pool, key=score)

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None:
        key = self._key(ctx)
        if ctx.oracle is not None and self._oracle_n.get(key, 0) > 0:
            return  # oracle statistics already cover every target
        if decision.target.runner == self.location:
            self._stats.setdefault(key, {}).setdefault(decision.target.id, _Stat()).add(outcome, ctx.qos_s)


def opt_choice(ctx: DecisionContext) -> tuple[Candidate, Outcome]:
    """Opt (paper footnote 8): with the true costs, the min-energy target meeting QoS and
    accuracy; if none meets QoS, the min-energy one meeting accuracy; if none meets accuracy
    either, the min-energy one among the most accurate."""
    if ctx.oracle is None:
        raise OracleUnavailable(
            "policy 'opt' needs an oracle: the true cost of every target (simulator or profiled runners)"
        )
    if not ctx.candidates:
        raise NoCandidate("no candidate target offered")
    scored = [(c, ctx.oracle(c.target)) for c in ctx.candidates]
    if ctx.accuracy_min is not None:
        acc_ok = [(c, o) for c, o in scored if o.accuracy >= ctx.accuracy_min]
        if not acc_ok:
            top = max(o.accuracy for _, o in scored)
            acc_ok = [(c, o) for c, o in scored if o.accuracy == top]
    else:
        acc_ok = scored
    qos_ok = [(c, o) for c, o in acc_ok if o.latency_s < ctx.qos_s]
    pool = qos_ok or acc_ok
    return min(pool, key=lambda co: (co[1].energy_j, co[1].latency_s))


class OptPolicy:
    name = "opt"

    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        c, _ = opt_choice(ctx)
        return Decision(c.target)

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None:
        return None


def edge_cpu_fp32() -> FixedPolicy:
    return FixedPolicy("edge-cpu-fp32", pick_edge_cpu_fp32, "the phone's CPU in FP32")


def cloud() -> FixedPolicy:
    return FixedPolicy("cloud", pick_cloud, "a cloud GPU or CPU")


def edge_best(*, accuracy_masking: bool = True) -> StaticBestPolicy:
    return StaticBestPolicy("edge-best", Location.edge, accuracy_masking=accuracy_masking)


def connected_edge(*, accuracy_masking: bool = True, learned: bool = True) -> StaticBestPolicy | FixedPolicy:
    if not learned:
        return FixedPolicy("connected-edge", pick_peer_gpu, "a connected peer target")
    return StaticBestPolicy("connected-edge", Location.peer, accuracy_masking=accuracy_masking)
