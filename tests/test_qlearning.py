"""The pure Q-learning core: update rule, epsilon-greedy, masking, rows, export format, transfer."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.errors import AutoScaleError
from services.core.policies.base import Decision, Outcome
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
    validate_export,
)
from services.core.reward import reward
from services.core.schemas import Target
from tests.qlearning_cases import ARMS, BEST, FAST, cand, ctx

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


MALFORMED: list[tuple[list[str] | None, str, object]] = [
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
    assert issubclass(QTableImportError, AutoScaleError) and issubclass(QTableImportError, ValueError)
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
