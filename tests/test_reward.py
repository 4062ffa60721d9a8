"""Eq. 5 of the paper (services.common.reward): every branch and its boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.reward import RewardWeights, reward

FAST = settings(max_examples=200, deadline=None)


def test_accuracy_below_requirement_is_penalised() -> None:
    # R = R_accuracy - 100, whatever the energy and latency
    assert reward(energy_mj=1.0, latency_ms=1.0, accuracy=60.0, qos_ms=50.0, accuracy_min=65.0) == pytest.approx(-40.0)
    assert reward(energy_mj=900.0, latency_ms=900.0, accuracy=60.0, qos_ms=50.0, accuracy_min=65.0) == pytest.approx(-40.0)


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
    assert reward(energy_mj=10, latency_ms=20, accuracy=70, qos_ms=50, accuracy_min=None, weights=w) == pytest.approx(-10 + 10 + 140)
    assert reward(energy_mj=10, latency_ms=60, accuracy=70, qos_ms=50, accuracy_min=None, weights=w) == pytest.approx(-10 + 140)


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
