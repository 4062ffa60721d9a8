"""Eq. 5 of the paper (services.core.reward): every branch and its boundaries."""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.reward import ACCURACY_MISS_MJ, REWARD_MODES, RewardWeights, reward, reward_expected

FAST = settings(max_examples=200, deadline=None)


def test_accuracy_below_requirement_is_penalised() -> None:
    # R = R_accuracy - 100, whatever the energy and latency
    assert reward(energy_mj=1.0, latency_ms=1.0, accuracy=60.0, qos_ms=50.0, accuracy_min=65.0) == pytest.approx(-40.0)
    assert reward(energy_mj=900.0, latency_ms=900.0, accuracy=60.0, qos_ms=50.0, accuracy_min=65.0) == pytest.approx(
        -40.0
    )


def test_qos_met_branch() -> None:
    # R = -E + alpha * L + beta * A
    r = reward(energy_mj=120.0, latency_ms=30.0, accuracy=70.0, qos_ms=50.0, accuracy_min=None)
    assert r == pytest.approx(-120.0 + 0.1 * 30.0 + 0.1 * 70.0)


def test_qos_missed_branch() -> None:
    # R = -E + beta * A (no latency term)
    r = reward(energy_mj=120.0, latency_ms=80.0, accuracy=70.0, qos_ms=50.0, accuracy_min=None)
    assert r == pytest.approx(-120.0 + 0.1 * 70.0)


def test_latency_equal_to_qos_counts_as_missed() -> None:
    # "if R_latency < QoS constraint": strict
    r = reward(energy_mj=10.0, latency_ms=50.0, accuracy=70.0, qos_ms=50.0, accuracy_min=None)
    assert r == pytest.approx(-10.0 + 7.0)


def test_accuracy_equal_to_requirement_is_not_penalised() -> None:
    r = reward(energy_mj=10.0, latency_ms=10.0, accuracy=65.0, qos_ms=50.0, accuracy_min=65.0)
    assert r == pytest.approx(-10.0 + 1.0 + 6.5)


def test_no_requirement_never_penalises() -> None:
    r = reward(energy_mj=10.0, latency_ms=10.0, accuracy=1.0, qos_ms=50.0, accuracy_min=None)
    assert r == pytest.approx(-10.0 + 1.0 + 0.1)


def test_custom_weights() -> None:
    w = RewardWeights(alpha=0.5, beta=2.0)
    assert reward(energy_mj=10, latency_ms=20, accuracy=70, qos_ms=50, accuracy_min=None, weights=w) == pytest.approx(
        -10 + 10 + 140
    )
    assert reward(energy_mj=10, latency_ms=60, accuracy=70, qos_ms=50, accuracy_min=None, weights=w) == pytest.approx(
        -10 + 140
    )


def test_defaults_are_the_papers() -> None:
    assert RewardWeights() == RewardWeights(alpha=0.1, beta=0.1)


e = st.floats(0, 1e5, allow_nan=False)
lat = st.floats(0, 1e4, allow_nan=False)
acc = st.floats(0, 100, allow_nan=False)


@FAST
@given(e, lat, acc, st.floats(1, 1000), st.one_of(st.none(), acc))
def test_branches_property(energy: float, latency: float, accuracy: float, qos: float, amin: float | None) -> None:
    r = reward(energy_mj=energy, latency_ms=latency, accuracy=accuracy, qos_ms=qos, accuracy_min=amin)
    if amin is not None and accuracy < amin:
        assert r == accuracy - 100.0
        assert -100.0 <= r <= 0.0
    elif latency < qos:
        assert r == pytest.approx(-energy + 0.1 * latency + 0.1 * accuracy)
    else:
        assert r == pytest.approx(-energy + 0.1 * accuracy)


@FAST
@given(e, e, lat, acc)
def test_lower_energy_never_lowers_reward(e1: float, e2: float, latency: float, accuracy: float) -> None:
    lo, hi = sorted((e1, e2))
    r_lo = reward(energy_mj=lo, latency_ms=latency, accuracy=accuracy, qos_ms=50, accuracy_min=None)
    r_hi = reward(energy_mj=hi, latency_ms=latency, accuracy=accuracy, qos_ms=50, accuracy_min=None)
    assert r_lo >= r_hi


# --------------------------------------------------------------------------- mode="qos"


def q(energy: float, latency: float, accuracy: float = 70.0, amin: float | None = None, k: float = 2.0) -> float:
    return reward(
        energy_mj=energy,
        latency_ms=latency,
        accuracy=accuracy,
        qos_ms=50.0,
        accuracy_min=amin,
        weights=RewardWeights(qos_penalty=k),
        mode="qos",
    )


def test_default_mode_is_the_papers_eq5() -> None:
    r = partial(reward, energy_mj=120.0, latency_ms=30.0, accuracy=70.0, qos_ms=50.0, accuracy_min=None)
    assert r() == r(mode="paper") == pytest.approx(-120.0 + 3.0 + 7.0)
    assert REWARD_MODES == ("paper", "qos")
    with pytest.raises(ValueError, match="unknown reward mode 'fast'"):
        r(mode="fast")


def test_qos_mode_branches() -> None:
    assert q(120.0, 30.0) == -120.0  # within QoS: exactly -E, no latency or accuracy term
    assert q(120.0, 50.0) == -360.0  # a miss (latency == QoS counts as missed): -E (1 + k), k = 2
    assert q(120.0, 80.0, k=0.5) == -180.0
    assert q(1.0, 5.0, accuracy=60.0, amin=65.0) == -3.0 - ACCURACY_MISS_MJ - 500.0


@FAST
@given(e, lat, lat, acc)
def test_qos_mode_has_no_bonus_for_being_slower(energy: float, l1: float, l2: float, accuracy: float) -> None:
    # eq. 5 pays +alpha per ms of latency within QoS; Opt (and mode="qos") is indifferent to it
    lo, hi = sorted((l1 % 50.0, l2 % 50.0))
    assert q(energy, lo, accuracy) == q(energy, hi, accuracy) == -energy


@FAST
@given(st.floats(0.01, 1e4), st.floats(0.01, 1e4), st.floats(0, 49.99), st.floats(50, 1e4), st.floats(0, 20))
def test_qos_mode_orders_like_opt(e_meet: float, e_miss: float, l_meet: float, l_miss: float, k: float) -> None:
    r_meet, r_miss = q(e_meet, l_meet, k=k), q(e_miss, l_miss, k=k)
    # meeting QoS at no more energy always wins, and a miss must save more than the factor (1 + k)
    if e_meet <= e_miss:
        assert r_meet >= r_miss
    if e_meet < (1.0 + k) * e_miss:
        assert r_meet > r_miss
    else:
        assert r_meet <= r_miss
    # among targets that all miss QoS (Opt's fallback): the cheapest still wins
    assert (q(e_meet, l_miss, k=k) >= q(e_miss, l_miss, k=k)) == (e_meet <= e_miss)
    # within QoS: lower energy, higher reward
    assert (q(e_meet, l_meet, k=k) >= q(e_miss, l_meet, k=k)) == (e_meet <= e_miss)


@FAST
@given(st.floats(0.01, 30_000), st.floats(0, 1e4), acc, st.floats(0, 30_000), st.floats(0, 1e4), st.floats(0, 100))
def test_qos_mode_any_accurate_target_beats_an_inaccurate_one(
    e1: float, l1: float, a_ok: float, e2: float, l2: float, short: float
) -> None:
    amin = 50.0
    ok = q(e1, l1, accuracy=max(a_ok, amin), amin=amin)
    bad = q(e2, l2, accuracy=amin - short - 1e-6, amin=amin)
    assert ok > bad  # energies below 33 J: any accurate target (even one missing QoS) wins
    # and among inaccurate ones, the one closer to the requirement wins at equal energy
    assert q(e2, l2, accuracy=amin - 1, amin=amin) > q(e2, l2, accuracy=amin - 10, amin=amin)


@pytest.mark.parametrize("mode", ["paper", "qos"])
@pytest.mark.parametrize("latency", [10.0, 44.0, 49.0, 52.0, 80.0])
def test_expected_reward_under_lognormal_noise(mode: str, latency: float) -> None:
    import numpy as np

    sigma = 0.07
    f = np.random.default_rng(0).lognormal(-0.5 * sigma**2, sigma, 400_000)
    w = RewardWeights()
    mc = np.mean(
        [
            reward(
                energy_mj=100.0 * x,
                latency_ms=latency * x,
                accuracy=70.0,
                qos_ms=50.0,
                accuracy_min=None,
                weights=w,
                mode=mode,
            )
            for x in f[:40_000]
        ]
    )
    got = reward_expected(
        energy_mj=100.0,
        latency_ms=latency,
        accuracy=70.0,
        qos_ms=50.0,
        accuracy_min=None,
        sigma=sigma,
        weights=w,
        mode=mode,
    )
    assert got == pytest.approx(mc, rel=0.01, abs=0.3)
    # sigma 0: the noise-free reward
    assert reward_expected(
        energy_mj=100.0, latency_ms=latency, accuracy=70.0, qos_ms=50.0, accuracy_min=None, sigma=0.0, mode=mode
    ) == reward(energy_mj=100.0, latency_ms=latency, accuracy=70.0, qos_ms=50.0, accuracy_min=None, mode=mode)


def test_qos_penalty_is_validated() -> None:
    with pytest.raises(ValueError, match="qos_penalty must be finite and >= 0"):
        RewardWeights(qos_penalty=-1.0)
    assert RewardWeights(0.5, 2.0) == RewardWeights(alpha=0.5, beta=2.0, qos_penalty=2.0)  # positional use unchanged
