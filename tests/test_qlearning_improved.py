"""The Q-learner beyond the paper: nearest-state initial values (the entry index), the
visit-count learning rate, the exploration bonus and untried sweep, and the policy's fast paths
(the pruned exploring argmax, the row memo)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.policies.base import Decision, Outcome
from services.core.policies.qlearning import (
    QLearningPolicy,
    QParams,
    QTable,
    QUpdate,
    apply_update,
    f32,
    initial_q,
    q_learning_target,
    ucb_argmax,
    ucb_score,
    validate_export,
)
from services.core.policies.qlearning.entries import _BINS, _DIM_WEIGHTS, EntryIndex
from services.core.reward import reward
from services.core.schemas import Target
from services.core.state import StateBins
from tests.qlearning_cases import ARMS, BEST, FAST, cand, ctx

# --------------------------------------------------------------------------- options beyond the paper


def state_of(**bins: int) -> int:
    base = {"conv": 0, "fc": 0, "rc": 0, "mac": 0, "co_cpu": 0, "co_mem": 0, "rssi_w": 0, "rssi_p": 0}
    base.update(bins)
    return StateBins(**base).index


def test_new_options_are_validated_and_default_to_the_paper() -> None:
    p = QParams()
    assert (p.q_init, p.lr_schedule, p.explore_bonus, p.explore_untried) == ("random", "constant", 0.0, False)
    assert QParams.paper() == QParams()
    imp = QParams.improved(init_seed=4)
    assert (imp.q_init, imp.lr_schedule, imp.explore_bonus, imp.explore_untried, imp.init_seed) == (
        "nearest",
        "visits",
        0.5,
        True,
        4,
    )
    assert (imp.discount, imp.lr_floor) == (0.0, 0.02)  # the tuning split's choice, as the decider's defaults
    for bad in (
        {"q_init": "zero"},
        {"lr_schedule": "adam"},
        {"lr_floor": 0.0},
        {"explore_bonus": -1.0},
        {"init_optimism": 1.0},
        {"near_radius": -1},
    ):
        with pytest.raises(ValueError, match="must be"):
            QParams(**bad)


@FAST
@given(
    st.lists(st.tuples(st.integers(0, 3071), st.integers(0, 5)), min_size=1, max_size=60),
    st.lists(st.integers(0, 3071), min_size=1, max_size=8),
)
def test_entry_index_nearest_matches_brute_force(adds: list[tuple[int, int]], queries: list[int]) -> None:
    idx = EntryIndex()
    held: set[tuple[int, int]] = set()
    acts = [f"edge/cpu/fp32@{i}" for i in range(7)]  # action 6 is never held
    for k, (s, a) in enumerate(adds):
        idx.add(s, acts[a])
        held.add((s, a))
        q = queries[k % len(queries)]
        got, dist = idx.nearest_with_distance(q, acts)  # interleaved: the cache is kept current
        for a_i, (g, d) in enumerate(zip(got, dist, strict=False)):
            cands = [(int((abs(_BINS[t] - _BINS[q]) * _DIM_WEIGHTS).sum()), t) for t, b in held if b == a_i and t != q]
            want = min(cands) if cands else (-1, -1)
            assert (d, g) == want
    idx.discard_state(adds[0][0])
    held = {(s, a) for s, a in held if s != adds[0][0]}
    for q in queries:
        for a_i, g in enumerate(idx.nearest(q, acts)):
            cands = [(int((abs(_BINS[t] - _BINS[q]) * _DIM_WEIGHTS).sum()), t) for t, b in held if b == a_i and t != q]
            assert g == (min(cands)[1] if cands else -1)


def test_distance_weights_prefer_same_signal_then_same_network() -> None:
    idx = EntryIndex()
    s = state_of(conv=1, mac=1)
    same_net_other_corunner = state_of(conv=1, mac=1, co_cpu=1)
    other_net_same_conditions = state_of(conv=2, mac=1)
    same_net_weak_wifi = state_of(conv=1, mac=1, rssi_w=1)
    for t in (same_net_weak_wifi, other_net_same_conditions, same_net_other_corunner):
        idx.add(t, "cloud/gpu/fp32")
    assert idx.nearest(s, ["cloud/gpu/fp32"]) == [same_net_other_corunner]
    idx.discard_state(same_net_other_corunner)
    assert idx.nearest(s, ["cloud/gpu/fp32"]) == [other_net_same_conditions]
    idx.discard_state(other_net_same_conditions)
    assert idx.nearest(s, ["cloud/gpu/fp32"]) == [same_net_weak_wifi]


def test_nearest_init_borrows_rescaled_values_from_the_neighbour() -> None:
    a, b, c = "edge/gpu/fp16@0", "edge/dsp/int8", "cloud/gpu/fp32"
    table = QTable()
    pol = QLearningPolicy(table, QParams(epsilon=0.0, q_init="nearest"))
    near = state_of(conv=1)  # a neighbour (another network) that has learnt all three
    here = state_of(conv=2)
    cands = (cand(a), cand(b), cand(c))
    for act, r in ((a, -10.0), (b, -20.0), (c, -40.0)):
        pol.learn(ctx(cands, state=near), Decision(Target.parse(act)), Outcome(0.01, 0.01, 70), r)
    nv = pol.row_view(near, [a, b, c])
    # a state never visited starts from the neighbour's values: same ranking, no sweep
    assert pol.row_view(here, [a, b, c]) == nv
    assert pol.decide(ctx(cands, state=here), random.Random(0)).target.id == a
    # here costs 3x more: after one measurement the borrowed values are rescaled to match
    pol.learn(ctx(cands, state=here), Decision(Target.parse(a)), Outcome(0.01, 0.01, 70), -30.0)
    view = pol.row_view(here, [a, b, c])
    ratio = view[a] / nv[a]
    assert view[b] == pytest.approx(nv[b] * ratio) and view[c] == pytest.approx(nv[c] * ratio)
    assert pol.decide(ctx(cands, state=here), random.Random(0)).target.id == a
    # the random scheme ignores neighbours
    paper = QLearningPolicy(table, QParams(epsilon=0.0))
    assert paper.row_view(state_of(conv=3), [b]) == {b: initial_q(0, state_of(conv=3), b)}


def test_nearest_init_ranks_actions_no_close_state_holds_last() -> None:
    a, far_only = "edge/gpu/fp16@0", "edge/cpu/fp32@0"
    table = QTable()
    pol = QLearningPolicy(table, QParams(epsilon=0.0, q_init="nearest", near_radius=4))
    here = state_of(conv=0, mac=0)
    cands = (cand(a), cand(far_only))
    # a far state (3 NN bins + a weak signal away) knows far_only as very cheap
    far = state_of(conv=3, mac=2, rssi_w=1)
    pol.learn(ctx(cands, state=far), Decision(Target.parse(far_only)), Outcome(0.01, 0.01, 70), -1.0)
    # with nothing known nearby, the far value is all there is
    assert pol.row_view(here, [far_only])[far_only] == table.row(far)[far_only]
    pol.learn(ctx(cands, state=here), Decision(Target.parse(a)), Outcome(0.01, 0.01, 70), -50.0)
    view = pol.row_view(here, [a, far_only])
    assert view[far_only] < view[a]  # not trusted: below the worst known value
    assert pol.decide(ctx(cands, state=here), random.Random(0)).target.id == a


def test_visits_schedule_averages_the_rewards() -> None:
    table = QTable()
    pol = QLearningPolicy(
        table, QParams(epsilon=0.0, q_init="random", lr_schedule="visits", lr_floor=0.05, discount=0.0)
    )
    c = ctx((cand("edge/cpu/fp32"),))
    rs = [-10.0, -20.0, -30.0, -40.0]
    for r in rs:
        pol.learn(c, Decision(Target.parse("edge/cpu/fp32")), Outcome(0.01, 0.01, 70), r)
    assert table.row(7)["edge/cpu/fp32"] == pytest.approx(sum(rs) / len(rs))  # the init is forgotten at once
    assert pol.learning_rate(7, "edge/cpu/fp32") == pytest.approx(1 / 5)
    table.n[7]["edge/cpu/fp32"] = 1000
    assert pol.learning_rate(7, "edge/cpu/fp32") == 0.05  # the floor
    assert QLearningPolicy(table, QParams()).learning_rate(7, "edge/cpu/fp32") == 0.9  # constant: the paper's


def test_exploration_bonus_and_untried_sweep_apply_only_while_exploring() -> None:
    acts = ("edge/gpu/fp16@0", "edge/dsp/int8", "cloud/gpu/fp32")
    table = QTable()
    for i, a in enumerate(acts):  # seen in a neighbouring state, so the values are informed
        table.learn(
            QUpdate(
                state=state_of(conv=1),
                action=a,
                reward=-10.0 * (i + 1),
                next_state=state_of(conv=1),
                next_actions=(),
                init=0.0,
                next_inits=(),
                learning_rate=1.0,
                discount=0.0,
            )
        )
    here = state_of(conv=2)
    cands = tuple(cand(a) for a in acts)
    params = QParams(epsilon=1e-9, q_init="nearest", lr_schedule="visits", explore_bonus=0.2, explore_untried=True)
    pol = QLearningPolicy(table, params)
    rng = random.Random(0)
    tried = []
    for _ in range(3):  # every action once, most promising first
        d = pol.decide(ctx(cands, state=here), rng)
        tried.append(d.target.id)
        pol.learn(ctx(cands, state=here), d, Outcome(0.01, 0.01, 70), -10.0)
    assert tried == list(acts)
    # now all measured equal: the bonus prefers the least visited; exploitation ignores it
    table.n[here][acts[0]] = 50
    assert pol.decide(ctx(cands, state=here), rng).target.id != acts[0]
    from dataclasses import replace

    greedy = QLearningPolicy(table, replace(params, epsilon=0.0))
    assert greedy.decide(ctx(cands, state=here), rng).target.id == acts[0]  # ties: the first candidate


def test_nearest_updates_ship_the_initial_values_they_used() -> None:
    a, b = "edge/gpu/fp16@0", "cloud/gpu/fp32"
    table = QTable()
    pol = QLearningPolicy(table, QParams(epsilon=0.0, q_init="nearest"))
    near, here = state_of(conv=1), state_of(conv=2)
    cands = (cand(a), cand(b))
    pol.learn(ctx(cands, state=near), Decision(Target.parse(a)), Outcome(0.01, 0.01, 70), -10.0)
    pol.learn(ctx(cands, state=near), Decision(Target.parse(b)), Outcome(0.01, 0.01, 70), -30.0)
    u = pol.make_update(ctx(cands, state=here), Decision(Target.parse(b)), -25.0)
    view = pol.row_view(here, [a, b])
    assert u.init == view[b] and u.next_inits == (view[a], view[b])
    assert apply_update({}, {}, u) == f32(q_learning_target(view[b], -25.0, max(view.values()), 0.9, 0.1))


def test_qtable_keeps_its_entry_index_in_step() -> None:
    t = QTable()
    t.learn(
        QUpdate(
            state=5,
            action="edge/dsp/int8",
            reward=-1.0,
            next_state=5,
            next_actions=(),
            init=0.0,
            next_inits=(),
            learning_rate=1.0,
            discount=0.0,
        )
    )
    assert t.entries.holds(5, "edge/dsp/int8")
    data = t.export("mi8pro")
    t2 = QTable()
    t2.load(validate_export(data))
    assert t2.entries.holds(5, "edge/dsp/int8")
    t2.reset()
    assert not t2.entries.holds(5, "edge/dsp/int8")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_improved_learner_converges_to_best_arm_with_the_qos_reward(seed: int) -> None:
    table = QTable()
    pol = QLearningPolicy(table, QParams.improved(init_seed=seed))
    rng = random.Random(seed)
    noise = random.Random(seed + 1)
    cands = tuple(cand(a) for a in ARMS[0])
    for t in range(200):
        s = t % 2
        c = ctx(cands, state=s)
        d = pol.decide(c, rng)
        e, lat = ARMS[s][d.target.id]
        e *= noise.uniform(0.9, 1.1)
        r = reward(energy_mj=e, latency_ms=lat, accuracy=70.0, qos_ms=50.0, accuracy_min=None, mode="qos")
        pol.learn(c, d, Outcome(lat / 1e3, e / 1e3, 70.0), r)
    greedy = QLearningPolicy(table, QParams.improved(epsilon=0.0, init_seed=seed))
    for s, best in BEST.items():
        assert greedy.decide(ctx(cands, state=s), random.Random(0)).target.id == best


# --------------------------------------------------------------------------- exploring argmax


@settings(max_examples=300, deadline=None)
@given(
    vals=st.lists(
        st.one_of(st.floats(-5e3, 5e3, allow_nan=False), st.sampled_from([-10.0, -1.0, 0.0, 2.0])),
        min_size=1,
        max_size=70,
    ),
    data=st.data(),
    k=st.sampled_from([0.0, 0.1, 0.2, 0.5, 0.9, 1.3, 2.0]),
    untried_first=st.booleans(),
)
def test_ucb_argmax_is_the_first_best_rank(
    vals: list[float], data: st.DataObject, k: float, untried_first: bool
) -> None:
    """The pruned argmax picks exactly what ranking every entry picks, ties to the first."""
    n = len(vals)
    ns = data.draw(st.lists(st.sampled_from([0, 1, 2, 5, 40, 5000]), min_size=n, max_size=n))
    elig = data.draw(
        st.one_of(st.just(list(range(n))), st.lists(st.integers(0, n - 1), min_size=1, unique=True).map(sorted))
    )
    ranks = [(untried_first and c == 0, ucb_score(v, c, k)) for v, c in zip(vals, ns, strict=False)]
    expect = max(elig, key=ranks.__getitem__)
    assert ucb_argmax(vals, ns, elig, k, untried_first) == expect
    order = sorted(range(n), key=vals.__getitem__, reverse=True)
    assert ucb_argmax(vals, ns, elig, k, untried_first, order) == expect


@pytest.mark.parametrize(
    "params",
    [
        QParams.paper(),
        QParams.paper(epsilon=0.0),
        QParams.improved(),
        QParams.improved(epsilon=0.0),
        QParams.improved(accuracy_masking=False),
    ],
)
def test_memoised_rows_decide_like_fresh_reads(params: QParams) -> None:
    """The policy's row memo (and its patch after each update) never changes a decision: a twin
    policy that forgets the memo before every call trains to the same table."""
    actions = [f"edge/cpu/fp32@{i}" for i in range(8)] + ["edge/gpu/fp16@0", "cloud/gpu/fp32", "peer/cpu/fp32"]
    cands = tuple(cand(a, 60.0 + i) for i, a in enumerate(actions))
    a_tab, b_tab = QTable(), QTable()
    a_pol, b_pol = QLearningPolicy(a_tab, params), QLearningPolicy(b_tab, params)
    a_rng, b_rng, cost_rng = random.Random(3), random.Random(3), random.Random(9)
    cost = {a: cost_rng.uniform(5, 500) for a in actions}
    for step in range(600):
        c = ctx(cands, state=step % 3, accuracy_min=65.0 if step % 5 == 0 else None)
        da = a_pol.decide(c, a_rng)
        b_pol._memo = None
        db = b_pol.decide(c, b_rng)
        assert da == db, step
        r = -cost[da.target.id] * cost_rng.uniform(0.9, 1.1)
        out = Outcome(latency_s=0.01, energy_j=0.01, accuracy=70.0)
        a_pol.learn(c, da, out, r)
        b_pol._memo = None
        b_pol.learn(c, db, out, r)
    assert a_tab.q == b_tab.q and a_tab.n == b_tab.n
