"""The main experiment's unit of work: one leave-one-out fold (train on every network but one,
test every policy on that one), returned as compact sums.

Per scenario, the held-out network's test block is laid out as measured windows separated by
online inferences::

    [cold: test_runs] [online: k1] [window k1: test_runs] [online: k2 - k1] [window k2] ...

with k in ``EvalConfig.curve_runs`` (10, 30, 100). A measured window scores the policy as it stands
after exactly k online inferences of the held-out network: it exploits (epsilon 0) and does not
learn. The online inferences are the policy's own, exploring as it would deployed (epsilon 0.1
for the epsilon-greedy learners) and learning from every observed outcome; the sklearn
comparators are refitted on everything they hold before each window. Every scenario starts
from the same trained state (a copy), so no scenario's online inferences leak into another's
cold window. Every contender gets the same data in every window: the same training inferences
to learn from (AutoScale all of them, the predictors a uniformly explored sample of them, as
offline profiling data), then the same number of held-out inferences.
"""

from __future__ import annotations

import copy
import random
import time
from collections import defaultdict
from dataclasses import asdict
from typing import Any

from services.core.policies.base import BatchPolicy, Decision, Policy, RefittablePolicy
from services.evaluation.config import EvalConfig
from services.evaluation.contenders import (
    FIXED,
    KNOWN,
    ONLINE,
    PREDICTORS,
    REFERENCE_CHOOSERS,
    SKLEARN,
    build_policy,
    fit_now,
)
from services.evaluation.predictor_errors import prediction_errors
from services.evaluation.scoring import Agg, noise_floor
from services.evaluation.simulator import Block, run_steps, set_exploration, uniform_chooser
from services.evaluation.world import DeviceWorld, seed_of, world_of

ONLINE_EPSILON = 0.1  # Algorithm 1's exploration while the held-out network runs online


def window_names(cfg: EvalConfig) -> list[str]:
    """ "cold", then "online_<k>" per online budget k, in order."""
    return ["cold", *(f"online_{k}" for k in sorted(set(cfg.curve_runs)))]


def window_layout(cfg: EvalConfig) -> tuple[dict[str, int], dict[str, range], int]:
    """(start row of each window, online rows before it, block length)."""
    starts: dict[str, int] = {"cold": 0}
    online: dict[str, range] = {"cold": range(0)}
    row, done = cfg.test_runs, 0
    for k in sorted(set(cfg.curve_runs)):
        online[f"online_{k}"] = range(row, row + k - done)
        row += k - done
        starts[f"online_{k}"] = row
        row += cfg.test_runs
        done = k
    return starts, online, row


def _train_steps(world: DeviceWorld, held_out: str, rng: random.Random) -> list[tuple[Block, int]]:
    cfg = world.cfg
    steps = [
        (world.block(m, s, "train", cfg.runs), i)
        for m in world.features
        if m != held_out
        for s in world.scenarios
        for i in range(cfg.runs)
    ]
    rng.shuffle(steps)  # interleaved use, as a phone serving several apps would see
    return steps


def _train(
    cfg: EvalConfig, name: str, policy: Policy, train: list[tuple[Block, int]], rng: random.Random, pseed: int
) -> int:
    """The training phase of one policy: the learners learn online from every training inference;
    the predictors fit once on a uniformly explored sample of them. Returns the decisions made."""
    if not train or name in REFERENCE_CHOOSERS:
        return 0
    mode, weights = cfg.reward_of(name)
    if name in PREDICTORS:
        sample = random.Random(pseed).sample(train, min(cfg.predictor_samples, len(train)))
        run_steps(policy, sample, rng, chooser=uniform_chooser, reward_mode=mode, weights=weights, record=False)
        fit_now(policy)
        return len(sample)
    if name in FIXED:
        return 0
    # AutoScale and plugged-in learners learn from every training inference, as deployed
    run_steps(policy, train, rng, reward_mode=mode, weights=weights, record=False)
    return len(train)


def run_fold(cfg: EvalConfig, device: str, held_out: str) -> dict[str, Any]:
    """Train on every network but ``held_out``, test every policy on it (module doc). Returns sums."""
    world = world_of(cfg, device)
    t0 = time.perf_counter()
    decisions = 0
    names = window_names(cfg)
    out: dict[str, dict[str, dict[str, Agg]]] = {w: defaultdict(dict) for w in names}
    errors: dict[str, dict[str, list[float]]] = {}  # window -> predictor -> [sum of APEs, count]
    train_rng = random.Random(seed_of(cfg.seed, device, held_out, "order"))
    train = _train_steps(world, held_out, train_rng) if len(world.features) > 1 else []
    ids = [c.target.id for c in world.case(held_out).candidates]
    starts, online, n_total = window_layout(cfg)
    blocks = {s: world.block(held_out, s, "test", n_total) for s in world.scenarios}
    for name in cfg.policies:
        pseed = seed_of(cfg.seed, device, held_out, name) % (2**31)
        trained = build_policy(name, cfg, pseed, world.mesh)
        rng = random.Random(pseed)
        decisions += _train(cfg, name, trained, train, rng, pseed)
        # Only a policy that learns in the online inferences needs a fresh copy per scenario.
        learns = name in ONLINE or (name in SKLEARN and cfg.study("predictors")) or name not in KNOWN
        for s in world.scenarios:
            policy = _copy(trained, world) if learns and cfg.curve_runs and len(world.scenarios) > 1 else trained
            n = _test(cfg, name, policy, blocks[s], (starts, online), ids, rng, out, s, errors)
            decisions += n
    return {
        "device": world.device,
        "model": held_out,
        "aggs": {w: {s: {p: asdict(a) for p, a in d.items()} for s, d in by_s.items()} for w, by_s in out.items()},
        "errors": errors,
        "noise_floor": {
            s: noise_floor(blocks[s], [range(st, st + cfg.test_runs) for st in starts.values()])
            for s in world.scenarios
        },
        "seconds": time.perf_counter() - t0,
        "decisions": decisions,
    }


def _copy(policy: Policy, world: DeviceWorld) -> Policy:
    """A copy of a trained policy that shares the world's immutable objects (candidates, targets,
    features: deep-copying their pydantic models was most of a naive copy's cost)."""
    memo: dict[int, Any] = {}
    for case in world.cases.values():
        memo[id(case.candidates)] = case.candidates
        memo[id(case.features)] = case.features
        for c in case.candidates:
            memo[id(c)] = c
            memo[id(c.target)] = c.target
    return copy.deepcopy(policy, memo)


def _online(cfg: EvalConfig, name: str, policy: Policy, steps: list[tuple[Block, int]], rng: random.Random) -> None:
    """The policy's own online inferences of the held-out network, learning from each."""
    if not steps or name in REFERENCE_CHOOSERS:
        return
    mode, weights = cfg.reward_of(name)
    set_exploration(policy, ONLINE_EPSILON)
    if isinstance(policy, RefittablePolicy) and isinstance(policy, BatchPolicy):
        # A predictor does not refit within the run: its greedy choices are decided in one batch
        # and epsilon of them replaced by uniform exploration, as ``decide`` would do one by one.
        set_exploration(policy, 0.0)
        greedy = policy.decide_many([b.context(i) for b, i in steps], rng)
        for (b, i), d in zip(steps, greedy, strict=True):
            j = b.case.index[d.target.id]
            explored = rng.random() < ONLINE_EPSILON
            if explored:
                j = uniform_chooser(b, i, rng)
            r = float(b.rewards(mode, weights)[i, j])
            policy.learn(b.context(i), Decision(b.case.candidates[j].target, explored), b.outcome(i, j), r)
        fit_now(policy)
        return
    run_steps(policy, steps, rng, reward_mode=mode, weights=weights, record=False)


def _test(
    cfg: EvalConfig,
    name: str,
    policy: Policy,
    block: Block,
    layout: tuple[dict[str, int], dict[str, range]],
    ids: list[str],
    rng: random.Random,
    out: dict[str, dict[str, dict[str, Agg]]],
    scenario: str,
    errors: dict[str, dict[str, list[float]]],
) -> int:
    """One policy's windows on one block, scored into ``out``; returns the decisions made."""
    starts, online = layout
    mode, weights = cfg.reward_of(name)
    decisions = 0
    batch = isinstance(policy, RefittablePolicy)  # decisions do not depend on the window's outcomes
    for wname, start in starts.items():
        if wname != "cold" and name in SKLEARN and not cfg.study("predictors"):
            break  # their refits per window cost seconds each: the online windows are a study
        steps = [(block, i) for i in online[wname]]
        _online(cfg, name, policy, steps, rng)
        decisions += len(steps)
        set_exploration(policy, 0.0)
        idx = range(start, start + (min(cfg.predictor_test_runs, cfg.test_runs) if name in SKLEARN else cfg.test_runs))
        tr = run_steps(
            policy,
            [(block, i) for i in idx],
            rng,
            learn=False,
            reward_mode=mode,
            weights=weights,
            chooser=REFERENCE_CHOOSERS.get(name),
            batch=batch,
        )
        decisions += len(idx)
        agg = Agg()
        agg.add(tr, ids)
        _lat, en = block.measured
        agg.opt_energy_j = float(sum(en[i, block.opt[i]] for i in idx))
        out[wname][scenario][name] = agg
        if name in SKLEARN:
            e = prediction_errors(policy, block, idx, tr.choice, mode, weights)
            if e is not None:
                acc = errors.setdefault(wname, {}).setdefault(name, [0.0, 0.0])
                acc[0] += e[0]
                acc[1] += e[1]
    return decisions
