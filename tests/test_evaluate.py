"""A reduced evaluation through the CLI function: output structure, and AutoScale's place."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.cli.evaluate import evaluate
from services.core.reward import reward
from services.evaluation.config import EvalConfig
from services.evaluation.results import EvaluationResults, dump_results
from services.evaluation.reward_matrix import reward_matrix
from services.evaluation.simulator import run_steps
from services.evaluation.world import load_device

MODELS = "mobilenet_v1,resnet50,mobilebert"


def _run(out: Path, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "devices": "mi8pro,galaxy_s23",
        "scenarios": "s1,s4,d3,commute",
        "models": MODELS,
        "runs": 10,
        "test_runs": 6,
        "curve_runs": "10,30",
        "seeds": "100,101",
        "world_sigma": 0.2,
        "study": "convergence,overhead",
        "full": False,
        "headline_policy": "autoscale",
        "profile": None,
        "scenario_file": None,
        "out": out,
        "workers": 1,
        "policies": "autoscale,autoscale-paper,edge-cpu-fp32,edge-best,cloud,connected-edge,opt,opt-informed,"
        "lr,knn,linucb",
    }
    args.update(kw)
    evaluate(**args)
    res: dict[str, Any] = json.loads((out / "results.json").read_text())
    return res


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short CI evaluation: the protocol's structure, not its numbers."""
    d = tmp_path_factory.mktemp("eval")
    _run(d)
    return d


def test_the_headline_is_cold_leave_one_out_with_the_issues_keys(out: Path) -> None:
    res = json.loads((out / "results.json").read_text())
    h = res["summary"]["headline"]
    assert set(h) == {
        "protocol",
        "energy_gap_pct",
        "qos_gap_pp",
        "exact_action_accuracy",
        "category_accuracy",
        "informed_exact_action_accuracy",
        "informed_category_accuracy",
        "runs_to_converge",
    }
    assert h["protocol"] == "cold-loo" == res["protocol"]["headline"]
    g = res["summary"]["all"]["gaps_by_policy"]["autoscale"]
    assert h["energy_gap_pct"] == g["energy_gap_pct"] and h["qos_gap_pp"] == g["qos_gap_pp"]
    # the informed reference is reported beside the learner, from its own scored inferences
    inf = res["summary"]["all"]["policies"]["opt-informed"]
    assert h["informed_category_accuracy"] == inf["category_accuracy"] is not None
    assert "opt-informed" not in res["learning_curve"]  # a reference, not a learner
    # the headline's per-case scores are the cold window's; later windows come after online inferences
    assert res["protocol"]["windows"] == ["cold", "online_10", "online_30"]
    assert set(res["per_case_online"]) == {"10", "30"}
    assert [p["online_runs"] for p in res["learning_curve"]["autoscale"]] == [0, 10, 30]
    assert res["learning_curve"]["autoscale"][0]["energy_gap_pct"] == h["energy_gap_pct"]
    report = (out / "report.md").read_text()
    first_table = report.index("\n| ")
    assert report.index("## 1. Headline: cold leave-one-network-out") < first_table < report.index("## 2.")


def test_held_out_seeds_devices_and_trace_differ_from_the_tuning_ones(out: Path) -> None:
    res = json.loads((out / "results.json").read_text())
    p = res["protocol"]
    assert p["seeds"] == [100, 101] and not set(p["seeds"]) & set(p["tuning_seeds"])
    assert p["held_out_devices"] == ["galaxy_s23"] and "galaxy_s23" not in p["tuning_devices"]
    assert p["held_out_scenarios"] == ["commute"] and res["summary"]["held_out_scenarios"] == ["commute"]
    assert set(p["headline_by_seed"]) == {"100", "101"}
    assert {r["setting"] for r in p["settings"]} >= {"qos_penalty", "lr_floor", "discount", "explore_bonus"}
    assert all(r["chosen_on"] for r in p["settings"])
    assert p["world"]["sigma"] == 0.2 and p["world"]["estimator_sigma"] > 0


def test_outputs(out: Path) -> None:
    res = json.loads((out / "results.json").read_text())
    assert set(res["per_case"]) == {"mi8pro", "galaxy_s23"}
    case = res["per_case"]["mi8pro"]["s1"]["resnet50"]
    assert {"autoscale", "opt", "edge-cpu-fp32", "lr"} <= set(case)
    assert {"energy_mj", "latency_ms", "qos_violation", "prediction_accuracy", "choices"} <= set(case["autoscale"])
    assert case["autoscale"]["n"] == 6 * 2  # test_runs x seeds, merged
    assert res["timing"]["decisions"] > 0 and res["timing"]["cpu_s"] > 0
    assert res["predictor_errors"]["cold"]["lr"]["n"] > 0
    ov = res["studies"]["overhead"]["per_device"]["mi8pro"]
    assert ov["exploit_uj"] > 0 and ov["train_uj"] > ov["exploit_uj"]
    for name in res["figures"].values():
        f = out / name
        assert f.exists() and f.stat().st_size > 5_000, name
    report = (out / "report.md").read_text()
    for text in ("## 2. Learning curves", "9.8x", "inferences per joule", "CPU-seconds", "What each learner setting"):
        assert text in report, text


def test_results_json_is_the_published_contract(out: Path) -> None:
    """results.json is exactly the dump of a valid EvaluationResults (docs/results.schema.json)."""
    text = (out / "results.json").read_text()
    results = EvaluationResults.model_validate_json(text)
    assert dump_results(results) == json.loads(text)
    assert results.config.devices == ["mi8pro", "galaxy_s23"] and results.convergence is not None


def test_without_studies_the_study_blocks_are_absent(tmp_path: Path) -> None:
    res = _run(
        tmp_path,
        devices="galaxy_s10e",
        scenarios="s2",
        models="mobilenet_v1,mobilenet_v2",
        runs=5,
        test_runs=5,
        curve_runs="10",
        seeds="100",
        study="none",
        policies="autoscale,edge-cpu-fp32,opt",
    )
    assert not {"convergence", "accuracy_targets", "accuracy_refused", "studies"} & set(res)
    assert "dynamic" not in res["summary"] and res["summary"]["dynamic_scenarios"] == []
    assert res["summary"]["headline"]["runs_to_converge"] is None
    assert EvaluationResults.model_validate(res).summary.static is not None


def test_both_autoscale_variants_are_reported(out: Path) -> None:
    res = json.loads((out / "results.json").read_text())
    case = res["per_case"]["mi8pro"]["s1"]["resnet50"]
    assert {"autoscale", "autoscale-paper"} <= set(case)
    allg = res["summary"]["all"]
    assert {"autoscale", "autoscale-paper", "linucb", "lr"} <= set(allg["gaps_by_policy"])
    conv = res["convergence"]["variants"]
    assert set(conv) == {"autoscale", "autoscale-paper"}
    assert res["convergence"]["transfer"] == {}  # transfer is its own study
    assert res["noise_floor"] and all(v["n"] > 0 for v in res["noise_floor"].values())


def test_reward_matrix_matches_eq5() -> None:
    rng = np.random.default_rng(0)
    e, lat, acc = rng.uniform(0, 0.5, (4, 6)), rng.uniform(0, 0.2, (4, 6)), rng.uniform(10, 90, 6)
    for amin in (None, 50.0):
        m = reward_matrix(e, lat, acc, 0.05, amin)
        for i in range(4):
            for j in range(6):
                want = reward(
                    energy_mj=e[i, j] * 1e3, latency_ms=lat[i, j] * 1e3, accuracy=acc[j], qos_ms=50.0, accuracy_min=amin
                )
                assert m[i, j] == pytest.approx(want)


def test_simulation_is_deterministic() -> None:
    from services.core.policies import make_policy

    cfg = EvalConfig(devices=["galaxy_s10e"], scenarios=["d3"], models=["mobilenet_v2"], workers=1)

    def once() -> list[float]:
        w = load_device(cfg, "galaxy_s10e")
        b = w.block("mobilenet_v2", "d3", "test", 30)
        return run_steps(make_policy("autoscale", seed=1), [(b, i) for i in range(30)], random.Random(1)).reward

    assert once() == once()


@pytest.mark.parametrize("mode", ["paper", "qos"])
def test_reward_matrices_match_the_scalar_rewards(mode: str) -> None:
    from services.core.reward import RewardWeights, reward_expected
    from services.evaluation.reward_matrix import expected_reward_matrix

    rng = np.random.default_rng(1)
    e, lat, acc = rng.uniform(0, 0.5, (4, 6)), rng.uniform(0, 0.1, (4, 6)), rng.uniform(10, 90, 6)
    w = RewardWeights(qos_penalty=1.5)
    for amin in (None, 50.0):
        m = reward_matrix(e, lat, acc, 0.05, amin, w, mode)
        x = expected_reward_matrix(e, lat, acc, 0.05, amin, 0.07, w, mode)
        for i in range(4):
            for j in range(6):
                kw: dict[str, Any] = {
                    "energy_mj": e[i, j] * 1e3,
                    "latency_ms": lat[i, j] * 1e3,
                    "accuracy": acc[j],
                    "qos_ms": 50.0,
                    "accuracy_min": amin,
                    "weights": w,
                    "mode": mode,
                }
                assert m[i, j] == pytest.approx(reward(**kw))
                assert x[i, j] == pytest.approx(reward_expected(sigma=0.07, **kw))


def test_opt_fast_path_equals_opt_choice() -> None:
    from services.core.policies.baselines import opt_choice

    cfg = EvalConfig(devices=["moto_x_force"], scenarios=["d2"], models=["ssd_mobilenet_v3", "mobilebert"], workers=1)
    w = load_device(cfg, "moto_x_force")
    for m in cfg.models or []:
        for amin in (None, 60.0):
            b = w.block(m, "d2", "test", 40, amin)
            for i in range(b.n):
                c, _ = opt_choice(b.truth_context(i))
                assert b.case.index[c.target.id] == int(b.opt[i])


def test_noise_floor_counts_near_ties() -> None:
    from services.evaluation.scoring import noise_floor

    cfg = EvalConfig(devices=["mi8pro"], scenarios=["s1"], models=["mobilenet_v1"], workers=1)
    cfg.world_sigma = 0.0  # the profiles' world: the near-tie below is a property of the profile
    b = load_device(cfg, "mi8pro").block("mobilenet_v1", "s1", "test", 20)
    nf = noise_floor(b, [range(10), range(10, 20)])
    assert nf["n"] == 20 and 0 <= nf["lt1"] <= nf["lt_half_sigma"] <= nf["lt_sigma"] <= 20
    # mobilenet_v1 on the Mi8Pro: the DSP (~6 ms) vs GPU FP16 at a low DVFS step (~13 ms). Before the
    # phone's base power was charged they were ~6.5 % apart, inside one sigma of noise; the base power
    # over the GPU's longer latency now puts them ~40 % apart: no near-tie at all.
    assert nf["lt_sigma"] == 0 and nf["lt1"] == 0
