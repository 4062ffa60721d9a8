"""The pure Q-learning core: update rule, epsilon-greedy, masking, rows, export format, transfer."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.errors import AutoScaleError
from services.core.policies.base import Candidate, Decision, DecisionContext, Outcome
from services.core.policies.candidates import eligible_indices, epsilon_greedy
from services.core.policies.errors import NoCandidate
from services.core.policies.qlearning import (
    EXPORT_FORMAT_VERSION,
    VISITS_MAX,
    QLearningPolicy,
    QParams,
    QTable,
    QTableImportError,
    QUpdate,
    apply_update,
    f32,
    initial_q,
    q_learning_target,
    transfer_mapping,
    transfer_table,
    ucb_argmax,
    ucb_score,
    validate_export,
)
from services.core.policies.qlearning.entries import _BINS, _DIM_WEIGHTS, EntryIndex
from services.core.reward import reward
from services.core.schemas import ModelFeatures, RuntimeConditions, Target
from services.core.state import StateBins

FAST = settings(max_examples=100, deadline=None)
FEAT = ModelFeatures(conv=14, fc=1, rc=0, macs=569_000_000)
COND = RuntimeConditions()


def cand(action: str, accuracy: float = 70.0) -> Candidate:
    return Candidate(Target.parse(action), accuracy)


def ctx(
    cands: tuple[Candidate, ...], state: int = 7, accuracy_min: float | None = None, qos_s: float = 0.05
) -> DecisionContext:
    return DecisionContext(
        model="m", features=FEAT, conditions=COND, state=state, candidates=cands, qos_s=qos_s, accuracy_min=accuracy_min
    )


# --------------------------------------------------------------------------- update rule


def test_update_rule_matches_algorithm_1() -> None:
    q, r, nxt, lr, d = -5.0, -12.0, -3.0, 0.9, 0.1
    assert q_learning_target(q, r, nxt, lr, d) == q + lr * (r + d * nxt - q)
    # lr = 1, discount = 0: Q becomes the reward
    assert q_learning_target(q, r, nxt, 1.0, 0.0) == r


def test_apply_update_reads_rows_before_the_write() -> None:
    u = QUpdate(
        state=1,
        action="a/cpu/fp32".replace("a/", "edge/"),
        reward=-10.0,
        next_state=1,
        next_actions=("edge/cpu/fp32", "cloud/gpu/fp32"),
        init=0.5,
        next_inits=(0.5, 0.2),
        learning_rate=0.9,
        discount=0.1,
    )
    # empty rows: Q = init, max over S' (== S) uses the *old* Q(S,A) = 0.5
    assert apply_update({}, {}, u) == f32(0.5 + 0.9 * (-10.0 + 0.1 * 0.5 - 0.5))  # rows hold float32
    row = {"edge/cpu/fp32": -4.0, "cloud/gpu/fp32": -1.0}
    assert apply_update(row, row, u) == f32(-4.0 + 0.9 * (-10.0 + 0.1 * -1.0 + 4.0))


def test_terminal_update_has_no_next_term() -> None:
    u = QUpdate(
        state=1,
        action="edge/cpu/fp32",
        reward=-10.0,
        next_state=2,
        next_actions=(),
        init=0.0,
        next_inits=(),
        learning_rate=0.5,
        discount=0.9,
    )
    assert apply_update({}, {}, u) == -5.0


def test_update_validation() -> None:
    with pytest.raises(ValueError, match="state out of range"):
        QUpdate(
            state=5000,
            action="edge/cpu/fp32",
            reward=0,
            next_state=0,
            next_actions=(),
            init=0,
            next_inits=(),
            learning_rate=0.9,
            discount=0.1,
        )
    with pytest.raises(ValueError, match="reward must be finite"):
        QUpdate(
            state=1,
            action="edge/cpu/fp32",
            reward=math.nan,
            next_state=0,
            next_actions=(),
            init=0,
            next_inits=(),
            learning_rate=0.9,
            discount=0.1,
        )
    with pytest.raises(ValueError, match="learning_rate must be in"):
        QParams(learning_rate=0.0)


def test_initial_q_is_deterministic_random_and_in_range() -> None:
    vals = [initial_q(0, s, a) for s in range(50) for a in ("edge/cpu/fp32", "cloud/gpu/fp32")]
    assert all(0.0 <= v < 1.0 for v in vals)
    assert len(set(vals)) == len(vals)  # random-looking: no repeats
    assert initial_q(0, 3, "edge/cpu/fp32") == initial_q(0, 3, "edge/cpu/fp32")
    assert initial_q(1, 3, "edge/cpu/fp32") != initial_q(0, 3, "edge/cpu/fp32")
    assert -5.0 <= initial_q(0, 3, "x", -5.0, -4.0) < -4.0


# --------------------------------------------------------------------------- selection


@FAST
@given(st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=30), st.integers(0, 2**32))
def test_epsilon_zero_never_explores(values: list[float], seed: int) -> None:
    rng = random.Random(seed)
    before = rng.getstate()
    i, explored = epsilon_greedy(values, list(range(len(values))), 0.0, rng)
    assert not explored
    assert values[i] == max(values)
    assert rng.getstate() == before  # the random stream is not even consulted


def test_epsilon_one_always_explores() -> None:
    rng = random.Random(1)
    picks = [epsilon_greedy([0.0, 1.0, 2.0], [0, 1, 2], 1.0, rng) for _ in range(300)]
    assert all(e for _, e in picks)
    assert {i for i, _ in picks} == {0, 1, 2}


def test_exploration_rate_is_epsilon() -> None:
    rng = random.Random(2)
    n = 20_000
    explored = sum(epsilon_greedy([0.0, 1.0], [0, 1], 0.1, rng)[1] for _ in range(n))
    assert abs(explored / n - 0.1) < 0.01


def test_policy_with_epsilon_zero_is_greedy() -> None:
    table = QTable()
    table.q[7] = {"edge/cpu/fp32": -50.0, "edge/gpu/fp16": -10.0, "cloud/gpu/fp32": -30.0}
    pol = QLearningPolicy(table, QParams(epsilon=0.0))
    c = ctx((cand("edge/cpu/fp32"), cand("edge/gpu/fp16"), cand("cloud/gpu/fp32")))
    rng = random.Random(0)
    for _ in range(200):
        d = pol.decide(c, rng)
        assert d.target.id == "edge/gpu/fp16" and not d.explored


@FAST
@given(
    accs=st.lists(st.floats(0, 100), min_size=1, max_size=12),
    amin=st.floats(0, 100),
    eps=st.sampled_from([0.0, 0.3, 1.0]),
    seed=st.integers(0, 1000),
)
def test_masking_never_picks_below_accuracy(accs: list[float], amin: float, eps: float, seed: int) -> None:
    cands = tuple(cand(f"edge/cpu/fp32@{i}", a) for i, a in enumerate(accs))
    pol = QLearningPolicy(QTable(), QParams(epsilon=eps, init_seed=seed))
    rng = random.Random(seed)
    c = ctx(cands, accuracy_min=amin)
    for _ in range(20):
        d = pol.decide(c, rng)
        picked = next(x for x in cands if x.target == d.target)
        if any(a >= amin for a in accs):
            assert picked.accuracy >= amin
        else:  # nothing reaches it: the most accurate ones
            assert picked.accuracy == max(accs)


def test_penalty_only_mode_may_pick_below_accuracy() -> None:
    # The paper's behaviour: no mask, eq. 5's R_accuracy - 100 is the only deterrent.
    table = QTable()
    table.q[7] = {"edge/cpu/int8": 5.0, "edge/cpu/fp32": -50.0}
    c = ctx((cand("edge/cpu/int8", 40.0), cand("edge/cpu/fp32", 70.0)), accuracy_min=65.0)
    masked = QLearningPolicy(table, QParams(epsilon=0.0))
    paper = QLearningPolicy(table, QParams(epsilon=0.0, accuracy_masking=False))
    assert masked.decide(c, random.Random(0)).target.id == "edge/cpu/fp32"
    assert paper.decide(c, random.Random(0)).target.id == "edge/cpu/int8"
    # ...and the penalty then teaches it to avoid the inaccurate target
    r = reward(energy_mj=1.0, latency_ms=5.0, accuracy=40.0, qos_ms=50.0, accuracy_min=65.0)
    paper.learn(c, Decision(Target.parse("edge/cpu/int8")), Outcome(0.005, 0.001, 40.0), r)
    assert paper.decide(c, random.Random(0)).target.id == "edge/cpu/fp32"


def test_eligible_indices() -> None:
    assert eligible_indices([50, 70, 60], 65, True) == [1]
    assert eligible_indices([50, 70, 60], 65, False) == [0, 1, 2]
    assert eligible_indices([50, 70, 60], None, True) == [0, 1, 2]
    assert eligible_indices([50, 60, 60], 65, True) == [1, 2]  # fallback: the most accurate


def test_no_candidates_raises() -> None:
    with pytest.raises(NoCandidate):
        QLearningPolicy().decide(ctx(()), random.Random(0))


# --------------------------------------------------------------------------- rows follow the actions


def test_row_changes_when_actions_appear_and_leave() -> None:
    table = QTable()
    pol = QLearningPolicy(table, QParams(epsilon=0.0))
    a, b, c = "edge/cpu/fp32", "edge/gpu/fp16", "cloud/gpu/fp32"
    ab = ctx((cand(a), cand(b)))
    pol.learn(ab, Decision(Target.parse(a)), Outcome(0.01, 0.1, 70), -100.0)
    pol.learn(ab, Decision(Target.parse(b)), Outcome(0.01, 0.1, 70), -20.0)
    view = pol.row_view(7, [a, b])
    assert set(view) == {a, b} and view[b] > view[a]
    assert pol.decide(ab, random.Random(0)).target.id == b

    # c appears: it gets its random initial value (optimistic vs the negative rewards) lazily
    view = pol.row_view(7, [a, b, c])
    assert set(view) == {a, b, c}
    assert view[c] == initial_q(0, 7, c)
    assert c not in table.row(7)  # nothing stored until it is learned
    assert pol.decide(ctx((cand(a), cand(b), cand(c))), random.Random(0)).target.id == c

    # b leaves: the row no longer covers it and it can never be picked; its value is kept
    only_ac = ctx((cand(a), cand(c)))
    assert set(pol.row_view(7, [a, c])) == {a, c}
    for seed in range(50):
        assert pol.decide(only_ac, random.Random(seed)).target.id in {a, c}
    assert table.row(7)[b] == view[b]

    # the max over S' only covers the offered actions: learning with b gone ignores b's value
    u = pol.make_update(only_ac, Decision(Target.parse(a)), -100.0)
    assert u.next_actions == (a, c)


# --------------------------------------------------------------------------- convergence


ARMS = {  # action -> (energy mJ, latency ms) on a small synthetic problem, per state
    0: {
        "edge/cpu/fp32@3": (120.0, 40.0),
        "edge/gpu/fp16@2": (35.0, 20.0),
        "edge/dsp/int8": (18.0, 30.0),
        "cloud/gpu/fp32": (60.0, 35.0),
        "peer/gpu/fp32": (45.0, 45.0),
    },
    1: {
        "edge/cpu/fp32@3": (120.0, 40.0),
        "edge/gpu/fp16@2": (35.0, 20.0),
        "edge/dsp/int8": (40.0, 80.0),
        "cloud/gpu/fp32": (25.0, 30.0),
        "peer/gpu/fp32": (45.0, 45.0),
    },
}
# State 1: a co-runner slows the DSP past QoS and raises its energy; the cloud wins. (Eq. 5 only
# drops the alpha*latency term on a QoS miss, so a miss alone is a small penalty.)
BEST = {0: "edge/dsp/int8", 1: "cloud/gpu/fp32"}


def run_synthetic(pol: QLearningPolicy, steps: int, seed: int) -> None:
    rng = random.Random(seed)
    noise = random.Random(seed + 1)
    cands = tuple(cand(a) for a in ARMS[0])
    for t in range(steps):
        s = t % 2
        c = ctx(cands, state=s)
        d = pol.decide(c, rng)
        e, lat = ARMS[s][d.target.id]
        e *= noise.uniform(0.9, 1.1)
        r = reward(energy_mj=e, latency_ms=lat, accuracy=70.0, qos_ms=50.0, accuracy_min=None)
        pol.learn(c, d, Outcome(lat / 1e3, e / 1e3, 70.0), r)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_converges_to_best_arm(seed: int) -> None:
    table = QTable()
    pol = QLearningPolicy(table, QParams(init_seed=seed))  # the paper's lr 0.9, discount 0.1, epsilon 0.1
    run_synthetic(pol, 300, seed)
    greedy = QLearningPolicy(table, QParams(epsilon=0.0, init_seed=seed))
    for s, best in BEST.items():
        assert greedy.decide(ctx(tuple(cand(a) for a in ARMS[0]), state=s), random.Random(0)).target.id == best
    # within tens of runs per state, as the paper reports (Fig. 14: 40-50 runs); visit counts
    # saturate at VISITS_MAX (the packed row's 4-bit field), so 150 runs over 5 arms fill them
    assert set(table.visits(0)) == set(ARMS[0])
    assert table.visits(0)[BEST[0]] == VISITS_MAX


# --------------------------------------------------------------------------- export format


def good_export() -> dict:
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "device": "mi8pro",
        "actions": ["cloud/gpu/fp32", "edge/cpu/fp32@3"],
        "states": {"12": {"edge/cpu/fp32@3": {"q": -12.5, "n": 3}, "cloud/gpu/fp32": {"q": -3, "n": 0}}},
    }


def test_validate_good_export() -> None:
    t = validate_export(good_export(), expect_device="mi8pro")
    assert t.states == {12: {"edge/cpu/fp32@3": (-12.5, 3), "cloud/gpu/fp32": (-3.0, 0)}}
    assert t.entries == 2


def _mut(path: list, value: object = None, delete: bool = False) -> dict:
    d = good_export()
    node = d
    for k in path[:-1]:
        node = node[k]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


MALFORMED = [
    ([], "body", "not-a-dict"),
    (None, "format_version", _mut(["format_version"], 2)),
    (None, "format_version", _mut(["format_version"], True)),
    (None, "states", _mut(["states"], delete=True)),
    (None, "extra", {**good_export(), "extra": 1}),
    (None, "device", _mut(["device"], "bad device!")),
    (None, "actions", _mut(["actions"], "edge/cpu/fp32")),
    (None, "actions[1]", _mut(["actions", 1], "edge/npu/fp32")),
    (None, "actions[1]", _mut(["actions", 1], "cloud/gpu/fp32")),
    (None, "states.x", {**good_export(), "states": {"x": {}}}),
    (None, "states.3072", {**good_export(), "states": {"3072": {}}}),
    (None, "states.12.edge/gpu/fp16", _mut(["states", "12", "edge/gpu/fp16"], {"q": 1, "n": 1})),
    (None, "states.12.edge/cpu/fp32@3.q", _mut(["states", "12", "edge/cpu/fp32@3", "q"], "1.0")),
    (None, "states.12.edge/cpu/fp32@3.q", _mut(["states", "12", "edge/cpu/fp32@3", "q"], math.inf)),
    (None, "states.12.edge/cpu/fp32@3.n", _mut(["states", "12", "edge/cpu/fp32@3", "n"], -1)),
    (None, "states.12.edge/cpu/fp32@3.n", _mut(["states", "12", "edge/cpu/fp32@3", "n"], 1.5)),
    (None, "states.12.edge/cpu/fp32@3", _mut(["states", "12", "edge/cpu/fp32@3"], {"q": 1})),
]


@pytest.mark.parametrize(("_", "field", "data"), MALFORMED)
def test_validate_malformed_names_the_field(_: object, field: str, data: object) -> None:
    with pytest.raises(QTableImportError) as ei:
        validate_export(data)
    assert ei.value.field == field
    assert ei.value.kind == "malformed"


def test_validate_mismatch() -> None:
    with pytest.raises(QTableImportError) as ei:
        validate_export(good_export(), expect_device="s10e")
    assert (ei.value.field, ei.value.kind) == ("device", "mismatch")
    with pytest.raises(QTableImportError) as ei:
        validate_export(good_export(), allowed_actions={"cloud/gpu/fp32"})
    assert (ei.value.field, ei.value.kind) == ("actions[1]", "mismatch")


def test_import_error_is_an_autoscale_error_with_its_http_answer() -> None:
    malformed = QTableImportError("states.1", "bad")
    mismatch = QTableImportError("device", "other phone", "mismatch")
    assert isinstance(malformed, AutoScaleError) and isinstance(malformed, ValueError)
    assert (malformed.status, malformed.code, malformed.field, malformed.message) == (
        422,
        "invalid_qtable",
        "states.1",
        "bad",
    )
    assert (mismatch.status, mismatch.code, mismatch.kind) == (409, "qtable_mismatch", "mismatch")
    assert str(malformed) == "states.1: bad"


def test_row_cache_changes_keep_the_entry_index_and_the_write_counter_in_step() -> None:
    t = QTable()
    t.set_row(5, {"edge/dsp/int8": -3.0}, {"edge/dsp/int8": 2})
    assert t.set_entry(6, "cloud/gpu/fp32", -1.0, 1) and t.entries.holds(6, "cloud/gpu/fp32")
    assert not t.set_entry(6, "cloud/gpu/fp32", -1.0, 1)  # the same value: nothing changed
    w = t.writes
    t.forget_state(5)
    assert t.row(5) == {} and t.visits(5) == {} and not t.entries.holds(5, "edge/dsp/int8")
    assert t.writes == w + 1
    t.reset()
    assert t.q == {} and not t.entries.holds(6, "cloud/gpu/fp32") and t.writes == w + 2


def test_qtable_export_import_round_trip() -> None:
    t = QTable()
    pol = QLearningPolicy(t, QParams(init_seed=3))
    run_synthetic(pol, 100, 3)
    data = t.export("mi8pro")
    t2 = QTable()
    t2.load(validate_export(data, expect_device="mi8pro"))
    assert t2.q == t.q and t2.n == t.n
    assert t2.export("mi8pro") == data


# --------------------------------------------------------------------------- transfer


MI8 = (
    [f"edge/cpu/fp32@{i}" for i in range(23)]
    + [f"edge/gpu/fp16@{i}" for i in range(7)]
    + ["edge/dsp/int8", "cloud/gpu/fp32", "cloud/cpu/fp32", "peer/gpu/fp32"]
)
S10E = (
    [f"edge/cpu/fp32@{i}" for i in range(21)]
    + [f"edge/gpu/fp16@{i}" for i in range(9)]
    + ["edge/gpu/fp32", "cloud/gpu/fp32", "peer/gpu/fp32"]
)


def test_transfer_mapping_scales_dvfs_by_index_ratio() -> None:
    m = transfer_mapping(MI8, S10E)
    assert m["edge/cpu/fp32@0"] == "edge/cpu/fp32@0"
    assert m["edge/cpu/fp32@20"] == "edge/cpu/fp32@22"  # top -> top
    assert m["edge/cpu/fp32@10"] == "edge/cpu/fp32@11"  # 10/20 * 22
    assert m["edge/gpu/fp16@8"] == "edge/gpu/fp16@6"
    assert m["edge/gpu/fp16@4"] == "edge/gpu/fp16@3"  # 4/8 * 6
    assert m["cloud/gpu/fp32"] == "cloud/gpu/fp32"
    assert "edge/gpu/fp32" not in m  # the source has no FP32 GPU action
    assert set(m) <= set(S10E) and set(m.values()) <= set(MI8)


def test_transfer_fixed_and_stepped() -> None:
    m = transfer_mapping(
        ["edge/gpu/fp32", "edge/cpu/fp32@0", "edge/cpu/fp32@4"], ["edge/gpu/fp32@0", "edge/gpu/fp32@2", "edge/cpu/fp32"]
    )
    assert m == {"edge/gpu/fp32@2": "edge/gpu/fp32", "edge/cpu/fp32": "edge/cpu/fp32@4"}


def test_transfer_table_keeps_only_destination_actions() -> None:
    src = validate_export(
        {
            "format_version": 1,
            "device": "mi8pro",
            "actions": MI8,
            "states": {
                "5": {
                    "edge/dsp/int8": {"q": -3.0, "n": 9},
                    "edge/cpu/fp32@22": {"q": -80.0, "n": 4},
                    "cloud/gpu/fp32": {"q": -20.0, "n": 2},
                }
            },
        }
    )
    table, report = transfer_table(src, "s10e", S10E)
    assert table.device == "s10e"
    assert table.states == {5: {"edge/cpu/fp32@20": (-80.0, 0), "cloud/gpu/fp32": (-20.0, 0)}}
    assert report.entries_copied == 2 and report.entries_dropped == 1  # the DSP entry
    assert all(a in S10E for row in table.states.values() for a in row)


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
        0.2,
        True,
        4,
    )
    for bad in (
        {"q_init": "zero"},
        {"lr_schedule": "adam"},
        {"lr_floor": 0.0},
        {"explore_bonus": -1.0},
        {"init_optimism": 1.0},
        {"near_radius": -1},
    ):
        with pytest.raises(ValueError, match="must be"):
            QParams(**bad)  # type: ignore[arg-type]


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
