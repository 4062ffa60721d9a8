"""Baselines, the sklearn comparators, LinUCB and the PolicySet, on a small synthetic mesh."""

from __future__ import annotations

import asyncio
import random

import pytest

from services.common.settings import Settings
from services.core.policies import (
    BatchPolicy,
    ExploringPolicy,
    NoCandidate,
    OracleUnavailable,
    Policy,
    PolicySet,
    QLearningPolicy,
    QParams,
    QTable,
    RefittablePolicy,
    UnknownPolicy,
    make_policy,
)
from services.core.policies.bandit import LinUCBPolicy
from services.core.policies.base import Candidate, Decision, DecisionContext, Outcome
from services.core.policies.featurise import context_vector
from services.core.policies.predictors import (
    BayesOptPolicy,
    ClassifierPolicy,
    PredictorParams,
    RegressionPolicy,
)
from services.core.reward import reward
from services.core.schemas import POLICY_NAMES, ModelFeatures, RuntimeConditions, Target
from services.core.state import observe

# --------------------------------------------------------------------------- a synthetic mesh

ACTIONS = [f"edge/cpu/fp32@{k}" for k in range(4)] + [
    "edge/gpu/fp16",
    "edge/dsp/int8",
    "cloud/gpu/fp32",
    "cloud/cpu/fp32",
    "peer/gpu/fp32",
    "peer/cpu/fp32",
]
MODELS = {
    "small": ModelFeatures(conv=14, fc=1, rc=0, macs=300_000_000, input_bytes=600_000),
    "big": ModelFeatures(conv=94, fc=1, rc=0, macs=5_000_000_000, input_bytes=1_000_000),
}
CONDS = [
    RuntimeConditions(co_cpu=c, co_mem=0.1, rssi_wifi_dbm=w, rssi_p2p_dbm=-50)
    for c in (0.0, 0.8)
    for w in (-50.0, -90.0)
]
QOS_S = 0.1


def true_cost(model: str, cond: RuntimeConditions, t: Target) -> tuple[float, float]:
    """(energy mJ, latency ms). Best: small -> DSP; big -> cloud GPU (good Wi-Fi) or peer GPU (weak)."""
    g = MODELS[model].macs / 1e9
    weak = cond.rssi_wifi_dbm <= -80
    if t.runner.value == "edge":
        if t.processor.value == "cpu":
            f = 0.5 + 0.5 * (t.dvfs or 0)
            lat = 100 * g / f * (1 + cond.co_cpu)
            return lat * (0.5 + 0.8 * f * f), lat
        if t.processor.value == "gpu":
            lat = 25 * g * (1 + 0.3 * cond.co_cpu)
            return lat * 1.2, lat
        lat = 30 * g
        return lat * 0.5, lat
    if t.runner.value == "cloud":
        lat = 10 + (2 if t.processor.value == "gpu" else 20) * g + (60 if weak else 8)
        return 0.8 * lat + (300 if weak else 10), lat
    lat = 15 + (8 if t.processor.value == "gpu" else 30) * g
    return 0.6 * lat + 20, lat


def best_action(model: str, cond: RuntimeConditions) -> str:
    def score(a: str) -> tuple[bool, float]:
        e, lat = true_cost(model, cond, Target.parse(a))
        return (lat >= QOS_S * 1e3, e)

    return min(ACTIONS, key=score)


CANDS = tuple(Candidate(Target.parse(a), 70.0) for a in ACTIONS)


def make_ctx(
    model: str,
    cond: RuntimeConditions,
    *,
    oracle: bool = False,
    accuracy_min: float | None = None,
    cands: tuple[Candidate, ...] = CANDS,
) -> DecisionContext:
    f = MODELS[model]

    def orc(t: Target) -> Outcome:
        e, lat = true_cost(model, cond, t)
        acc = next(c.accuracy for c in cands if c.target == t)
        return Outcome(latency_s=lat / 1e3, energy_j=e / 1e3, accuracy=acc)

    return DecisionContext(
        model=model,
        features=f,
        conditions=cond,
        state=observe(f, cond).index,
        candidates=cands,
        qos_s=QOS_S,
        accuracy_min=accuracy_min,
        oracle=orc if oracle else None,
    )


def simulate(policy: Policy, steps: int, seed: int = 0, tail: int = 150) -> tuple[float, float]:
    """Online run; returns (mean true energy, fraction of optimal picks) over the last ``tail`` steps."""
    rng = random.Random(seed)
    noise = random.Random(seed + 100)
    energies: list[float] = []
    hits: list[bool] = []
    for t in range(steps):
        model = rng.choice(list(MODELS))
        cond = rng.choice(CONDS)
        ctx = make_ctx(model, cond)
        d = policy.decide(ctx, rng)
        e, lat = true_cost(model, cond, d.target)
        e_obs, lat_obs = e * noise.uniform(0.9, 1.1), lat * noise.uniform(0.9, 1.1)
        r = reward(energy_mj=e_obs, latency_ms=lat_obs, accuracy=70.0, qos_ms=QOS_S * 1e3, accuracy_min=None)
        policy.learn(ctx, d, Outcome(lat_obs / 1e3, e_obs / 1e3, 70.0), r)
        if t >= steps - tail:
            energies.append(e)
            hits.append(d.target.id == best_action(model, cond))
    return sum(energies) / len(energies), sum(hits) / len(hits)


def random_energy() -> float:
    tot = [true_cost(m, c, Target.parse(a))[0] for m in MODELS for c in CONDS for a in ACTIONS]
    return sum(tot) / len(tot)


def opt_energy() -> float:
    tot = [true_cost(m, c, Target.parse(best_action(m, c)))[0] for m in MODELS for c in CONDS]
    return sum(tot) / len(tot)


# --------------------------------------------------------------------------- baselines


def test_edge_cpu_fp32_picks_top_dvfs_step() -> None:
    p = make_policy("edge-cpu-fp32")
    assert p.decide(make_ctx("small", CONDS[0]), random.Random(0)).target.id == "edge/cpu/fp32@3"
    fixed = tuple(Candidate(Target.parse(a), 70.0) for a in ("edge/cpu/fp32", "edge/cpu/int8@3"))
    assert p.decide(make_ctx("small", CONDS[0], cands=fixed), random.Random(0)).target.id == "edge/cpu/fp32"
    with pytest.raises(NoCandidate):
        p.decide(make_ctx("small", CONDS[0], cands=CANDS[6:]), random.Random(0))


def test_cloud_prefers_gpu_then_cpu() -> None:
    p = make_policy("cloud")
    assert p.decide(make_ctx("big", CONDS[0]), random.Random(0)).target.id == "cloud/gpu/fp32"
    no_gpu = tuple(c for c in CANDS if c.target.id != "cloud/gpu/fp32")
    assert p.decide(make_ctx("big", CONDS[0], cands=no_gpu), random.Random(0)).target.id == "cloud/cpu/fp32"
    with pytest.raises(NoCandidate):
        p.decide(make_ctx("big", CONDS[0], cands=CANDS[:6]), random.Random(0))


def test_opt_uses_the_oracle() -> None:
    p = make_policy("opt")
    for m in MODELS:
        for c in CONDS:
            assert p.decide(make_ctx(m, c, oracle=True), random.Random(0)).target.id == best_action(m, c)
    with pytest.raises(OracleUnavailable) as ei:
        p.decide(make_ctx("small", CONDS[0]), random.Random(0))
    assert "oracle" in str(ei.value)


def test_opt_respects_accuracy_and_falls_back_when_qos_is_unreachable() -> None:
    cands = tuple(Candidate(c.target, 50.0 if c.target.id == "edge/dsp/int8" else 70.0) for c in CANDS)
    d = make_policy("opt").decide(
        make_ctx("small", CONDS[0], oracle=True, accuracy_min=65, cands=cands), random.Random(0)
    )
    assert d.target.id != "edge/dsp/int8"
    # nothing meets a 1 ms QoS: the min-energy target meeting accuracy
    ctx = make_ctx("small", CONDS[0], oracle=True, accuracy_min=65, cands=cands)
    from dataclasses import replace

    ctx = replace(ctx, qos_s=0.001)
    d = make_policy("opt").decide(ctx, random.Random(0))
    assert (
        d.target.id
        == min(
            (c for c in cands if c.accuracy >= 65), key=lambda c: true_cost("small", CONDS[0], c.target)[0]
        ).target.id
    )


def test_edge_best_learns_the_best_local_target_from_observations() -> None:
    p = make_policy("edge-best")
    _, _ = simulate(p, 120, seed=3, tail=1)
    d = p.decide(make_ctx("small", CONDS[0]), random.Random(0))
    assert d.target.id == "edge/dsp/int8" and not d.explored
    assert all(p.decide(make_ctx(m, c), random.Random(0)).target.runner.value == "edge" for m in MODELS for c in CONDS)


def test_edge_best_from_the_oracle_is_static() -> None:
    p = make_policy("edge-best")
    # big model: the DSP misses QoS (150 ms); GPU FP16 (125 ms) too; the CPU at top step misses;
    # none meets QoS -> the one meeting it most often, then lowest energy.
    picks = {p.decide(make_ctx("big", c, oracle=True), random.Random(0)).target.id for c in CONDS}
    assert len(picks) == 1  # static across conditions
    assert p.decide(make_ctx("small", CONDS[3], oracle=True), random.Random(0)).target.id == "edge/dsp/int8"


def test_connected_edge_learns_the_best_peer_target() -> None:
    p = make_policy("connected-edge")
    simulate(p, 60, seed=4, tail=1)
    d = p.decide(make_ctx("big", CONDS[0]), random.Random(0))
    assert d.target.id == "peer/gpu/fp32"
    with pytest.raises(NoCandidate):
        p.decide(make_ctx("big", CONDS[0], cands=CANDS[:6]), random.Random(0))


def test_static_baselines_mask_accuracy() -> None:
    cands = tuple(Candidate(c.target, 50.0 if c.target.id == "edge/dsp/int8" else 70.0) for c in CANDS)
    p = make_policy("edge-best")
    for _ in range(40):
        ctx = make_ctx("small", CONDS[0], accuracy_min=65, cands=cands)
        d = p.decide(ctx, random.Random(0))
        assert d.target.id != "edge/dsp/int8"
        e, lat = true_cost("small", CONDS[0], d.target)
        p.learn(ctx, d, Outcome(lat / 1e3, e / 1e3, 70.0), -e)


# --------------------------------------------------------------------------- learners beat random


def test_autoscale_on_the_synthetic_mesh() -> None:
    e, hit = simulate(QLearningPolicy(QTable(), QParams(init_seed=1)), 600, seed=1)
    assert e < 0.5 * random_energy()
    assert hit > 0.7


@pytest.mark.parametrize("kind", ["lr", "svr"])
def test_regressors_beat_random(kind: str) -> None:
    p = RegressionPolicy(kind, PredictorParams(refit_every=50, warmup=40, seed=0))
    e, hit = simulate(p, 400, seed=5)
    assert p.fits > 0
    assert e < 0.5 * random_energy(), (kind, e, random_energy())
    assert hit > 0.3  # random: 0.1


@pytest.mark.parametrize("kind", ["svm", "knn"])
def test_classifiers_beat_random(kind: str) -> None:
    p = ClassifierPolicy(kind, PredictorParams(refit_every=25, warmup=80, seed=0))
    e, hit = simulate(p, 400, seed=6)
    assert p.fits > 0
    assert e < 0.5 * random_energy(), (kind, e, random_energy())
    assert hit > 0.3


def test_bo_beats_random() -> None:
    p = BayesOptPolicy(PredictorParams(epsilon=0.0, buffer=150, refit_every=25, warmup=30, seed=0))
    e, _hit = simulate(p, 250, seed=7, tail=100)
    assert p.fits > 0
    assert e < 0.5 * random_energy(), (e, random_energy())


def test_linucb_beats_random() -> None:
    p = LinUCBPolicy()
    e, hit = simulate(p, 400, seed=8)
    assert e < 0.5 * random_energy(), (e, random_energy())
    assert hit > 0.5


def test_predictors_explore_until_trained() -> None:
    p = RegressionPolicy("lr", PredictorParams(warmup=20))
    ds = [p.decide(make_ctx("small", CONDS[0]), random.Random(i)) for i in range(30)]
    assert all(d.explored for d in ds)
    assert len({d.target.id for d in ds}) > 3


@pytest.mark.parametrize("name", ["lr", "svr", "svm", "knn", "bo", "linucb"])
def test_learners_mask_accuracy(name: str) -> None:
    cands = tuple(Candidate(c.target, 50.0 if c.target.processor.value == "dsp" else 70.0) for c in CANDS)
    p = make_policy(name, seed=0)
    rng = random.Random(0)
    for t in range(80):
        m, c = ("small", "big")[t % 2], CONDS[t % 4]
        ctx = make_ctx(m, c, accuracy_min=65, cands=cands)
        d = p.decide(ctx, rng)
        assert d.target.processor.value != "dsp"
        e, lat = true_cost(m, c, d.target)
        p.learn(ctx, d, Outcome(lat / 1e3, e / 1e3, 70.0), -e)


async def test_refit_runs_in_background_inside_an_event_loop() -> None:
    p = RegressionPolicy("svr", PredictorParams(warmup=20, refit_every=20))
    rng = random.Random(0)
    for _ in range(25):
        ctx = make_ctx("small", CONDS[0])
        d = p.decide(ctx, rng)
        e, lat = true_cost("small", CONDS[0], d.target)
        p.learn(ctx, d, Outcome(lat / 1e3, e / 1e3, 70.0), -e)
    assert p._pending is not None  # the fit went to the worker thread
    await asyncio.to_thread(p.wait_fitted, 30.0)
    assert p.model is not None


def test_context_vector_dimension() -> None:
    from services.core.policies.featurise import CONTEXT_DIM

    assert len(context_vector(MODELS["big"], CONDS[0])) == CONTEXT_DIM


# --------------------------------------------------------------------------- PolicySet


def test_policy_set_builds_every_policy_and_keeps_it() -> None:
    ps = PolicySet(Settings(seed=3))
    for name in POLICY_NAMES:
        p = ps.get(name)
        assert p.name == name
        assert ps.get(name) is p
    assert "autoscale" in ps and list(ps) == list(POLICY_NAMES)


def test_policy_set_uses_the_settings_and_store() -> None:
    store = QTable()
    ps = PolicySet(Settings(learning_rate=0.5, discount=0.2, epsilon=0.0, accuracy_masking=False, seed=9), store=store)
    p = ps.get("autoscale")
    assert isinstance(p, QLearningPolicy) and p.source is store
    # The settings' defaults are the improved learner (see services.common.settings)...
    assert p.params == QParams.improved(
        learning_rate=0.5, discount=0.2, epsilon=0.0, accuracy_masking=False, init_seed=9
    )
    # ...and the paper's Algorithm 1 is one set of options away.
    paper = PolicySet(
        Settings(
            learning_rate=0.5,
            discount=0.2,
            epsilon=0.0,
            accuracy_masking=False,
            seed=9,
            q_init="random",
            lr_schedule="constant",
            explore_bonus=0.0,
            explore_untried=False,
        )
    )
    p = paper.get("autoscale")
    assert isinstance(p, QLearningPolicy)
    assert p.params == QParams(
        learning_rate=0.5,
        discount=0.2,
        epsilon=0.0,
        accuracy_masking=False,
        init_seed=9,
        lr_floor=0.02,  # the settings' floor, unused by the constant schedule
    )


def test_unknown_policy_lists_valid_names() -> None:
    with pytest.raises(UnknownPolicy) as ei:
        PolicySet().get("greedy")
    assert ei.value.name == "greedy"
    assert ei.value.valid == POLICY_NAMES
    for n in POLICY_NAMES:
        assert n in str(ei.value)
    with pytest.raises(UnknownPolicy):
        make_policy("greedy")
    limited = PolicySet(names=("autoscale", "opt"))
    with pytest.raises(UnknownPolicy) as ei:
        limited.get("cloud")
    assert ei.value.valid == ("autoscale", "opt")


def test_every_policy_decides_on_the_synthetic_mesh() -> None:
    from services.common.config_files import load_profile
    from services.core.costmodel import Mesh

    # NeuroSurgeon and MOSAIC plan with the device profiles: every synthetic target exists on these.
    mesh = Mesh(load_profile("mi8pro"), load_profile("galaxy_tab_s6"), load_profile("cloud_p100"))
    ps = PolicySet(seed=0, mesh=mesh)
    for name in POLICY_NAMES:
        p = ps.get(name)
        ctx = make_ctx("big", CONDS[1], oracle=True)
        d = p.decide(ctx, random.Random(0))
        assert isinstance(d, Decision)
        assert d.target in {c.target for c in CANDS}
        e, lat = true_cost("big", CONDS[1], d.target)
        p.learn(ctx, d, Outcome(lat / 1e3, e / 1e3, 70.0), -e)


def test_baselines_remember_their_answers_without_changing_them() -> None:
    """FixedPolicy and a frozen StaticBestPolicy memoise per candidate tuple: same answers as fresh ones."""
    from services.core.policies.baselines import cloud, edge_best, edge_cpu_fp32

    rng = random.Random(0)
    for make in (edge_cpu_fp32, cloud, edge_best):
        warm = make()
        for _ in range(3):
            for model in MODELS:
                for cond in CONDS:
                    c = make_ctx(model, cond, oracle=True)
                    for _ in range(40):  # past the oracle sampling: the static pick is frozen
                        d = warm.decide(c, rng)
                    fresh = make()
                    for _ in range(40):
                        d2 = fresh.decide(c, rng)
                    assert d.target == d2.target


def test_capabilities_are_declared_types() -> None:
    """Callers check BatchPolicy / ExploringPolicy instead of probing attributes."""
    batch = {n for n in POLICY_NAMES if isinstance(make_policy(n, seed=0, background_fit=False), BatchPolicy)}
    exploring = {n for n in POLICY_NAMES if isinstance(make_policy(n, seed=0, background_fit=False), ExploringPolicy)}
    assert batch == {"lr", "svr", "svm", "knn", "bo"}
    assert exploring == batch | {"autoscale"}


def test_offline_predictors_fit_when_told() -> None:
    """RefittablePolicy.fit_now fits on the buffered samples at once, whatever the refit schedule."""
    refittable = {n for n in POLICY_NAMES if isinstance(make_policy(n, seed=0, background_fit=False), RefittablePolicy)}
    assert refittable == {"lr", "svr", "svm", "knn", "bo"}
    p = RegressionPolicy("lr", PredictorParams(refit_every=10**12, seed=0, background_fit=False))
    simulate(p, 25, seed=3, tail=1)
    assert p.fits == 0  # below the warm-up and never due on its own schedule
    p.fit_now()
    assert p.fits == 1 and p.model is not None


@pytest.mark.parametrize("name", ["lr", "svr", "svm", "knn", "bo"])
def test_decide_many_equals_one_decision_at_a_time(name: str) -> None:
    """The evaluation scores offline-trained predictors in one batch: same answers as decide()."""
    from dataclasses import replace

    p = make_policy(name, seed=0, background_fit=False)
    assert isinstance(p, RegressionPolicy | ClassifierPolicy | BayesOptPolicy)
    simulate(p, 200 if name == "bo" else 300, seed=9, tail=1)
    assert p.model is not None
    p.params = replace(p.params, epsilon=0.0)
    acc_cands = tuple(Candidate(c.target, 50.0 if c.target.processor.value == "dsp" else 70.0) for c in CANDS)
    ctxs = [make_ctx(m, c) for m in MODELS for c in CONDS] + [
        make_ctx(m, c, accuracy_min=60.0, cands=acc_cands) for m in MODELS for c in CONDS
    ]
    many = p.decide_many(ctxs, random.Random(0))
    one = [p.decide(c, random.Random(0)) for c in ctxs]
    assert [d.target for d in many] == [d.target for d in one]
