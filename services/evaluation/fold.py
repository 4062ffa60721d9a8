"""The main experiment's unit of work: one leave-one-out fold (train on every network but one,
test every policy on that one), returned as compact sums."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import asdict
from typing import Any

from services.core.policies.base import Policy
from services.evaluation.config import AUTOSCALE, EvalConfig
from services.evaluation.contenders import ONLINE, PREDICTORS, REFERENCE_CHOOSERS, build_policy, fit_now
from services.evaluation.scoring import Agg, noise_floor
from services.evaluation.simulator import Block, run_steps, set_exploration, uniform_chooser
from services.evaluation.world import DeviceWorld, seed_of, world_of


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
    """The training phase of one policy: AutoScale learns online from every training inference;
    the predictors fit once on a uniformly explored sample of them. Returns the decisions made."""
    if not train:
        return 0
    mode, weights = cfg.reward_of(name)
    if name in AUTOSCALE:
        run_steps(policy, train, rng, reward_mode=mode, weights=weights, record=False)
        return len(train)
    if name in PREDICTORS:
        sample = random.Random(pseed).sample(train, min(cfg.predictor_samples, len(train)))
        run_steps(policy, sample, rng, chooser=uniform_chooser, reward_mode=mode, weights=weights, record=False)
        fit_now(policy)
        return len(sample)
    return 0


def run_fold(cfg: EvalConfig, device: str, held_out: str) -> dict[str, Any]:
    """Train on every network but ``held_out``, test every policy on it. Returns compact sums.

    Per scenario the held-out network's test sequence is: a *cold* window (``test_runs``, right
    after leave-one-out training), ``adapt_runs`` online inferences (Algorithm 1 continues with
    exploration; online learners only), then an *adapted* window (``test_runs``). Both windows
    exploit (epsilon 0) and keep learning. Offline predictors are measured on the first
    ``predictor_test_runs`` of each window.
    """
    world = world_of(cfg, device)
    t0 = time.perf_counter()
    decisions = 0
    out: dict[str, dict[str, dict[str, Agg]]] = {"cold": defaultdict(dict), "adapted": defaultdict(dict)}
    train_rng = random.Random(seed_of(cfg.seed, device, held_out, "order"))
    train = _train_steps(world, held_out, train_rng) if len(world.features) > 1 else []
    ids = [c.target.id for c in world.case(held_out).candidates]
    n_total = 2 * cfg.test_runs + cfg.adapt_runs
    windows = {"cold": 0, "adapted": cfg.test_runs + cfg.adapt_runs}
    blocks = {s: world.block(held_out, s, "test", n_total) for s in world.scenarios}
    for name in cfg.policies:
        pseed = seed_of(cfg.seed, device, held_out, name) % (2**31)
        policy = build_policy(name, cfg, pseed)
        rng = random.Random(pseed)
        decisions += _train(cfg, name, policy, train, rng, pseed)
        for s in world.scenarios:
            aggs, n = _test(cfg, name, policy, blocks[s], windows, ids, rng)
            for wname, agg in aggs.items():
                out[wname][s][name] = agg
            decisions += n
    return {
        "device": world.device,
        "model": held_out,
        "aggs": {w: {s: {p: asdict(a) for p, a in d.items()} for s, d in by_s.items()} for w, by_s in out.items()},
        "noise_floor": {
            s: noise_floor(blocks[s], [range(st, st + cfg.test_runs) for st in windows.values()])
            for s in world.scenarios
        },
        "seconds": time.perf_counter() - t0,
        "decisions": decisions,
    }


def _test(
    cfg: EvalConfig,
    name: str,
    policy: Policy,
    block: Block,
    windows: dict[str, int],
    ids: list[str],
    rng: random.Random,
) -> tuple[dict[str, Agg], int]:
    """One policy's test windows on one block: the scores per window, and the decisions made."""
    mode, weights = cfg.reward_of(name)
    n_test = cfg.predictor_test_runs if name in PREDICTORS else cfg.test_runs
    offline = name in PREDICTORS and name not in ONLINE  # never refitted: both windows are alike
    aggs: dict[str, Agg] = {}
    decisions = 0
    for wname, start in windows.items():
        if offline and wname == "cold":
            continue  # measured once, on the adapted window (same model, same distribution)
        if wname == "adapted" and name in ONLINE and cfg.adapt_runs > 0:
            set_exploration(policy, 0.1 if name in AUTOSCALE else 0.0)
            steps = [(block, i) for i in range(cfg.test_runs, cfg.test_runs + cfg.adapt_runs)]
            run_steps(policy, steps, rng, reward_mode=mode, weights=weights, record=False)
            decisions += len(steps)
        set_exploration(policy, 0.0)
        idx = range(start, start + n_test)
        # Opt and the offline-profiled baselines replay choices precomputed from the true costs
        # (no policy is handed those); offline predictors decide the whole window in one batch.
        tr = run_steps(
            policy,
            [(block, i) for i in idx],
            rng,
            reward_mode=mode,
            weights=weights,
            chooser=REFERENCE_CHOOSERS.get(name),
            batch=offline,
        )
        decisions += n_test
        agg = Agg()
        agg.add(tr, ids)
        _lat, en = block.measured
        agg.opt_energy_j = float(sum(en[i, block.opt[i]] for i in idx))
        aggs[wname] = agg
        if offline:
            aggs["cold"] = agg
    return aggs, decisions
