"""The testbed's analysis on records whose answer is known: when AutoScale moved, the measured slowdown, checks."""

from __future__ import annotations

from typing import Any

import pytest

from services.testbed import analysis
from services.testbed.models import Record
from services.testbed.timeline import plan_for, workload


def _rec(seq: int, phase_index: int, policy: str, runner: str, reward: float, **kw: Any) -> Record:
    plan = plan_for("quick", edge_cpus=[0], other_cpus=[1], train_passes=0)
    phase = plan.phases[phase_index]
    target = {"edge": "edge/cpu/int8@0", "cloud": "cloud/cpu/fp32", "peer": "peer/cpu/fp32"}[runner]
    values: dict[str, Any] = {
        "seq": seq,
        "t_s": seq * 0.1,
        "stage": "eval",
        "pass_index": 0,
        "phase": phase.name,
        "phase_index": phase_index,
        "scenario": phase.scenario,
        "corunner": phase.corunner,
        "policy": policy,
        "model": "mobilenet_v1",
        "ok": True,
        "target_id": target,
        "runner": runner,
        "reward": reward,
        "energy_mj": -reward,
        "inference_ms": 10.0,
        "latency_source": "measured",
        "qos_met": True,
    }
    return Record.model_validate(values | kw)


def test_a_move_away_is_counted_from_the_corunner_start() -> None:
    plan = plan_for("quick", edge_cpus=[0], other_cpus=[1], train_passes=0)
    recs = [_rec(i, 0, "autoscale", "edge", -10.0) for i in range(3)]  # baseline: on the edge
    # cpu co-runner: the edge now costs more than the cloud (as Edge CPU FP32 measures); AutoScale moves at its
    # third request there.
    seq = 3
    for runner in ["edge", "edge", "cloud", "cloud"]:
        recs.append(_rec(seq, 1, "autoscale", runner, -40.0 if runner == "edge" else -20.0))
        recs.append(_rec(seq + 1, 1, "edge-cpu-fp32", "edge", -45.0))
        seq += 2
    ts = analysis.transitions(recs, plan)
    start = next(t for t in ts if t.event == "start")
    assert start.networks == ["mobilenet_v1"] and start.expected == ["mobilenet_v1"]
    assert start.requests_until_move == 3
    assert start.edge_share_before == 1.0 and start.edge_share_after == pytest.approx(0.5)


def test_no_move_is_expected_where_the_edge_stays_best() -> None:
    plan = plan_for("quick", edge_cpus=[0], other_cpus=[1], train_passes=0)
    recs = [_rec(0, 0, "autoscale", "edge", -10.0), _rec(1, 1, "autoscale", "edge", -15.0)]
    recs.append(_rec(2, 1, "cloud", "cloud", -25.0))
    start = next(t for t in analysis.transitions(recs, plan) if t.event == "start")
    assert start.expected == [] and start.requests_until_move is None
    check = analysis._move_check([start], "start", bound=9)
    assert check.passed is None  # not applicable, and said why
    assert "no network" in check.detail


def test_slowdown_is_the_median_ratio_of_medians_with_enough_samples() -> None:
    recs = [_rec(i, 0, "edge-cpu-fp32", "edge", -1.0, inference_ms=10.0 + i % 2) for i in range(6)]
    recs += [_rec(10 + i, 1, "edge-cpu-fp32", "edge", -1.0, inference_ms=21.0) for i in range(3)]
    recs += [_rec(20 + i, 3, "edge-cpu-fp32", "edge", -1.0, inference_ms=30.0) for i in range(2)]  # too few
    rows, slowdown = analysis.interference(recs)
    assert slowdown == {"cpu": pytest.approx(21.0 / 10.5)}
    assert {(r.corunner, r.n) for r in rows} == {("none", 6), ("cpu", 3), ("mem", 2)}


def test_energy_check_compares_with_the_best_other_policy() -> None:
    recs = [_rec(i, 0, p, "edge", -e) for i, (p, e) in enumerate([("autoscale", 10.0), ("opt", 10.4)] * 3)]
    recs += [_rec(10 + i, 0, "edge-cpu-fp32", "edge", -30.0, qos_met=False) for i in range(3)]
    plan = plan_for("quick", edge_cpus=[0], other_cpus=[1], train_passes=0)
    summaries = analysis.policy_summaries(recs)
    checks = {c.name: c for c in analysis.checks(summaries, [], {}, plan, [], recs)}
    energy = checks["energy within 5 % of the best policy"]
    assert energy.passed is True and "vs opt" in energy.value and energy.value.startswith("-")
    assert checks["better than Edge CPU FP32"].passed is True
    assert checks["co-runners really raised edge latency"].passed is None


def test_every_preset_workload_can_meet_its_accuracy_target() -> None:
    for preset in ("quick", "default", "full"):
        plan = plan_for(preset, edge_cpus=[0], other_cpus=[1])
        assert plan.workloads and plan.requests() > 0
    with pytest.raises(ValueError, match="above its best expected accuracy"):
        workload("ssd_mobilenet_v2", accuracy_min=50.0)
