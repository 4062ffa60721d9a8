"""The evaluation's variants: the main (held-out) run and the studies that rerun the leave-one-out
grid under another configuration -- the settings sweep (on tuning seeds and the paper's phones
only), the profiles' world (sigma 0), the streaming use case and the swap table.

A variant is a name; ``variant_config`` turns (the main configuration, that name) into the
configuration its folds run, deterministically, so a worker process rebuilds it from the name.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from services.evaluation.config import DYNAMIC, PAPER_DEVICES, STATIC, EvalConfig

# The learner settings that matter (README: "what each setting was tuned on"), the values swept,
# and the fields of EvalConfig they set. The default of each is one of its values.
SWEEP: dict[str, tuple[float, ...]] = {
    "qos_penalty": (1.0, 2.0, 4.0, 8.0),
    "lr_floor": (0.02, 0.05, 0.2),
    "discount": (0.0, 0.1, 0.5),
    "explore_bonus": (0.0, 0.2, 0.5),
}
SWEEP_LABELS = {
    "qos_penalty": "QoS penalty k (reward -E x (1 + k) on a miss)",
    "lr_floor": "learning rate (floor of the 1/(n+1) schedule)",
    "discount": "discount factor",
    "explore_bonus": "exploration bonus c (UCB-style, while exploring)",
}
# The paper's variant as "autoscale" settings (Algorithm 1 + eq. 5), and the swap table's steps:
# each row turns one part of the paper's learner into the improved one's, or the reverse.
PAPER_SETTINGS: dict[str, Any] = {
    "discount": 0.1,  # Algorithm 1's
    "reward_mode": "paper",
    "q_init": "random",
    "lr_schedule": "constant",
    "explore_bonus": 0.0,
    "explore_untried": False,
}
SWAPS: dict[str, dict[str, Any]] = {
    "paper": dict(PAPER_SETTINGS),
    "paper + Opt-aligned reward": {**PAPER_SETTINGS, "reward_mode": "qos"},
    "paper + nearest-state initial values": {**PAPER_SETTINGS, "q_init": "nearest"},
    "paper + visit-count learning rate": {**PAPER_SETTINGS, "lr_schedule": "visits"},
    "paper + try-untried/UCB exploration": {**PAPER_SETTINGS, "explore_bonus": 0.2, "explore_untried": True},
    "paper with S' = next observed state": {**PAPER_SETTINGS, "next_state": "observed"},
    "improved + eq. 5 reward": {"reward_mode": "paper"},
    "improved + random initial values": {"q_init": "random"},
    "improved + constant learning rate": {"lr_schedule": "constant"},
    "improved + S' = next observed state": {"next_state": "observed"},
    "improved": {},
}
_SMALL_POLICIES = ["autoscale", "opt", "edge-cpu-fp32"]


def sweep_variants(cfg: EvalConfig) -> list[str]:
    """One variant per (setting, value), the defaults' point once."""
    out = ["sweep:default"]
    for key, values in SWEEP.items():
        out += [f"sweep:{key}={v:g}" for v in values if not math.isclose(v, float(getattr(cfg, key)))]
    return out


def study_variants(cfg: EvalConfig) -> list[str]:
    """Every variant the configured studies run, besides "main"."""
    out: list[str] = []
    if cfg.study("sweep"):
        out += sweep_variants(cfg)
    if cfg.study("sigma0"):
        out.append("sigma0")
    if cfg.study("streaming"):
        out.append("streaming")
    if cfg.study("swap"):
        out += [f"swap:{k}" for k in SWAPS]
    return out


def variant_config(cfg: EvalConfig, variant: str) -> EvalConfig:
    """The configuration of one variant's folds (its ``seeds`` are the seeds it runs). The sweep's
    never include a held-out seed, phone or trace."""
    if variant == "main":
        return cfg
    lean: dict[str, Any] = {"studies": [], "policies": list(_SMALL_POLICIES), "curve_runs": []}
    # The sweep and the swap table are about the Q-table learner's settings (the prior learner
    # ignores them but qos_penalty): they run it whatever the main grid's learner is.
    table: dict[str, Any] = {"learner": "table"}
    if variant.startswith("sweep:"):
        lean["use_tuning"] = False  # the sweep sets the values it measures
        # Tuning seeds and the paper's phones only: the held-out seeds and devices never steer a setting.
        base = replace(
            cfg,
            seeds=list(cfg.tuning_seeds),
            devices=[d for d in cfg.devices if d in PAPER_DEVICES],
            scenarios=[s for s in cfg.scenarios if s in STATIC or s in DYNAMIC],
        )
        spec = variant.removeprefix("sweep:")
        if spec == "default":
            return replace(base, **lean, **table)
        key, value = spec.split("=")
        return replace(base, **lean, **table, **{key: type(getattr(cfg, key))(float(value))})
    if variant == "sigma0":
        return replace(cfg, **{**lean, "policies": _main_small(cfg)}, world_sigma=0.0)
    if variant == "streaming":
        return replace(cfg, **{**lean, "policies": _main_small(cfg)}, streaming=True)
    if variant.startswith("swap:"):
        row = variant.removeprefix("swap:")
        # The paper's rows keep its published settings (discount 0.1, no bonus); the improved ones are tuned.
        return replace(cfg, **lean, **table, **SWAPS[row], use_tuning=not row.startswith("paper"))
    raise ValueError(f"unknown variant {variant!r}")


def _main_small(cfg: EvalConfig) -> list[str]:
    """The learners and the paper's baselines (no predictors: the studies compare settings, not them)."""
    keep = ("autoscale", "autoscale-paper", "edge-cpu-fp32", "edge-best", "cloud", "connected-edge", "opt")
    return [p for p in cfg.policies if p in keep]


def sweep_choice(
    sweep: dict[str, dict[str, dict[str, float]]], devices: list[str], defaults: dict[str, float]
) -> dict[str, Any]:
    """Leave-one-device-out choice of every swept setting.

    ``sweep``: variant -> device -> {"energy_gap_pct", "qos_gap_pp"} (cold, tuning seeds). For each
    paper phone held out, each setting's value minimising the mean over the other phones of
    energy gap (%) + QoS gap (pp); the held-out phone's own score at that value is reported.
    ``defaults``: each setting's configured value (its point is the "sweep:default" variant)."""
    out: dict[str, Any] = {}
    for key, values in SWEEP.items():
        points = {v: "sweep:default" if math.isclose(v, defaults[key]) else f"sweep:{key}={v:g}" for v in values}
        points = {v: n for v, n in points.items() if n in sweep}
        rows = []
        for held in devices:
            tune = [d for d in devices if d != held]
            score = {v: _mean_score(sweep[name], tune) for v, name in points.items()}
            if not score:
                continue
            best = min(score, key=lambda v: (score[v], v))
            name = points[best]
            rows.append(
                {
                    "held_out_device": held,
                    "tuned_on": tune,
                    "chosen": best,
                    "tuning_score": score[best],
                    "held_out_score": _mean_score(sweep.get(name, {}), [held]),
                }
            )
        out[key] = {
            "values": list(values),
            "default": defaults[key],
            "scores": {f"{v:g}": _per_device(sweep[n]) for v, n in points.items()},
            "rotations": rows,
        }
    return out


def _mean_score(by_device: dict[str, dict[str, float]], devices: list[str]) -> float:
    xs = [by_device[d]["energy_gap_pct"] + by_device[d]["qos_gap_pp"] for d in devices if d in by_device]
    return sum(xs) / len(xs) if xs else math.inf


def _per_device(by_device: dict[str, dict[str, float]]) -> dict[str, float]:
    return {d: v["energy_gap_pct"] + v["qos_gap_pp"] for d, v in by_device.items()}
