"""The partitioning contenders in ``autoscale evaluate``: plans as further columns of the simulator's
blocks (the whole-network columns unchanged), NeuroSurgeon / MOSAIC / AutoScale with splits under
the same protocol as the other baselines, and the partition study in results.json and report.md."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from services.cli.evaluate import evaluate
from services.core.partition import plan_cost
from services.evaluation.config import EvalConfig
from services.evaluation.contenders import PARTITIONING, SPLITS, build_policy
from services.evaluation.results import EvaluationResults
from services.evaluation.simulator import run_steps
from services.evaluation.world import load_device

MODELS = ["mobilenet_v2", "mobilenet_v3", "resnet50"]


@pytest.mark.parametrize("sigma", [0.0, 0.2])
def test_plans_are_further_columns_and_leave_the_rest_alone(sigma: float) -> None:
    """sigma 0: the true world is the profiles, and a plan's column is ``plan_cost`` exactly;
    sigma 0.2: the hidden deviations reach the plans' columns too (each part under its target's)."""
    plain = load_device(
        EvalConfig(
            devices=["moto_x_force"], scenarios=["s4"], models=MODELS, policies=["autoscale", "opt"], world_sigma=sigma
        ),
        "moto_x_force",
    )
    world = load_device(
        EvalConfig(
            devices=["moto_x_force"],
            scenarios=["s4"],
            models=MODELS,
            policies=["autoscale", "opt", *PARTITIONING],
            world_sigma=sigma,
        ),
        "moto_x_force",
    )
    for model in MODELS:
        a, b = plain.block(model, "s4", "test", 40), world.block(model, "s4", "test", 40)
        t = len(a.case.candidates)
        assert b.case.candidates == a.case.candidates and len(b.case.plans) > 0
        assert b.case.column_ids[:t] == a.case.column_ids and all("|" in i for i in b.case.column_ids[t:])
        # the whole-network columns, their noise, Opt and the reward's argmax are exactly as without plans
        for k in ("latency", "energy", "noise"):
            assert np.array_equal(getattr(b, k)[:, :t], getattr(a, k)), k
        assert np.array_equal(b.opt, a.opt) and np.array_equal(b.reward_argmax("qos"), a.reward_argmax("qos"))
        # a plan's column is its cost part by part on the block's conditions (in the true world)
        deviate = 0
        for j, c in enumerate(b.case.plans):
            assert c.plan is not None
            for i in (0, 17):
                pc = plan_cost(world.mesh, b.case.features, b.case.cuts, c.plan, b.conditions[i])
                if sigma == 0.0:
                    assert b.latency[i, t + j] == pytest.approx(pc.latency_s, rel=1e-9)
                    assert b.energy[i, t + j] == pytest.approx(pc.energy_j, rel=1e-9)
                else:
                    deviate += b.latency[i, t + j] != pytest.approx(pc.latency_s, rel=1e-6)
        assert sigma == 0.0 or deviate == 2 * len(b.case.plans)


@pytest.mark.parametrize("name", [*PARTITIONING])
def test_each_contender_decides_within_the_block(name: str) -> None:
    world = load_device(
        EvalConfig(devices=["moto_x_force"], scenarios=["s4"], models=MODELS, policies=["autoscale", "opt", name]),
        "moto_x_force",
    )
    policy = build_policy(name, world.cfg, seed=3, world=world)
    for model in MODELS:
        block = world.block(model, "s4", "test", 30)
        tr = run_steps(policy, [(block, i) for i in range(30)], random.Random(0), reward_mode="qos")
        ids = block.case.column_ids
        picked = {ids[j] for j in tr.choice}
        assert picked  # every decision maps onto a column of the block
        if name == SPLITS:  # AutoScale with splits chooses among its candidates and its split actions only
            offer = {c.action_id for c in world.split_offer(model)}
            assert picked <= offer


def test_partition_study_in_results_and_report(tmp_path: Path) -> None:
    evaluate(
        devices="moto_x_force",
        scenarios="s1,s4",
        models=",".join(MODELS),
        runs=10,
        test_runs=8,
        curve_runs="10",
        seeds="102",
        world_sigma=0.2,
        study="none",
        full=False,
        headline_policy="autoscale",
        profile=None,
        scenario_file=None,
        out=tmp_path,
        workers=1,
        policies="autoscale,edge-cpu-fp32,opt,neurosurgeon,mosaic,autoscale-splits",
    )
    res = json.loads((tmp_path / "results.json").read_text())
    part = EvaluationResults.model_validate(res).partition
    assert part is not None and part.paper == {"neurosurgeon": 1.2, "mosaic": 1.9}
    assert set(part.scenarios) == {"s1", "s4"} and set(part.networks) == set(MODELS)
    allg = part.groups["all"]
    for key in ("autoscale/neurosurgeon", "autoscale/mosaic", "autoscale-splits/autoscale"):
        a, b = key.split("/")
        assert allg.ratios[key] == pytest.approx(allg.ppw_norm[a] / allg.ppw_norm[b])  # type: ignore[operator]
    report = (tmp_path / "report.md").read_text()
    assert "## Partitioned execution" in report and "| neurosurgeon |" in report and "1.9x" in report
    # the plans the contenders ran are counted as their own category
    choices = {c for pol in res["per_case"]["moto_x_force"]["s1"].values() for c in pol["mosaic"]["choices"]}
    assert choices <= {"plan", "edge-cpu-fp32", "edge-cpu-int8", "edge-gpu-fp32", "edge-gpu-fp16", "edge-dsp-int8"}
