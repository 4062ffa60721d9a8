"""The studies' variants: the sweep runs on tuning seeds and the paper's phones only and chooses
leave-one-device-out; the swap rows change only what they name; S' can be the next observed state."""

from __future__ import annotations

import random

import pytest

from services.core.policies.base import DecisionContext
from services.evaluation.config import HELD_OUT_SEEDS, PAPER_DEVICES, EvalConfig
from services.evaluation.contenders import autoscale_policy
from services.evaluation.simulator import NEXT_STATE, run_steps
from services.evaluation.studies import SWAPS, SWEEP, study_variants, sweep_choice, variant_config
from services.evaluation.world import load_device


def _cfg(**kw: object) -> EvalConfig:
    cfg = EvalConfig(devices=[*PAPER_DEVICES, "galaxy_s23"], seeds=list(HELD_OUT_SEEDS))
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_the_sweep_never_sees_held_out_seeds_or_devices() -> None:
    cfg = _cfg(studies=["sweep"])
    variants = study_variants(cfg)
    assert variants[0] == "sweep:default" and len(variants) == 1 + sum(len(v) - 1 for v in SWEEP.values())
    for v in variants:
        vc = variant_config(cfg, v)
        assert vc.seeds == list(cfg.tuning_seeds) and not set(vc.seeds) & set(HELD_OUT_SEEDS)
        assert vc.devices == list(PAPER_DEVICES) and "galaxy_s23" not in vc.devices
        assert "commute" in cfg.scenarios and "commute" not in vc.scenarios
        assert vc.studies == [] and vc.curve_runs == []
    qp = variant_config(cfg, "sweep:qos_penalty=8")
    assert qp.qos_penalty == 8.0 and qp.discount == cfg.discount


def test_sweep_choice_is_leave_one_device_out() -> None:
    """A value that is best on two phones but terrible on the third is chosen when the third is
    held out, and its held-out score is that phone's own."""
    devs = list(PAPER_DEVICES)
    defaults = {k: float(getattr(EvalConfig(), k)) for k in SWEEP}

    def score(e: float) -> dict[str, float]:
        return {"energy_gap_pct": e, "qos_gap_pp": 0.0}

    sweep = {"sweep:default": {d: score(5.0) for d in devs}}
    for k, values in SWEEP.items():
        for v in values:
            if v != defaults[k]:
                sweep[f"sweep:{k}={v:g}"] = {d: score(9.0) for d in devs}
    sweep["sweep:qos_penalty=4"] = {devs[0]: score(1.0), devs[1]: score(1.0), devs[2]: score(50.0)}
    rows = {r["held_out_device"]: r for r in sweep_choice(sweep, devs, defaults)["qos_penalty"]["rotations"]}
    assert rows[devs[2]]["chosen"] == 4.0 and rows[devs[2]]["held_out_score"] == 50.0
    assert rows[devs[0]]["chosen"] == defaults["qos_penalty"]  # tuned on devs[1] (1.0) and devs[2] (50.0)
    assert rows[devs[0]]["tuned_on"] == [devs[1], devs[2]]


def test_swap_rows_change_only_what_they_name() -> None:
    cfg = _cfg(studies=["swap"])
    base = variant_config(cfg, "swap:improved")
    paper = variant_config(cfg, "swap:paper")
    assert (paper.reward_mode, paper.q_init, paper.lr_schedule) == ("paper", "random", "constant")
    assert (base.reward_mode, base.q_init) == (cfg.reward_mode, cfg.q_init)
    one = variant_config(cfg, "swap:paper + Opt-aligned reward")
    assert one.reward_mode == "qos" and one.q_init == "random"
    assert set(SWAPS) >= {"paper with S' = next observed state", "improved + S' = next observed state"}


def test_s_prime_is_the_next_observed_state_when_asked() -> None:
    """With next_state="observed" the update's S' is the next inference's state, not the request's."""
    cfg = EvalConfig(devices=["mi8pro"], scenarios=["d3"], models=["mobilenet_v1"], next_state="observed")
    w = load_device(cfg, "mi8pro")
    b = w.block("mobilenet_v1", "d3", "test", 60)
    seen: list[tuple[int, int]] = []
    policy = autoscale_policy("autoscale", cfg, 1)
    hook = policy._next_state
    assert hook is NEXT_STATE

    def spy(ctx: DecisionContext) -> int:
        s2 = NEXT_STATE(ctx)
        seen.append((ctx.state, s2))
        return s2

    policy._next_state = spy
    run_steps(policy, [(b, i) for i in range(60)], random.Random(0), record=False)
    assert [s2 for _, s2 in seen] == [int(b.states[i + 1]) for i in range(59)] + [int(b.states[59])]
    assert any(s != s2 for s, s2 in seen)  # d3's Wi-Fi crosses the weak bin
    assert NEXT_STATE.value is None
    same = autoscale_policy("autoscale", EvalConfig(), 1)
    assert same._next_state is None


@pytest.mark.parametrize("name", ["sigma0", "streaming"])
def test_world_studies_rerun_the_main_grid(name: str) -> None:
    cfg = _cfg(studies=[name])
    vc = variant_config(cfg, name)
    assert vc.seeds == cfg.seeds and vc.devices == cfg.devices
    assert (vc.world_sigma == 0.0) if name == "sigma0" else vc.streaming
    assert "opt" in vc.policies and "lr" not in vc.policies


def test_each_phone_is_evaluated_with_what_the_recorded_sweep_chose_without_it() -> None:
    """A paper phone gets its leave-one-device-out value (chosen on the other two phones), the
    held-out phone the value best on all three; with use_tuning off the configured values stand."""
    from services.evaluation.tuning import record, tuned_config

    rec = record()
    assert rec is not None and not set(rec["seeds"]) & set(HELD_OUT_SEEDS)
    assert set(rec["devices"]) == set(PAPER_DEVICES)
    cfg = EvalConfig()
    for key, s in rec["settings"].items():
        for r in s["rotations"]:
            assert r["held_out_device"] not in r["tuned_on"]
            assert getattr(tuned_config(cfg, r["held_out_device"]), key) == r["chosen"]
        means = {float(v): sum(d.values()) / len(d) for v, d in s["scores"].items()}
        assert getattr(tuned_config(cfg, "galaxy_s23"), key) == min(means, key=lambda v: (means[v], v))
    off = EvalConfig(use_tuning=False, qos_penalty=3.0)
    assert tuned_config(off, "mi8pro").qos_penalty == 3.0


def test_the_accuracy_target_study_runs_the_default_learner_against_opt() -> None:
    """Fig. 12's study on a small grid: every target gets AutoScale (the prior learner, built with the
    world's profiles), Opt and Edge (CPU FP32), each scored on inferences."""
    from services.evaluation.accuracy_targets import run_accuracy_targets

    cfg = EvalConfig(
        devices=["mi8pro"],
        scenarios=["s1", "s4"],
        models=["mobilenet_v1", "mobilenet_v3", "resnet50"],
        accuracy_targets=[None, 70.0],
        accuracy_runs=3,
        accuracy_test_runs=4,
        curve_runs=[5],
        studies=["accuracy"],
    )
    res = run_accuracy_targets(cfg, "mi8pro")
    assert set(res["targets"]) == {"none", "70"}
    for by_policy in res["targets"].values():
        assert set(by_policy) == {"autoscale", "opt", "edge-cpu-fp32"}
        assert all(p["n"] > 0 for p in by_policy.values())
