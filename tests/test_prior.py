"""The prior learner (services.core.policies.prior): what it holds, what it learns, how it decides."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from services.common.config_files import load_profile
from services.core import costmodel
from services.core.costmodel import Mesh
from services.core.policies import PolicySet, QLearningPolicy, make_policy
from services.core.policies.base import Candidate, Decision, DecisionContext, Outcome
from services.core.policies.prior import PhysicsPrior, PriorParams, PriorPolicy, expected_rewards, family_of
from services.core.policies.qlearning import (
    VISITS_MAX,
    CorrectionObs,
    Corrections,
    FamilyStats,
    QTable,
    correction_step,
    model_key,
)
from services.core.reward import RewardWeights, reward_expected
from services.core.schemas import ModelFeatures, RuntimeConditions, Target
from services.core.state import state_index

FEAT = ModelFeatures(conv=14, fc=1, rc=0, macs=569_000_000, input_bytes=602_112, output_bytes=4_000)
COND = RuntimeConditions(co_cpu=0.1, co_mem=0.3, rssi_wifi_dbm=-60, rssi_p2p_dbm=-55)


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    return Mesh(edge=load_profile("mi8pro"), peer=load_profile("galaxy_tab_s6"), cloud=load_profile("cloud_p100"))


def cands(mesh: Mesh) -> tuple[Candidate, ...]:
    return tuple(Candidate(t, 70.0) for t in mesh.targets(FEAT))


def ctx(c: tuple[Candidate, ...], cond: RuntimeConditions = COND, oracle: object = None) -> DecisionContext:
    return DecisionContext(
        model="mobilenet_v1",
        features=FEAT,
        conditions=cond,
        state=state_index(FEAT, cond),
        candidates=c,
        qos_s=0.05,
        accuracy_min=None,
        oracle=oracle,  # type: ignore[arg-type]
    )


def _forbidden(_: Target) -> Outcome:
    raise AssertionError("the prior learner must never read the true costs")


# --------------------------------------------------------------------------- what it holds


def test_the_policy_holds_the_profiles_and_its_table_only(mesh: Mesh) -> None:
    """Nothing but the profiles the decider was configured with, its parameters and its table: no
    simulator, no oracle, no true costs. A decision never calls the context's oracle."""
    table = QTable()
    pol = PriorPolicy(table, mesh, PriorParams(epsilon=0.0))
    assert set(vars(pol)) == {"source", "params", "name", "physics", "_memo", "_cond", "_cell", "_last"}
    assert pol.source is table and isinstance(pol.params, PriorParams)
    assert isinstance(pol.physics, PhysicsPrior)
    assert set(vars(pol.physics)) == {"mesh", "split_links", "_cases"}
    assert pol.physics.mesh is mesh
    c = ctx(cands(mesh), oracle=_forbidden)
    d = pol.decide(c, random.Random(0))
    pol.learn(c, d, Outcome(latency_s=0.01, energy_j=0.02, accuracy=70.0), -20.0)
    pol.decide(c, random.Random(0))
    # what it learnt is in the table: a residual entry and the corrections of the family it observed
    assert set(table.row(c.state)) == {d.target.id}
    fam = family_of(d.target)
    assert set(table.corrections.stats) == {fam, model_key("mobilenet_v1", fam)}


def test_make_policy_builds_the_prior_learner_when_given_the_profiles(mesh: Mesh) -> None:
    from services.common.settings import Settings

    s = Settings(_env_file=None, seed=1)
    assert s.learner == "prior"
    assert isinstance(make_policy("autoscale", settings_or_params=s, mesh=mesh), PriorPolicy)
    assert isinstance(PolicySet(s, mesh=mesh).get("autoscale"), PriorPolicy)
    # without the profiles, or when the table learner is asked for: Algorithm 1's table
    assert isinstance(make_policy("autoscale", settings_or_params=s), QLearningPolicy)
    table = Settings(_env_file=None, learner="table")
    assert isinstance(make_policy("autoscale", settings_or_params=table, mesh=mesh), QLearningPolicy)
    p = make_policy("autoscale", settings_or_params=PriorParams(reward_mode="paper"), mesh=mesh)
    assert isinstance(p, PriorPolicy) and p.params.reward_mode == "paper"
    assert p.params.weights == RewardWeights()


# --------------------------------------------------------------------------- corrections


def test_corrections_converge_to_a_known_multiplier(mesh: Mesh) -> None:
    """Outcomes 1.3x slower and 0.8x the energy of the profile, with 7 % noise: the family's
    correction converges to those factors, and the network's own to the same."""
    pol = PriorPolicy(QTable(), mesh, PriorParams(epsilon=0.0))
    c = cands(mesh)
    rng = np.random.default_rng(0)
    target = next(x.target for x in c if x.target.id == "edge/gpu/fp16@3")
    cond_rng = random.Random(1)
    for _ in range(400):
        cond = RuntimeConditions(
            co_cpu=cond_rng.uniform(0, 0.9), co_mem=cond_rng.uniform(0, 0.9), rssi_wifi_dbm=-60, rssi_p2p_dbm=-55
        )
        cx = ctx(c, cond)
        true = costmodel.estimate(mesh, FEAT, target, cond)
        f = float(np.exp(rng.normal(0, 0.07)))
        pol.learn(cx, Decision(target), Outcome(true.latency_s * 1.3 * f, true.energy_j * 0.8 * f, 70.0), 0.0)
    stats = pol.source.corrections.stats
    for key in ("edge/gpu/fp16", model_key("mobilenet_v1", "edge/gpu/fp16")):
        s = stats[key]
        assert math.exp(s.m_lat) == pytest.approx(1.3, rel=0.03)
        assert math.exp(s.m_energy) == pytest.approx(0.8, rel=0.03)
        assert math.sqrt(s.v_lat) == pytest.approx(0.07, rel=0.25)


def test_correction_step_is_a_running_mean_then_exponential() -> None:
    s = FamilyStats()
    xs = [0.1, 0.3, -0.2, 0.4]
    for x in xs:
        s = correction_step(s, CorrectionObs("f", x, 2 * x, lr_floor=0.01))
    assert s.n == 4 and s.m_lat == pytest.approx(np.mean(xs)) and s.v_lat == pytest.approx(np.var(xs))
    assert s.m_energy == pytest.approx(2 * np.mean(xs))
    for _ in range(2000):  # then it saturates and tracks: an old mean is forgotten
        s = correction_step(s, CorrectionObs("f", 1.0, 1.0, lr_floor=0.05))
    assert s.n == 1000 and s.m_lat == pytest.approx(1.0)


def test_published_corrections_move_only_past_the_threshold() -> None:
    c = Corrections(refresh=0.01)
    for _ in range(20):
        c.learn(CorrectionObs("f", 0.2, 0.1))
    e = c.epoch
    c.learn(CorrectionObs("f", 0.2 + 0.02, 0.1))  # moves the mean by 0.001, the sd by 0.004: not published
    assert c.epoch == e and c.published["f"].m_lat == 0.2 < c.stats["f"].m_lat
    for _ in range(10):
        c.learn(CorrectionObs("f", 0.4, 0.1))
    assert c.epoch > e and c.published["f"].m_lat > 0.2
    assert c.set("f", FamilyStats(1.0, 0.0, 0.0, 0.0, 0.0), version=5) and not c.set("f", FamilyStats(), version=4)


# --------------------------------------------------------------------------- decisions


def _corrected_physics_values(pol: PriorPolicy, mesh: Mesh, c: DecisionContext) -> list[float]:
    """The expected reward of every candidate, computed independently with the scalar cost model and
    the scalar reward_expected from the published corrections (family and network)."""
    p = pol.params
    stats = pol.source.corrections.published
    out = []
    for cand in c.candidates:
        cost = costmodel.estimate(mesh, FEAT, cand.target, c.conditions)
        fam = family_of(cand.target)
        f, own = stats.get(fam, FamilyStats()), stats.get(model_key(c.model, fam))
        m_lat, m_en = f.m_lat, f.m_energy
        var = (f.n * f.v_lat + p.prior_weight * p.sigma0**2) / (f.n + p.prior_weight)
        if own is not None:
            w = own.n / (own.n + p.model_weight)
            m_lat, m_en = m_lat + w * (own.m_lat - m_lat), m_en + w * (own.m_energy - m_en)
            var += w * (own.v_lat - var) if own.n > 1 else 0.0
        out.append(
            reward_expected(
                energy_mj=cost.energy_j * math.exp(m_en) * 1e3,
                latency_ms=cost.latency_s * math.exp(m_lat) * 1e3,
                accuracy=cand.accuracy,
                qos_ms=c.qos_s * 1e3,
                accuracy_min=c.accuracy_min,
                sigma=max(p.sigma_min, math.sqrt(var)),
                weights=p.weights,
                mode=p.reward_mode,
            )
        )
    return out


def test_cold_decisions_are_the_corrected_physics_argmin(mesh: Mesh) -> None:
    """A state never visited decides on the profile's physics corrected by what other states and
    networks taught: after learning, elsewhere, that the family the profile prefers is twice as slow
    and dear as its profile says."""
    c = cands(mesh)
    cold = ctx(c, oracle=_forbidden)
    plain = PriorPolicy(QTable(), mesh, PriorParams(epsilon=0.0)).decide(cold, random.Random(0)).target
    fam = family_of(plain)
    table = QTable()
    pol = PriorPolicy(table, mesh, PriorParams(epsilon=0.0))
    members = [x.target for x in c if family_of(x.target) == fam]
    other = RuntimeConditions(co_cpu=0.9, co_mem=0.0, rssi_wifi_dbm=-60, rssi_p2p_dbm=-55)
    for i in range(60):  # observed in another state only
        t = members[i % len(members)]
        true = costmodel.estimate(mesh, FEAT, t, other)
        pol.learn(ctx(c, other), Decision(t), Outcome(true.latency_s * 2.0, true.energy_j * 2.0, 70.0), 0.0)
    assert not table.row(cold.state)  # never visited
    want = _corrected_physics_values(pol, mesh, cold)
    got = pol.prior_row(cold)
    assert list(got.values()) == pytest.approx(want, rel=1e-9)
    best = c[int(np.argmax(want))].target
    assert pol.decide(cold, random.Random(0)).target == best
    assert family_of(best) != fam  # the correction moved the decision off the (now dearer) family


def test_a_visited_state_converges_to_what_it_measured(mesh: Mesh) -> None:
    """Outcomes 1.6x slower than the corrected prediction in this state only: the state's residual
    learns it, and the decision follows what was measured rather than the prior."""
    pol = PriorPolicy(QTable(), mesh, PriorParams(epsilon=0.0))
    c = cands(mesh)
    cx = ctx(c)
    first = pol.decide(cx, random.Random(0)).target
    for _ in range(3 * VISITS_MAX):
        d = pol.decide(cx, random.Random(0))
        true = costmodel.estimate(mesh, FEAT, d.target, COND)
        slow = 1.6 if d.target.processor == first.processor and d.target.runner == first.runner else 1.0
        pol.learn(cx, d, Outcome(true.latency_s * slow, true.energy_j * slow, 70.0), 0.0)
    assert pol.decide(cx, random.Random(0)).target.processor != first.processor or (
        pol.decide(cx, random.Random(0)).target.runner != first.runner
    )
    # what the table holds for the first choice is the measured log ratio (the family shares it too)
    q = pol.source.row(cx.state)[first.id]
    assert q > 0.1


def test_vector_expected_rewards_match_the_scalar_reward_expected() -> None:
    rng = np.random.default_rng(3)
    lat, en = rng.uniform(0.005, 0.2, 50), rng.uniform(0.002, 2.0, 50)
    acc, sd = rng.uniform(40, 80, 50), rng.uniform(0.01, 0.4, 50)
    w = RewardWeights(qos_penalty=1.5)
    for mode in ("qos", "paper"):
        for amin in (None, 60.0):
            v = expected_rewards(lat, en, acc, 0.05, amin, sd, mode, w)
            for i in range(50):
                want = reward_expected(
                    energy_mj=en[i] * 1e3,
                    latency_ms=lat[i] * 1e3,
                    accuracy=acc[i],
                    qos_ms=50.0,
                    accuracy_min=amin,
                    sigma=sd[i],
                    weights=w,
                    mode=mode,
                )
                assert v[i] == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_exploration_and_masking(mesh: Mesh) -> None:
    c = tuple(Candidate(x.target, 60.0 if x.target.precision == "int8" else 75.0) for x in cands(mesh))
    pol = PriorPolicy(QTable(), mesh, PriorParams(epsilon=1.0))
    cx = DecisionContext(
        model="mobilenet_v1",
        features=FEAT,
        conditions=COND,
        state=state_index(FEAT, COND),
        candidates=c,
        qos_s=0.05,
        accuracy_min=70.0,
    )
    rng = random.Random(0)
    picks = [pol.decide(cx, rng) for _ in range(200)]
    assert all(d.explored and d.target.precision != "int8" for d in picks)
    # exploring draws a family, then plays its best member: every eligible family, one member each
    eligible = {family_of(x.target) for x in c if x.target.precision != "int8"}
    assert {family_of(d.target) for d in picks} == eligible
    assert len({d.target.id for d in picks}) == len(eligible)
    uniform = PriorPolicy(QTable(), mesh, PriorParams(epsilon=1.0, explore_families=False))
    assert len({uniform.decide(cx, rng).target.id for _ in range(200)}) > 20  # the paper's: any action
    pol.params = PriorParams(epsilon=0.0)
    d = pol.decide(cx, rng)
    assert not d.explored and d.target.precision != "int8"


def test_a_candidate_the_profile_cannot_cost_ranks_last(mesh: Mesh) -> None:
    odd = Candidate(Target.parse("peer/gpu/fp16"), 70.0)  # the tablet's profile has no FP16 GPU target
    c = (*cands(mesh), odd)
    pol = PriorPolicy(QTable(), mesh, PriorParams(epsilon=0.0))
    row = pol.prior_row(ctx(c))
    assert row[odd.target.id] < min(v for a, v in row.items() if a != odd.target.id)


def test_a_copy_decides_like_the_original_and_learns_on_its_own(mesh: Mesh) -> None:
    """The evaluation copies a trained learner per scenario: the copy shares the profiles'
    predictions, holds its own table and corrections, and decides exactly as the original."""
    import copy

    pol = PriorPolicy(QTable(), mesh, PriorParams(epsilon=0.0))
    c = cands(mesh)
    cx = ctx(c)
    for _ in range(20):
        d = pol.decide(cx, random.Random(0))
        true = costmodel.estimate(mesh, FEAT, d.target, COND)
        pol.learn(cx, d, Outcome(true.latency_s * 1.2, true.energy_j, 70.0), 0.0)
    twin = copy.deepcopy(pol)
    assert twin.physics is pol.physics and twin.source is not pol.source
    assert twin.decide(cx, random.Random(0)) == pol.decide(cx, random.Random(0))
    assert twin.prior_row(cx) == pol.prior_row(cx)
    d = twin.decide(cx, random.Random(0))
    twin.learn(cx, d, Outcome(1.0, 1.0, 70.0), 0.0)
    assert twin.source.corrections.stats != pol.source.corrections.stats


def test_a_table_lists_the_changes_of_a_row_since_a_version() -> None:
    """What lets the learner patch its memo instead of rebuilding it: the actions changed since."""
    from services.core.policies.qlearning import QUpdate

    t = QTable()
    v0 = t.row_version(3)
    for a in ("edge/dsp/int8", "cloud/gpu/fp32", "edge/dsp/int8"):
        t.learn(QUpdate(3, a, -1.0, 3, (), 0.0, (), 1.0, 0.0))
    assert t.changes_since(3, v0) == ["edge/dsp/int8", "cloud/gpu/fp32"]
    assert t.changes_since(3, t.row_version(3)) == []
    v1 = t.row_version(3)
    t.set_row(3, {"edge/dsp/int8": -2.0}, {"edge/dsp/int8": 1})  # the whole row replaced
    assert t.changes_since(3, v1) is None
    v2 = t.row_version(3)
    for _ in range(40):  # more than it keeps
        t.learn(QUpdate(3, "edge/dsp/int8", -1.0, 3, (), 0.0, (), 1.0, 0.0))
    assert t.changes_since(3, v2) is None
    t.forget_all()
    assert t.changes_since(3, v2) is None
