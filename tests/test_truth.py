"""The simulator's hidden true world: it differs from the profiles by exactly the drawn deviations,
Opt and the scores read it, and nothing a policy can reach holds it."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from services.core.costmodel import CostTable, Deviations
from services.core.policies.base import DecisionContext, Outcome
from services.core.schemas import Location
from services.evaluation.config import EvalConfig
from services.evaluation.simulator import Block, opt_indices, run_steps, static_best_index
from services.evaluation.truth import PAPER_ESTIMATOR_SIGMA, TrueWorld
from services.evaluation.world import DeviceWorld, load_device

MODELS = ["mobilenet_v1", "resnet50", "mobilebert"]


def _world(sigma: float = 0.2, seed: int = 5, models: list[str] | None = None) -> DeviceWorld:
    cfg = EvalConfig(devices=["mi8pro"], scenarios=["s1", "s2", "d3"], models=models or MODELS, seed=seed)
    cfg.world_sigma = sigma
    return load_device(cfg, "mi8pro")


@pytest.fixture(scope="module")
def world() -> DeviceWorld:
    return _world()


def _hidden_values(world: DeviceWorld) -> set[float]:
    """Every multiplier the true world drew for these networks (none is exactly 1 at sigma > 0)."""
    out: set[float] = set()
    for m in world.features:
        targets = world.case(m).targets
        d = world.truth.deviations(m, targets)
        out |= set(d.latency.tolist()) | set(d.power.tolist())
        out |= set(d.goodput.values()) | set(d.radio_power.values()) | {d.base_power}
        out |= set(world.truth.estimator_bias(targets).tolist())
    return out


def _walk(obj: Any, seen: set[int] | None = None, depth: int = 0) -> Iterator[Any]:
    """Every object reachable from ``obj``: fields of dataclasses and pydantic models, slots,
    containers, a bound method's instance and a closure's cells (bounded depth)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 12:
        return
    seen.add(id(obj))
    yield obj
    children: list[Any] = []
    if isinstance(obj, BaseModel):
        children += [getattr(obj, k) for k in type(obj).model_fields]
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        children += [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif isinstance(obj, dict):
        children += list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children += list(obj)
    elif isinstance(obj, np.ndarray):
        children += obj.ravel().tolist()
    if callable(obj) and not isinstance(obj, type):
        children += [c.cell_contents for c in (getattr(obj, "__closure__", None) or ())]
        if hasattr(obj, "__self__"):
            children.append(obj.__self__)
    for slot in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, slot):
            children.append(getattr(obj, slot))
    if hasattr(obj, "__dict__") and not isinstance(obj, (type, BaseModel)):
        children += list(vars(obj).values())
    for c in children:
        yield from _walk(c, seen, depth + 1)


def test_no_policy_facing_object_reaches_the_hidden_world(world: DeviceWorld) -> None:
    """Walk the object graph of what a policy is given -- DecisionContexts, observed Outcomes and
    the profiles (``world.mesh``) -- and find neither the TrueWorld, nor any Deviations, nor any
    float equal to one of the drawn multipliers."""
    hidden = _hidden_values(world)
    assert len(hidden) > 20 and all(v != 1.0 for v in hidden)
    reachable: list[Any] = [world.mesh]
    for m in world.features:
        for s in world.scenarios:
            b = world.block(m, s, "test", 5)
            for i in range(b.n):
                reachable.append(b.context(i))
                reachable += [b.outcome(i, j) for j in range(len(b.case.candidates))]
    kinds = {type(x) for x in reachable}
    assert {DecisionContext, Outcome} <= kinds
    for obj in _walk(reachable):
        assert not isinstance(obj, (TrueWorld, Deviations, Block, CostTable)), type(obj)
        if isinstance(obj, float):
            assert obj not in hidden
    for i in range(3):
        assert world.block(MODELS[0], "s1", "test", 5).context(i).oracle is None


def test_true_costs_differ_from_the_profiles_by_the_drawn_deviations(world: DeviceWorld) -> None:
    """Inference time x (pair x interaction), processor power x its multiplier, base power x its
    multiplier; transfers follow the link's goodput multiplier."""
    truth = world.truth
    x = (np.array([0.0]), np.array([0.0]), np.array([-55.0]), np.array([-50.0]))
    for m in world.features:
        case = world.case(m)
        prof = case.table.evaluate(*x)
        true = case.table.evaluate(*x, dev=truth.deviations(m, case.targets))
        base_w = world.mesh.edge.base_w
        for j, t in enumerate(case.targets):
            lat_mult = truth.latency_multiplier(t, m)
            assert true["inference_s"][0, j] == pytest.approx(prof["inference_s"][0, j] * lat_mult, rel=1e-12)
            if t.runner == Location.edge:
                proc_prof = prof["energy_j"][0, j] - base_w * prof["latency_s"][0, j]
                expected = proc_prof * lat_mult * truth.power_multiplier(t) + (
                    base_w * truth.base_power_multiplier * true["latency_s"][0, j]
                )
                assert true["energy_j"][0, j] == pytest.approx(expected, rel=1e-9)
            assert abs(math.log(lat_mult)) < 5 * 0.2 * 1.5  # a lognormal draw of log-sd ~0.22
    # the draws really vary: not one common factor
    lat = [truth.latency_multiplier(t, "resnet50") for t in world.case("resnet50").targets]
    assert np.std(np.log(lat)) > 0.05


def test_sigma_zero_is_the_profiles_and_estimates_are_exact() -> None:
    w = _world(sigma=0.0)
    for m in w.features:
        b = w.block(m, "d3", "test", 20)
        case = b.case
        prof = case.table.evaluate(*b.condition_arrays())
        t = len(case.candidates)  # the whole-network columns (plans follow them)
        assert np.allclose(b.latency[:, :t], prof["latency_s"]) and np.allclose(b.energy[:, :t], prof["energy_j"])
        assert np.array_equal(b.observed[1], b.measured[1])
        assert np.array_equal(b.informed, b.opt)  # nothing hidden: knowing the profiles is knowing all


def test_policies_observe_estimates_while_scores_and_opt_read_the_truth(world: DeviceWorld) -> None:
    b = world.block("resnet50", "s2", "test", 30)
    lat_m, en_m = b.measured
    lat_o, en_o = b.observed
    assert b.est_bias is not None
    assert np.array_equal(lat_o, lat_m)  # a clock reads the latency
    assert np.allclose(en_o, en_m * b.est_bias[None, :])  # the estimator's bias rides on the energy
    assert np.array_equal(b.opt, opt_indices(b.latency, b.energy, b.case.accuracy, b.case.qos_s, None))
    # a run's trace scores the measured (true) energy, while the policy learnt from the observed one
    from services.evaluation.contenders import build_policy

    policy = build_policy("autoscale", world.cfg, 1)
    tr = run_steps(policy, [(b, i) for i in range(10)], random.Random(0), reward_mode="qos")
    for k, j in enumerate(tr.choice):
        assert tr.energy_j[k] == en_m[k, j]
        assert b.outcome(k, j).energy_j == en_o[k, j]


def test_opt_informed_is_opts_rule_on_what_a_decider_could_learn(world: DeviceWorld) -> None:
    """Opt (informed) = Opt's rule on the true costs without the network's interaction terms, with
    energy as the estimator reports it; it differs from Opt where those unlearnable parts decide."""
    truth, differs = world.truth, 0
    for m in world.features:
        case = world.case(m)
        t = len(case.candidates)
        for tgt in case.targets:
            inter = truth.latency_multiplier(tgt, m) / truth.latency_multiplier(tgt, m, interaction=False)
            assert inter != 1.0 and abs(math.log(inter)) < 5 * 0.1  # the network x processor draw alone
        for s in ("s1", "s2", "d3"):
            b = world.block(m, s, "test", 30)
            c = case.table.evaluate(*b.condition_arrays(), dev=truth.deviations(m, case.targets, interaction=False))
            assert b.est_bias is not None
            energy = c["energy_j"] * b.est_bias[None, :t]
            assert np.array_equal(b.informed, opt_indices(c["latency_s"], energy, case.accuracy[:t], case.qos_s, None))
            differs += int((b.informed != b.opt).sum())
    assert differs > 0


def test_estimator_bias_is_of_the_papers_order(world: DeviceWorld) -> None:
    """Across many draws the estimator's MAPE is the paper's 7.3 % (within sampling error)."""
    errs = []
    for seed in range(200):
        tw = TrueWorld(world.mesh, seed, 0.2, PAPER_ESTIMATOR_SIGMA)
        errs += [abs(v - 1.0) for v in tw.estimator_bias(world.case("resnet50").targets[:1])]
    assert np.mean(errs) == pytest.approx(0.073, abs=0.015)


def test_draws_are_keyed_by_name_and_seed() -> None:
    """Another network in the evaluation moves no draw; another seed moves them all."""
    a, b = _world(models=["resnet50"]), _world(models=["resnet50", "mobilenet_v1"])
    c = _world(seed=6, models=["resnet50"])
    ta = a.case("resnet50").targets
    da, db, dc = (w.truth.deviations("resnet50", ta) for w in (a, b, c))
    assert np.array_equal(da.latency, db.latency) and np.array_equal(da.power, db.power)
    assert not np.allclose(da.latency, dc.latency)


def test_edge_best_is_one_static_edge_target_per_network_and_scenario(world: DeviceWorld) -> None:
    for s in world.scenarios:
        b = world.block("mobilenet_v1", s, "test", 40)
        j = static_best_index(b, "edge")
        assert b.case.candidates[j].target.runner == Location.edge
        edge = [k for k, c in enumerate(b.case.candidates) if c.target.runner == Location.edge]
        ok = [k for k in edge if (b.latency[:, k] < b.case.qos_s).mean() >= 0.5]
        assert j == min(ok, key=lambda k: b.energy[:, k].mean())
        peer = static_best_index(b, "peer")
        assert b.case.candidates[peer].target.runner == Location.peer
