"""The pure rules behind the mesh's resilience: deadlines, outlier ejection, restart backoff."""

from __future__ import annotations

import pytest

from services.cli.supervisor import Child, RestartPolicy
from services.decider.deadlines import DeadlinePolicy
from services.decider.outliers import EjectionPolicy, OutlierDetector

# --------------------------------------------------------------------------- deadlines


def test_deadline_comes_from_the_request_or_from_its_qos_within_floor_and_ceiling() -> None:
    p = DeadlinePolicy(qos_factor=20, min_s=2.0, max_s=30.0)
    assert p.budget_s(500.0, qos_ms=50) == 0.5  # the client's own deadline, as given
    assert p.budget_s(None, qos_ms=50) == 2.0  # 50 ms x 20 = 1 s, raised to the floor
    assert p.budget_s(None, qos_ms=200) == 4.0  # 200 ms x 20
    assert p.budget_s(None, qos_ms=10_000) == 30.0  # the ceiling


def test_a_first_try_gets_a_share_of_the_time_left_and_a_fallback_the_rest() -> None:
    p = DeadlinePolicy(min_s=2.0, hop_share=0.5, hop_max_s=30.0, answer_share=0.05)
    d = p.start(100.0, None, qos_ms=50)  # 2 s from t = 100
    assert d.at == 102.0 and d.budget_ms == 2000.0
    assert d.hop_timeout(100.0, first=True, fallback_left=True) == 1.0
    # Nowhere to fall back to: all the time left but the 0.1 s kept to answer.
    assert d.hop_timeout(100.0, first=True, fallback_left=False) == pytest.approx(1.9)
    # The fallback after a hung first try gets everything left, and still ends by the deadline.
    assert d.hop_timeout(101.0, first=False, fallback_left=True) == pytest.approx(0.9)
    assert not d.expired(101.999) and d.expired(102.0)
    assert d.hop_timeout(101.95, first=False, fallback_left=False) == 0.0  # never negative
    assert DeadlinePolicy(hop_max_s=0.3).start(0.0, 10_000, 50).hop_timeout(0.0, first=True, fallback_left=False) == 0.3


def test_a_client_tight_deadline_does_not_blame_the_runner() -> None:
    p = DeadlinePolicy(min_s=2.0, hop_share=0.5)
    assert p.blames(0.999) and p.blames(5.0)  # the first hop of a floor deadline, started a moment ago
    assert p.blames(0.5) and not p.blames(0.49)
    assert not p.blames(0.05)  # deadline_ms=100: a timeout says nothing about the runner


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"min_s": 0.0}, "min_s"),
        ({"min_s": 5.0, "max_s": 1.0}, "min_s"),
        ({"hop_share": 0.0}, "hop_share"),
        ({"hop_share": 1.5}, "hop_share"),
    ],
)
def test_deadline_policy_refuses_nonsense(bad: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DeadlinePolicy(**bad)


# --------------------------------------------------------------------------- outlier ejection


def test_five_consecutive_failures_eject_for_30_s_and_a_success_resets_the_count() -> None:
    o: OutlierDetector[str] = OutlierDetector(EjectionPolicy())  # Envoy's defaults
    for _ in range(4):
        assert o.failure("edge", 0.0) is None
    o.success("edge")
    for _ in range(4):
        assert o.failure("edge", 1.0) is None
    assert not o.is_ejected("edge")
    assert o.failure("edge", 1.0) == 30.0
    assert o.is_ejected("edge") and o.ejected() == ["edge"]
    assert o.failure("edge", 2.0) is None  # in flight when ejected: not counted again
    assert not o.due("edge", 30.9) and o.due("edge", 31.0)
    o.readmit("edge", 31.0)
    assert not o.is_ejected("edge") and not o.ejected()


def test_repeat_ejections_double_up_to_the_cap_and_decay_while_healthy() -> None:
    o: OutlierDetector[str] = OutlierDetector(EjectionPolicy(consecutive=1, base_s=30.0, max_s=300.0))
    t = 0.0
    durations = []
    for _ in range(6):
        d = o.failure("peer", t)
        assert d is not None
        durations.append(d)
        t += d
        o.readmit("peer", t)  # readmitted, fails again at once
    assert durations == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
    # Healthy for 3 base intervals after the last readmission: the multiplier drops by 3.
    assert o.failure("peer", t + 90.0) == min(300.0, 30.0 * 2**3)
    o.readmit("peer", t + 1000.0)
    assert o.failure("peer", t + 1000.0 + 10_000.0) == 30.0  # long healthy: back to the base time


def test_hosts_are_independent() -> None:
    o: OutlierDetector[str] = OutlierDetector(EjectionPolicy(consecutive=2))
    o.failure("edge", 0.0)
    o.failure("cloud", 0.0)
    assert not o.is_ejected("edge") and not o.is_ejected("cloud")
    o.failure("edge", 0.0)
    assert o.is_ejected("edge") and not o.is_ejected("cloud")


# --------------------------------------------------------------------------- supervisor restarts


def test_restart_backoff_doubles_up_to_its_cap_and_the_limit_counts_within_the_window() -> None:
    p = RestartPolicy(limit=3, window_s=60.0, backoff_s=0.5, backoff_max_s=3.0)
    assert [p.delay_s(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.allows(2) and not p.allows(3)
    child = Child("edge")
    child.restarts.extend([0.0, 10.0, 20.0])
    assert child.recent(30.0, p.window_s) == 3  # a fourth exit now: left down
    assert child.recent(65.0, p.window_s) == 2  # the first restart left the window
    assert RestartPolicy(limit=0).allows(0) is False  # limit 0: supervision without restarts


def test_at_most_one_of_three_runners_is_ejected_at_once() -> None:
    """Envoy's max_ejection_percent (10 %, but always one): when one runner is out, the others carry
    its load and slow down; ejecting them for that would cascade."""
    o: OutlierDetector[str] = OutlierDetector(EjectionPolicy(consecutive=1), population=3)
    assert o.failure("edge", 0.0) == 30.0
    assert o.failure("cloud", 1.0) is None and not o.is_ejected("cloud")
    o.readmit("edge", 31.0)
    assert o.failure("cloud", 31.0) == 30.0  # its failures kept counting
    assert EjectionPolicy(max_ejected_share=0.5).max_ejected(10) == 5
    assert EjectionPolicy().max_ejected(3) == 1
