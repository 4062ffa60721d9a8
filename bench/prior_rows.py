"""The prior learner's rows of ``bench/bench_decision.py``: decide and training step through the Redis
store, with a trained row, on the Mi8Pro mesh (every target of its profiles)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.common.config_files import load_profile
from services.core import costmodel
from services.core.costmodel import Mesh
from services.core.policies.base import Candidate, Decision, DecisionContext, Outcome
from services.core.policies.prior import PriorParams, PriorPolicy
from services.core.reward import RewardWeights, reward
from services.core.schemas import ModelFeatures, RuntimeConditions
from services.core.state import state_index
from services.decider.qstore import QStore

T = TypeVar("T")  # what the timer reports per row (bench_decision.Timing)
Timer = Callable[..., Awaitable[dict[str, T]]]


def mi8pro_mesh() -> Mesh:
    return Mesh(edge=load_profile("mi8pro"), peer=load_profile("galaxy_tab_s6"), cloud=load_profile("cloud_p100"))


async def _trained(
    url: str, n: int, features: ModelFeatures, cond: RuntimeConditions, rng: random.Random
) -> tuple[QStore, Mesh, DecisionContext, Callable[[Decision], Outcome]]:
    """A Redis store whose row for this request is trained (every target tried, corrections learnt),
    and the outcome of a target: the profile's cost, 1.1x slower, 0.9x the energy, 7 % noise."""
    mesh = mi8pro_mesh()
    cands = tuple(Candidate(t, 70.0) for t in mesh.targets(features))
    store = QStore(url, "bench-prior", actions=[c.target.id for c in cands], queue_max=10 * n + 10)
    await store.start()
    ctx = DecisionContext("mobilenet_v1", features, cond, state_index(features, cond), cands, 0.05, None)
    cost = {c.target.id: costmodel.estimate(mesh, features, c.target, cond) for c in cands}

    def outcome(d: Decision) -> Outcome:
        c = cost[d.target.id]
        f = rng.lognormvariate(0.0, 0.07)
        return Outcome(c.latency_s * 1.1 * f, c.energy_j * 0.9 * f, 70.0)

    trainer = PriorPolicy(store, mesh, PriorParams(epsilon=1.0))
    for _ in range(2000):
        d = trainer.decide(ctx, rng)
        trainer.learn(ctx, d, outcome(d), 0.0)
    await store.flush(120)
    return store, mesh, ctx, outcome


async def prior_rows(url: str, n: int, features: ModelFeatures, cond: RuntimeConditions, timer: Timer) -> dict[str, T]:
    """Decide (greedy on a trained row, after another write to the row, epsilon 0.1), learn, and the
    training step (bin + decide + qos reward + learn), interleaved by ``timer`` like the other rows."""
    rng = random.Random(0)
    store, mesh, ctx, outcome = await _trained(url, n, features, cond, rng)
    cands, state = ctx.candidates, ctx.state
    greedy = PriorPolicy(store, mesh, PriorParams(epsilon=0.0))
    explore = PriorPolicy(store, mesh, PriorParams(epsilon=0.1))
    d0 = greedy.decide(ctx, rng)
    o0 = outcome(d0)

    def observe_and_decide() -> Decision:
        state_index(features, cond)  # what the decider does per request (Table I binning)
        return greedy.decide(ctx, rng)

    other = cands[len(cands) // 2].target.id
    flip = [1.0]

    def decide_after_other_write() -> Decision:
        # Another process's update of one entry of this row arrives (as CacheSync applies it): patched.
        flip[0] = -flip[0]
        store.set_entry(state, other, store.row(state).get(other, 0.0) + flip[0] * 1e-3, 5)
        return greedy.decide(ctx, rng)

    def decide_after_reload() -> Decision:
        store._touch(state)  # the whole row replaced (a refetch or a reload): values rebuilt
        return greedy.decide(ctx, rng)

    def step(pol: PriorPolicy) -> None:
        state_index(features, cond)  # the binning is part of the step; the context is reused
        d = pol.decide(ctx, rng)
        o = outcome(d)
        r = reward(
            energy_mj=o.energy_j * 1e3,
            latency_ms=o.latency_s * 1e3,
            accuracy=o.accuracy,
            qos_ms=50.0,
            accuracy_min=None,
            weights=RewardWeights(),
            mode="qos",
        )
        pol.learn(ctx, d, o, r)

    async def drain() -> None:
        await store.flush(120)

    out = dict(
        await timer(
            {
                "prior_decide_greedy": lambda: greedy.decide(ctx, rng),
                "prior_decide_reread": decide_after_other_write,
                "prior_decide_rebuilt": decide_after_reload,
                "prior_observe_decide": observe_and_decide,
                "prior_decide_eps0.1": lambda: explore.decide(ctx, rng),
                "prior_learn_qstore": lambda: greedy.learn(ctx, d0, o0, -30.0),
                "prior_training_step_greedy": lambda: step(greedy),
                "prior_training_step_eps0.1": lambda: step(explore),
            },
            n // 2,
            drain,
            rounds=60,
        )
    )
    if not await store.flush(120):
        raise RuntimeError("the prior learner's updates did not all reach Redis")
    await store.reset()
    await store.stop()
    return out


ROWS = [
    ("prior learner: decide, greedy (trained row)", "prior_decide_greedy", "decision"),
    ("prior learner: decide, greedy, another process updated an entry of the row", "prior_decide_reread", "decision"),
    ("prior learner: decide, greedy, whole row reloaded (values rebuilt)", "prior_decide_rebuilt", "decision"),
    ("prior learner: Table I binning + greedy decide", "prior_observe_decide", "decision"),
    ("prior learner: decide, epsilon 0.1", "prior_decide_eps0.1", "decision"),
    (
        "prior learner: training step, greedy: bin + decide + reward + learn (Redis)",
        "prior_training_step_greedy",
        "training",
    ),
    ("prior learner: training step, epsilon 0.1 (Redis store)", "prior_training_step_eps0.1", "training"),
    ("prior learner: learn only (residual + corrections, cache + enqueue)", "prior_learn_qstore", None),
]
