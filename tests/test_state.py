"""Table I binning (services.core.state): every bin boundary, and the 3,072-state index."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.schemas import ModelFeatures, RuntimeConditions, StateView
from services.core.state import (
    DIMENSIONS,
    N_STATES,
    StateBins,
    bin_conv,
    bin_fc,
    bin_mac,
    bin_rc,
    bin_rssi,
    bin_utilisation,
    observe,
    state_bins_and_labels,
    state_index,
)

FAST = settings(max_examples=200, deadline=None)


def test_state_space_is_3072() -> None:
    assert N_STATES == 4 * 2 * 2 * 3 * 4 * 4 * 2 * 2 == 3072


# --------------------------------------------------------------------------- exact boundaries


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, 0), (29, 0), (30, 1), (49, 1), (50, 2), (89, 2), (90, 3), (10_000, 3)],
)
def test_conv_boundaries(n: int, expected: int) -> None:
    assert bin_conv(n) == expected


@pytest.mark.parametrize("fn", [bin_fc, bin_rc])
@pytest.mark.parametrize(("n", "expected"), [(0, 0), (9, 0), (10, 1), (500, 1)])
def test_fc_rc_boundaries(fn: Callable[[int], int], n: int, expected: int) -> None:
    assert fn(n) == expected


@pytest.mark.parametrize(
    ("macs", "expected"),
    [(0, 0), (999_999_999, 0), (1_000_000_000, 1), (1_999_999_999, 1), (2_000_000_000, 2), (10**12, 2)],
)
def test_mac_boundaries(macs: int, expected: int) -> None:
    assert bin_mac(macs) == expected


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [(0.0, 0), (0.0001, 1), (0.2499, 1), (0.25, 2), (0.7499, 2), (0.75, 3), (1.0, 3)],
)
def test_utilisation_boundaries(ratio: float, expected: int) -> None:
    assert bin_utilisation(ratio) == expected


@pytest.mark.parametrize(("dbm", "expected"), [(-30.0, 0), (-79.99, 0), (-80.0, 1), (-80.01, 1), (-120.0, 1)])
def test_rssi_boundaries(dbm: float, expected: int) -> None:
    assert bin_rssi(dbm) == expected


# --------------------------------------------------------------------------- properties


@FAST
@given(st.integers(min_value=0, max_value=10**6))
def test_conv_property(n: int) -> None:
    assert bin_conv(n) == (0 if n < 30 else 1 if n < 50 else 2 if n < 90 else 3)
    # monotone: one more layer never moves to a smaller bin
    assert bin_conv(n + 1) >= bin_conv(n)


@FAST
@given(st.integers(min_value=0, max_value=10**6))
def test_fc_rc_property(n: int) -> None:
    assert bin_fc(n) == bin_rc(n) == (0 if n < 10 else 1)


@FAST
@given(st.integers(min_value=0, max_value=10**13))
def test_mac_property(m: int) -> None:
    assert bin_mac(m) == (0 if m < 1_000_000_000 else 1 if m < 2_000_000_000 else 2)


@FAST
@given(st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
def test_utilisation_property(r: float) -> None:
    expected = 0 if r == 0.0 else 1 if r < 0.25 else 2 if r < 0.75 else 3
    assert bin_utilisation(r) == expected


@FAST
@given(st.floats(min_value=-150.0, max_value=0.0, allow_nan=False))
def test_rssi_property(dbm: float) -> None:
    assert bin_rssi(dbm) == (0 if dbm > -80.0 else 1)


@FAST
@given(
    conv=st.integers(0, 300),
    fc=st.integers(0, 50),
    rc=st.integers(0, 50),
    macs=st.integers(0, 10**11),
    co_cpu=st.floats(0, 1),
    co_mem=st.floats(0, 1),
    w=st.floats(-120, 0),
    p=st.floats(-120, 0),
)
def test_observe_matches_bins(
    conv: int, fc: int, rc: int, macs: int, co_cpu: float, co_mem: float, w: float, p: float
) -> None:
    b = observe(
        ModelFeatures(conv=conv, fc=fc, rc=rc, macs=macs),
        RuntimeConditions(co_cpu=co_cpu, co_mem=co_mem, rssi_wifi_dbm=w, rssi_p2p_dbm=p),
    )
    assert b == StateBins(
        bin_conv(conv),
        bin_fc(fc),
        bin_rc(rc),
        bin_mac(macs),
        bin_utilisation(co_cpu),
        bin_utilisation(co_mem),
        bin_rssi(w),
        bin_rssi(p),
    )
    assert 0 <= b.index < N_STATES
    assert StateBins.from_index(b.index) == b
    assert (
        state_index(
            ModelFeatures(conv=conv, fc=fc, rc=rc, macs=macs),
            RuntimeConditions(co_cpu=co_cpu, co_mem=co_mem, rssi_wifi_dbm=w, rssi_p2p_dbm=p),
        )
        == b.index
    )


def test_state_index_matches_observe_on_every_boundary() -> None:
    """The decider's direct index and the bins agree on every combination of bin edges."""
    feats = [
        ModelFeatures(conv=c, fc=f, rc=r, macs=m)
        for c in (0, 29, 30, 49, 50, 89, 90, 400)
        for f in (9, 10)
        for r in (9, 10)
        for m in (999_999_999, 1_000_000_000, 1_999_999_999, 2_000_000_000)
    ]
    utils = (0.0, 1e-9, 0.2499, 0.25, 0.7499, 0.75, 1.0)
    rssi = (-79.99, -80.0, -80.01)
    conds = [
        RuntimeConditions(co_cpu=c, co_mem=m, rssi_wifi_dbm=w, rssi_p2p_dbm=p)
        for c in utils
        for m in utils
        for w in rssi
        for p in rssi
    ]
    seen = set()
    for f in feats:
        for c in conds:
            i = state_index(f, c)
            assert i == observe(f, c).index
            seen.add(i)
    assert len(seen) == N_STATES  # the boundaries reach every state


# --------------------------------------------------------------------------- index


def test_index_round_trip_all_states() -> None:
    seen = set()
    for i in range(N_STATES):
        b = StateBins.from_index(i)
        assert b.index == i
        for name, labels in DIMENSIONS:
            assert 0 <= getattr(b, name) < len(labels)
        assert set(b.labels()) == {name for name, _ in DIMENSIONS}
        seen.add(tuple(b.as_dict().values()))
    assert len(seen) == N_STATES  # a bijection


@pytest.mark.parametrize("bad", [-1, N_STATES, 10**9])
def test_from_index_rejects_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match=r"state index must be in \[0, "):
        StateBins.from_index(bad)


def test_labels_follow_table_i() -> None:
    b = observe(
        ModelFeatures(conv=94, fc=1, rc=0, macs=5_700_000_000),  # Inception v3
        RuntimeConditions(co_cpu=0.0, co_mem=0.5, rssi_wifi_dbm=-85, rssi_p2p_dbm=-40),
    )
    assert b.labels() == {
        "conv": "larger",
        "fc": "small",
        "rc": "small",
        "mac": "large",
        "co_cpu": "none",
        "co_mem": "medium",
        "rssi_w": "weak",
        "rssi_p": "regular",
    }


def test_bins_and_labels_of_every_state() -> None:
    # The decider's answers read a state's bins and labels from this cache: every state's must be its own.
    for index in range(N_STATES):
        bins, labels = state_bins_and_labels(index)
        state = StateBins.from_index(index)
        assert bins == {name: getattr(state, name) for name, _ in DIMENSIONS} == state.as_dict()
        assert labels == state.labels()
        assert StateBins(**bins).index == index
    # An answer's state holds copies: a change to one answer's dicts cannot reach the cache.
    view = StateView(index=0, bins=bins, labels=labels, raw={})
    assert view.bins is not bins and view.labels is not labels
