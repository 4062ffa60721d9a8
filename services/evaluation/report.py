"""Headline numbers of an evaluation and the report.md that sets them beside the paper's.

PPW (performance per watt) = inferences per joule = 1 / (phone energy per inference). "PPW
normalised to Edge (CPU FP32)" of a policy on one (device, scenario, network) is
E_edge-cpu-fp32 / E_policy; averages are arithmetic means over those cases, as in Figs. 9 and 11.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

STATIC = ("s1", "s2", "s3", "s4", "s5")
DYNAMIC = ("d1", "d2", "d3", "d4")
BASELINES = ("edge-cpu-fp32", "edge-best", "cloud", "connected-edge")
PREDICTORS = ("lr", "svr", "svm", "knn", "bo", "linucb")
VARIANTS = ("autoscale", "autoscale-paper")  # as configured / as published
VARIANT_LABELS = {"autoscale": "AutoScale (improved)", "autoscale-paper": "AutoScale (paper)"}
CATEGORY_LABELS = {
    "edge-cpu-fp32": "Edge (CPU FP32) w/DVFS",
    "edge-cpu-int8": "Edge (CPU INT8) w/DVFS",
    "edge-gpu-fp32": "Edge (GPU FP32) w/DVFS",
    "edge-gpu-fp16": "Edge (GPU FP16) w/DVFS",
    "edge-dsp-int8": "Edge (DSP)",
    "cloud": "Cloud",
    "peer": "Connected Edge",
}

# The paper's numbers (Sec. VI), for the side-by-side table.
PAPER = {
    "static_improvement": {"edge-cpu-fp32": 9.8, "edge-best": 2.3, "cloud": 1.6, "connected-edge": 2.7},
    "dynamic_improvement": {"edge-cpu-fp32": 10.7, "edge-best": 2.2, "cloud": 1.4, "connected-edge": 3.2},
    "energy_gap_to_opt_pct": 3.2,
    "qos_gap_to_opt_pp": 1.9,
    "prediction_accuracy_pct": 97.9,
    "runs_to_converge": "40-50",
    "transfer_saving_pct": 21.2,
    "fig13": {  # device -> category -> (Opt %, AutoScale %)
        "mi8pro": {
            "edge-cpu-fp32": (0.0, 0.1),
            "edge-cpu-int8": (25.0, 15.0),
            "edge-gpu-fp32": (0.0, 0.2),
            "edge-gpu-fp16": (30.0, 42.4),
            "edge-dsp-int8": (17.5, 14.9),
            "cloud": (27.5, 27.3),
            "peer": (0.0, 0.1),
        },
        "galaxy_s10e": {
            "edge-cpu-fp32": (0.0, 0.1),
            "edge-cpu-int8": (25.0, 20.9),
            "edge-gpu-fp32": (0.0, 0.8),
            "edge-gpu-fp16": (47.5, 53.4),
            "edge-dsp-int8": (0.0, 0.0),
            "cloud": (27.5, 24.7),
            "peer": (0.0, 0.1),
        },
        "moto_x_force": {
            "edge-cpu-fp32": (0.0, 0.1),
            "edge-cpu-int8": (5.0, 4.2),
            "edge-gpu-fp32": (0.0, 0.2),
            "edge-gpu-fp16": (2.5, 3.4),
            "edge-dsp-int8": (0.0, 0.0),
            "cloud": (50.0, 49.8),
            "peer": (42.5, 42.3),
        },
    },
}
# Targets this implementation reports against (computed, never assumed).
TARGETS = {"energy_gap_pct": 1.0, "qos_gap_pp": 1.0, "prediction_accuracy_pct": 99.0, "runs_to_converge": 30}


def _cases(res: dict[str, Any], scenarios: Iterable[str]) -> Iterable[tuple[str, str, str, dict[str, Any]]]:
    wanted = set(scenarios)
    for dev, by_s in res["per_case"].items():
        for s, by_m in by_s.items():
            if s in wanted:
                for m, pol in by_m.items():
                    yield dev, s, m, pol


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else math.nan


def norm_ppw(pol: dict[str, Any], name: str) -> float:
    """E_edge-cpu-fp32 / E_policy for one case (NaN when either is missing)."""
    if name not in pol or "edge-cpu-fp32" not in pol:
        return math.nan
    e = pol[name]["energy_mj"]
    return pol["edge-cpu-fp32"]["energy_mj"] / e if e > 0 else math.nan


def group_stats(
    res: dict[str, Any], scenarios: Iterable[str], device: str | None = None
) -> dict[str, dict[str, float]]:
    """Per policy: mean normalised PPW, QoS violation ratio, energy, prediction accuracy."""
    scenarios = list(scenarios)
    acc: dict[str, dict[str, list[float]]] = {}
    for dev, _s, _m, pol in _cases(res, scenarios):
        if device is not None and dev != device:
            continue
        for name, v in pol.items():
            d = acc.setdefault(
                name,
                {"ppw": [], "qos": [], "energy": [], "pred": [], "cat": [], "roa": [], "rio": [], "tie": [], "n": []},
            )
            d["ppw"].append(norm_ppw(pol, name))
            d["qos"].append(v["qos_violation"])
            d["energy"].append(v["energy_mj"])
            d["pred"].append(v["prediction_accuracy"] * v["n"])
            d["cat"].append(v["category_accuracy"] * v["n"])
            d["roa"].append(v.get("reward_oracle_accuracy", math.nan) * v["n"])
            d["rio"].append(v.get("reward_oracle_is_opt", math.nan) * v["n"])
            d["tie"].append(v.get("tie_accuracy", math.nan) * v["n"])
            d["n"].append(v["n"])
    out = {}
    for name, d in acc.items():
        n = sum(d["n"]) or 1
        ppw = [x for x in d["ppw"] if not math.isnan(x)]
        out[name] = {
            "ppw_norm": _mean(ppw),
            "qos_violation": _mean(d["qos"]),
            "energy_mj": _mean(d["energy"]),
            "prediction_accuracy": sum(d["pred"]) / n,
            "category_accuracy": sum(d["cat"]) / n,
            "reward_oracle_accuracy": sum(d["roa"]) / n,
            "reward_oracle_is_opt": sum(d["rio"]) / n,
            "tie_accuracy": sum(d["tie"]) / n,
            "cases": len(d["n"]),
        }
    return out


def gaps_to_opt(res: dict[str, Any], scenarios: Iterable[str], policy: str = "autoscale") -> dict[str, float]:
    """Mean over (device, scenario) of the energy gap (sum over networks) and the QoS-violation gap."""
    e_gaps, q_gaps = [], []
    per_ds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for dev, s, _m, pol in _cases(res, scenarios):
        if policy in pol and "opt" in pol:
            per_ds.setdefault((dev, s), []).append(pol)
    for pols in per_ds.values():
        e_p = sum(p[policy]["energy_mj"] * p[policy]["n"] for p in pols)
        e_o = sum(p["opt"]["energy_mj"] * p["opt"]["n"] for p in pols)
        n = sum(p[policy]["n"] for p in pols)
        q_p = sum(p[policy]["qos_violation"] * p[policy]["n"] for p in pols) / n
        q_o = sum(p["opt"]["qos_violation"] * p["opt"]["n"] for p in pols) / n
        e_gaps.append(100.0 * (e_p / e_o - 1.0))
        q_gaps.append(100.0 * (q_p - q_o))
    return {"energy_gap_pct": _mean(e_gaps), "qos_gap_pp": _mean(q_gaps), "cases": len(e_gaps)}


def selection_shares(
    res: dict[str, Any], scenarios: Iterable[str], policy: str = "autoscale"
) -> dict[str, dict[str, dict[str, float]]]:
    """Fig. 13: per device, share (%) of each target category for Opt and ``policy``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for dev, _s, _m, pol in _cases(res, scenarios):
        if policy not in pol:
            continue
        d = out.setdefault(dev, {"opt": {}, policy: {}, "_n": {"n": 0.0}})
        v = pol[policy]
        d["_n"]["n"] += v["n"]
        for c, k in v["opt_choices"].items():
            d["opt"][c] = d["opt"].get(c, 0.0) + k
        for c, k in v["choices"].items():
            d[policy][c] = d[policy].get(c, 0.0) + k
    for d in out.values():
        n = d.pop("_n")["n"] or 1.0
        for who in list(d):
            d[who] = {c: 100.0 * d[who].get(c, 0.0) / n for c in CATEGORY_LABELS}
    return out


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    devices = list(res["per_case"])
    scen = {s for by_s in res["per_case"].values() for s in by_s}
    static = [s for s in STATIC if s in scen]
    dynamic = [s for s in DYNAMIC if s in scen]
    others = sorted(scen - set(STATIC) - set(DYNAMIC))
    static = static + others  # users' own scenarios count as static unless named d*
    out: dict[str, Any] = {"static_scenarios": static, "dynamic_scenarios": dynamic}
    for label, group in (("static", static), ("dynamic", dynamic), ("all", static + dynamic)):
        if not group:
            continue
        g = group_stats(res, group)
        out[label] = {
            "policies": g,
            "per_device": {d: group_stats(res, group, d) for d in devices},
            "gaps": gaps_to_opt(res, group),
            "gaps_by_policy": {v: gaps_to_opt(res, group, v) for v in VARIANTS if v in g},
            "improvement_by_policy": {},
        }
        for v in VARIANTS:
            if v not in g:
                continue
            a = g[v].get("ppw_norm", math.nan)
            out[label]["improvement_by_policy"][v] = {
                b: a / g[b]["ppw_norm"] for b in BASELINES if b in g and g[b]["ppw_norm"] > 0
            }
        out[label]["improvement"] = out[label]["improvement_by_policy"].get("autoscale", {})
    out["selection_static"] = selection_shares(res, static or dynamic)
    out["selection_dynamic"] = selection_shares(res, dynamic) if dynamic else {}
    return out


# ----------------------------------------------------------------------------- markdown


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _diff(ours: float | None, paper: float, fmt: str = "{:+.2f}") -> str:
    if ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return "n/a"
    return fmt.format(ours - paper)


def _status(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def transfer_saving(res: dict[str, Any], variant: str | None = None) -> dict[str, Any]:
    conv = res.get("convergence") or {}
    if variant is not None:
        conv = (conv.get("variants") or {}).get(variant) or {}
    rows = {}
    for dev, t in (conv.get("transfer") or {}).items():
        s = conv["scratch"].get(dev, {}).get("runs_to_converge")
        r = t.get("runs_to_converge")
        saving = None
        if s and r is not None:
            saving = 100.0 * (s - r) / s
        rows[dev] = {"scratch": s, "transfer": r, "saving_pct": saving}
    savings = [v["saving_pct"] for v in rows.values() if v["saving_pct"] is not None]
    return {"per_device": rows, "mean_saving_pct": _mean(savings) if savings else None}


def _pct(x: float | None, fmt: str = "{:.1f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(100.0 * x)


def _rtc(v: dict[str, Any], key: str = "runs_to_converge") -> str:
    r = v.get(key)
    return str(r) if r is not None else f"not within {len(v.get('gap', []))}"


def variant_headlines(res: dict[str, Any], variant: str) -> dict[str, Any]:
    """The headline numbers of one AutoScale variant (None where it was not evaluated)."""
    s = res["summary"]
    allg = s.get("all", {})
    pa = allg.get("policies", {}).get(variant)
    if not pa:
        return {}
    gaps = allg.get("gaps_by_policy", {}).get(variant, {})
    cold = (res.get("summary_cold") or {}).get("all", {})
    cgaps = cold.get("gaps_by_policy", {}).get(variant, {})
    cpa = cold.get("policies", {}).get(variant, {})
    conv = ((res.get("convergence") or {}).get("variants") or {}).get(variant) or {}
    scratch = conv.get("scratch") or {}
    rtc = [v.get("runs_to_converge") for v in scratch.values()]
    out = {
        "energy_gap_pct": gaps.get("energy_gap_pct"),
        "qos_gap_pp": gaps.get("qos_gap_pp"),
        "energy_gap_static_pct": s.get("static", {}).get("gaps_by_policy", {}).get(variant, {}).get("energy_gap_pct"),
        "energy_gap_dynamic_pct": s.get("dynamic", {}).get("gaps_by_policy", {}).get(variant, {}).get("energy_gap_pct"),
        "qos_gap_static_pp": s.get("static", {}).get("gaps_by_policy", {}).get(variant, {}).get("qos_gap_pp"),
        "qos_gap_dynamic_pp": s.get("dynamic", {}).get("gaps_by_policy", {}).get(variant, {}).get("qos_gap_pp"),
        "cold_energy_gap_pct": cgaps.get("energy_gap_pct"),
        "cold_qos_gap_pp": cgaps.get("qos_gap_pp"),
        "prediction_accuracy": pa["prediction_accuracy"],
        "category_accuracy": pa["category_accuracy"],
        "tie_accuracy": pa.get("tie_accuracy"),
        "cold_prediction_accuracy": cpa.get("prediction_accuracy"),
        "reward_oracle_accuracy": pa.get("reward_oracle_accuracy"),
        "reward_oracle_is_opt": pa.get("reward_oracle_is_opt"),
        "runs_to_converge": {d: v.get("runs_to_converge") for d, v in scratch.items()},
        "runs_to_converge_mean": (_mean([float(r) for r in rtc]) if rtc and all(r is not None for r in rtc) else None),
        "transfer_saving_pct": transfer_saving(res, variant).get("mean_saving_pct"),
    }
    ee = eo = n = qm = 0.0
    for _dev, _s, _m, pol in _cases(res, s.get("static_scenarios", []) + s.get("dynamic_scenarios", [])):
        v = pol.get(variant)
        if v and "expected_energy_mj" in v:
            ee += v["expected_energy_mj"] * v["n"]
            eo += v["opt_expected_energy_mj"] * v["n"]
            qm += v.get("qos_expected_miss", 0.0) * v["n"]
            n += v["n"]
    out["expected_energy_excess_pct"] = 100.0 * (ee / eo - 1.0) if eo > 0 else None
    out["qos_expected_miss"] = qm / n if n else None
    return out


def _ok(x: float | None, pred: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else ("met" if pred(x) else "NOT met")


def render(res: dict[str, Any], figures: dict[str, str]) -> str:
    s = res["summary"]
    cfg = res["config"]
    L: list[str] = []
    L.append("# AutoScale evaluation report\n")
    L.append(
        f"Devices: {', '.join(res['per_case'])}. Scenarios: {', '.join(s['static_scenarios'] + s['dynamic_scenarios'])}. "
        f"Networks: {', '.join(res['models'])}. Seed {cfg['seed']}; {cfg['runs']} training runs per (network, scenario), "
        f"{cfg['test_runs']} test inferences per (held-out network, scenario) "
        f"(predictors: {cfg['predictor_samples']} training samples per fold, {cfg['predictor_test_runs']} test inferences); "
        f"outcome noise: lognormal sigma {cfg['noise_sigma']}.\n"
    )
    t = res["timing"]
    cpu = t.get("cpu_s")
    L.append(
        f"Total time **{t['wall_s']:.1f} s** wall with {cfg['workers']} worker process(es), "
        f"**{_f(cpu, '{:.0f}')} CPU-seconds** (this process and its workers; "
        f"{_f(None if cpu is None else cpu / max(cfg['workers'], 1), '{:.0f}')} s if the {cfg['workers']} cores were otherwise "
        f"idle); {t['decisions']:,} simulated decisions in the leave-one-out experiment, "
        f"**{t['decisions_per_s']:,.0f} decisions/s** overall.\n"
    )
    variants = [v for v in VARIANTS if v in s.get("all", {}).get("policies", {})]
    L.append("## The two AutoScale variants\n")
    L.append(
        "- **AutoScale (paper)** (`autoscale-paper`): Algorithm 1 and eq. 5 exactly as published -- random initial Q "
        "values in [0, 1), learning rate 0.9, discount 0.1, epsilon-greedy (0.1), reward eq. 5 in mJ / ms with "
        "alpha = beta = 0.1.\n"
        f"- **AutoScale (improved)** (`autoscale`, as configured here: reward `{cfg.get('reward_mode')}`, "
        f"q_init `{cfg.get('q_init')}`, lr_schedule `{cfg.get('lr_schedule')}`, explore_bonus {cfg.get('explore_bonus')}, "
        f"explore_untried {cfg.get('explore_untried')}): the same tabular Q-learner over the same Table I states and "
        'actions with (1) the reward aligned with Opt (`reward_mode="qos"`: -E within QoS, -E x (1 + '
        f"{cfg.get('qos_penalty', 2.0):g}) on a QoS miss; no bonus for being slower), (2) initial values borrowed from the "
        'nearest state in Table I bin space that holds the action, rescaled (`q_init="nearest"`; the paper\'s transfer '
        "learning applied across states), (3) a visit-count learning rate 1/(n+1) floored at "
        f'{cfg.get("lr_floor", 0.05)} (`lr_schedule="visits"`: averages the measurement noise out), (4) while exploring '
        "(epsilon > 0), every action of a state is tried once before any is retried, and a UCB-style bonus "
        "|Q| x c x sqrt(ln N / (n+1)) makes rarely tried actions retried -- exploitation (epsilon 0) ranks Q alone. "
        "Every other learner (LinUCB, BO, SVM/KNN labels) gets the same reward as the improved AutoScale, as in the "
        "decider, which computes one reward per inference.\n"
        "- The decider's defaults (`services/common/settings.py`) are the improved variant, because it is better on "
        "every headline metric below; `reward_mode=paper`, `q_init=random`, `lr_schedule=constant`, "
        "`explore_bonus=0`, `explore_untried=false` restore Algorithm 1 as published.\n"
    )
    if cfg.get("learner") == "prior":
        L.append(
            "- **In this run `autoscale` is the prior learner** (`learner=prior`, the default; "
            "`services/core/policies/prior`): Q-learning of a log-latency residual per (state, action) over the "
            "device profile's cost model (eqs. 1-4), corrected online per target family and per (network, family); "
            "what is labelled *improved* below is that learner. `--learner table` evaluates the table learner above.\n"
        )
    L.append("## Definitions\n")
    L.append(
        "- **PPW** (performance per watt) = inferences per joule = 1 / (the phone's energy per inference, eqs. 1-4). "
        "*PPW normalised to Edge (CPU FP32)* for one (device, scenario, network) = E(Edge CPU FP32) / E(policy); "
        "averages are arithmetic means over those cases. *Improvement over X* = mean normalised PPW of AutoScale / that of X.\n"
        "- **Energy gap to Opt** = mean over (device, scenario) of (sum of AutoScale's measured energy over the networks / Opt's - 1).\n"
        "- **QoS-violation gap** = mean over (device, scenario) of (AutoScale's share of inferences with measured latency "
        ">= the QoS target - Opt's share), in percentage points (QoS 50 ms vision, 100 ms MobileBERT).\n"
        "- **Prediction accuracy** = share of test decisions equal to Opt's (exact action incl. DVFS step); "
        "*category accuracy* counts a match at Fig. 13's granularity (location x processor x precision). "
        "*Tie-rule accuracy* (a separate, looser metric, never a replacement): the decision is Opt's, or its expected energy "
        "is within 1 % of Opt's and it meets QoS in expectation whenever Opt's does -- the paper's remark that AutoScale "
        '"mis-predicts only when the energy difference is less than 1 %".\n'
        "- **Opt** = the paper's oracle (fn. 8): min expected energy meeting QoS and accuracy on the noise-free model.\n"
        "- **Perfect learner of a reward** = the argmax of that reward's expectation under the outcome noise (closed form, "
        "`services.core.reward.reward_expected`): the best any learner of that reward can do; *its agreement with Opt* is "
        "the ceiling that reward allows.\n"
        "- Methodology: leave-one-out across the networks (train on nine, test the tenth) per device. Per scenario the "
        f"held-out network is measured in two windows of {cfg['test_runs']} inferences: *cold start*, right after the "
        f"leave-one-out training, and *adapted*, after {cfg.get('adapt_runs', 0)} further online inferences in which "
        "AutoScale keeps learning (epsilon 0.1; LinUCB and the static-best baselines keep learning too; LR/SVR/SVM/KNN/BO "
        "are trained offline on profiling samples and are not refitted). Both windows exploit (epsilon 0). "
        "Unless marked *cold start*, numbers are from the adapted window.\n"
    )

    # --- headline table ---------------------------------------------------------------------
    H = {v: variant_headlines(res, v) for v in variants}
    L.append("## Headline numbers\n")
    cols = " | ".join(VARIANT_LABELS[v] for v in variants)
    L.append(
        f"| metric | {cols} | paper | target | status ({' / '.join(VARIANT_LABELS[v].split(' ')[1] for v in variants)}) |"
    )
    L.append("|---|" + "---|" * len(variants) + "---|---|---|")

    def row(label: str, key: str, fmt: Any, paper: str, target: str, pred: Any | None) -> None:
        cells = [fmt(H[v].get(key)) for v in variants]
        status = " / ".join(_ok(H[v].get(key), pred) for v in variants) if pred else "-"
        L.append(f"| {label} | " + " | ".join(cells) + f" | {paper} | {target} | {status} |")

    pctf = lambda x: f"{_f(x)} %"  # noqa: E731
    ppf = lambda x: f"{_f(x)} pp"  # noqa: E731
    accf = lambda x: f"{_pct(x)} %"  # noqa: E731
    row(
        "energy gap to Opt (all scenarios)",
        "energy_gap_pct",
        pctf,
        f"{PAPER['energy_gap_to_opt_pct']} %",
        f"<= {TARGETS['energy_gap_pct']} % (abs.)",
        lambda x: abs(x) <= TARGETS["energy_gap_pct"],
    )
    row(
        "QoS-violation gap to Opt (all scenarios)",
        "qos_gap_pp",
        ppf,
        f"{PAPER['qos_gap_to_opt_pp']} pp",
        f"<= {TARGETS['qos_gap_pp']} pp",
        lambda x: x <= TARGETS["qos_gap_pp"],
    )
    row(
        "prediction accuracy (exact action)",
        "prediction_accuracy",
        accf,
        f"{PAPER['prediction_accuracy_pct']} %",
        f">= {TARGETS['prediction_accuracy_pct']} %",
        lambda x: 100 * x >= TARGETS["prediction_accuracy_pct"],
    )
    L.append(
        "| runs to converge (from scratch; definition below) | "
        + " | ".join(
            ", ".join(
                f"{d}: {r if r is not None else 'not within ' + str(cfg.get('convergence_runs', 100))}"
                for d, r in (H[v].get("runs_to_converge") or {}).items()
            )
            or "n/a"
            for v in variants
        )
        + f" | {PAPER['runs_to_converge']} | <= {TARGETS['runs_to_converge']} | "
        + " / ".join(
            (
                "n/a"
                if not H[v].get("runs_to_converge")
                else (
                    "met"
                    if all(
                        r is not None and r <= TARGETS["runs_to_converge"] for r in H[v]["runs_to_converge"].values()
                    )
                    else "NOT met"
                )
            )
            for v in variants
        )
        + " |"
    )
    row("energy gap, static scenarios", "energy_gap_static_pct", pctf, f"{PAPER['energy_gap_to_opt_pct']} %", "-", None)
    row("energy gap, dynamic scenarios", "energy_gap_dynamic_pct", pctf, "-", "-", None)
    row("QoS-violation gap, static", "qos_gap_static_pp", ppf, "-", "-", None)
    row("QoS-violation gap, dynamic", "qos_gap_dynamic_pp", ppf, "-", "-", None)
    row(
        f"energy gap, cold start (first {cfg['test_runs']} test inferences)",
        "cold_energy_gap_pct",
        pctf,
        "-",
        "-",
        None,
    )
    row("QoS-violation gap, cold start", "cold_qos_gap_pp", ppf, "-", "-", None)
    row("prediction accuracy, cold start (exact)", "cold_prediction_accuracy", accf, "-", "-", None)
    row(
        "prediction accuracy (Fig. 13 category)",
        "category_accuracy",
        accf,
        f"{PAPER['prediction_accuracy_pct']} %",
        "-",
        None,
    )
    row(
        "tie-rule accuracy (Opt, or within 1 % of its energy; separate metric)",
        "tie_accuracy",
        accf,
        "97.9 % (the paper's misses are all < 1 %)",
        "-",
        None,
    )
    row("decisions = the perfect learner of its own reward", "reward_oracle_accuracy", accf, "-", "-", None)
    row("ceiling: perfect learner of its reward = Opt", "reward_oracle_is_opt", accf, "-", "-", None)
    row(
        "transfer-learning saving (runs to converge)",
        "transfer_saving_pct",
        lambda x: "n/a (did not converge)" if x is None else f"{_f(x, '{:.1f}')} %",
        f"{PAPER['transfer_saving_pct']} %",
        "-",
        None,
    )

    L.append("\n### Improvement over the baselines (PPW ratio)\n")
    L.append("*ours* = AutoScale as configured (improved); the last column is AutoScale (paper).\n")
    for label, key in (("static", "static_improvement"), ("dynamic", "dynamic_improvement")):
        g = s.get(label)
        if not g:
            continue
        L.append(f"\n| AutoScale vs | ours ({label}) | paper | difference | AutoScale (paper) |\n|---|---|---|---|---|")
        for b, pv in PAPER[key].items():
            o = g["improvement_by_policy"].get("autoscale", {}).get(b)
            op = g["improvement_by_policy"].get("autoscale-paper", {}).get(b)
            L.append(f"| {b} | {_f(o)}x | {pv}x | {_diff(o, pv)}x | {_f(op)}x |")

    L.append("\n## Why the remaining targets are out of reach\n")
    L += explain(res)

    L.append("\n## Per-policy averages\n")
    for label in ("static", "dynamic"):
        g = s.get(label)
        if not g:
            continue
        L.append(f"\n### {label.capitalize()} scenarios ({', '.join(s[label + '_scenarios'])})\n")
        L.append(
            "| policy | PPW / Edge CPU FP32 | QoS violation | energy/inference | prediction acc. | category acc. | tie-rule acc. |\n|---|---|---|---|---|---|---|"
        )
        for name, v in sorted(
            g["policies"].items(), key=lambda kv: -kv[1]["ppw_norm"] if not math.isnan(kv[1]["ppw_norm"]) else 0
        ):
            L.append(
                f"| {name} | {_f(v['ppw_norm'])}x | {100 * v['qos_violation']:.1f} % | {v['energy_mj']:.1f} mJ | "
                f"{100 * v['prediction_accuracy']:.1f} % | {100 * v['category_accuracy']:.1f} % | "
                f"{_pct(v.get('tie_accuracy'))} % |"
            )
        for vname in variants:
            gp = g["gaps_by_policy"].get(vname, {})
            L.append(
                f"\n{VARIANT_LABELS[vname]} vs Opt here: energy gap {_f(gp.get('energy_gap_pct'))} %, "
                f"QoS-violation gap {_f(gp.get('qos_gap_pp'))} pp."
            )

    L.append("\n## Target selection (Fig. 13, static scenarios, AutoScale as configured)\n")
    sel = s.get("selection_static", {})
    if sel:
        devs = list(sel)
        L.append("| target | " + " | ".join(f"{d} Opt | {d} AutoScale | paper Opt / AutoScale" for d in devs) + " |")
        L.append("|---|" + "---|---|---|" * len(devs))
        for c, lab in CATEGORY_LABELS.items():
            cells = []
            for d in devs:
                po = PAPER["fig13"].get(d, {}).get(c)
                cells.append(
                    f"{sel[d]['opt'][c]:.1f} % | {sel[d]['autoscale'][c]:.1f} % | "
                    + (f"{po[0]} / {po[1]} %" if po else "-")
                )
            L.append(f"| {lab} | " + " | ".join(cells) + " |")

    if res.get("accuracy_targets"):
        L.append("\n## Accuracy targets (Fig. 12, static scenarios, AutoScale as configured)\n")
        ref = {t: m for t, m in (res.get("accuracy_refused") or {}).items() if m}
        if ref:
            L.append(
                "Requests no target can satisfy are refused by the decider (422) and left out: "
                + "; ".join(f"target {t} %: {', '.join(m)}" for t, m in ref.items())
                + ".\n"
            )
        L.append(
            "| device | target | AutoScale PPW / CPU FP32 | Opt PPW / CPU FP32 | AutoScale QoS viol. | Opt QoS viol. | AutoScale accuracy |\n|---|---|---|---|---|---|---|"
        )
        for dev, by_t in res["accuracy_targets"].items():
            for tgt, pol in by_t.items():
                cpu_e = pol["edge-cpu-fp32"]["energy_mj"]
                L.append(
                    f"| {dev} | {tgt} | {cpu_e / pol['autoscale']['energy_mj']:.2f}x | {cpu_e / pol['opt']['energy_mj']:.2f}x | "
                    f"{100 * pol['autoscale']['qos_violation']:.1f} % | {100 * pol['opt']['qos_violation']:.1f} % | "
                    f"{pol['autoscale']['accuracy']:.1f} % |"
                )
    conv = res.get("convergence") or {}
    if conv.get("variants"):
        L.append("\n## Convergence and transfer (Fig. 14)\n")
        L.append(
            f"Setting: every (network, scenario) of {', '.join(conv['scenarios'])} learnt from scratch in parallel, one "
            "inference each per run (epsilon 0.1), on a fresh table per device. After each run the action AutoScale "
            "would *exploit* now (epsilon 0) in every (network, scenario) is scored on the noise-free model against Opt: "
            "the *energy gap* (its expected energy summed over the blocks / Opt's - 1) and the *QoS misses* (share of "
            "blocks whose exploited action misses QoS in expectation while Opt's meets it).\n\n"
            f"**Runs to converge** = the first run from which the 5-run trailing averages of both stay within "
            f"{100 * conv['tolerance']:.0f} % (|energy gap| <= {100 * conv['tolerance']:.0f} %, QoS misses <= "
            f"{100 * conv['tolerance']:.0f} % of the blocks) until the last run ({cfg.get('convergence_runs', 100)}). "
            "*Strict*: the same without the averaging. *Reward*: the 5-run average of the exploited actions' expected-reward "
            "shortfall vs the perfect learner of the variant's own reward stays within the tolerance. *Reward curve*: the "
            "paper's Fig. 14 notion -- the 5-run average of the measured reward (exploration included) stays within the "
            "tolerance of its final level.\n"
        )
        L.append(
            "| variant | device | runs to converge | strict | reward | reward curve | with transfer from "
            f"{conv.get('source')} | saving |\n|---|---|---|---|---|---|---|---|"
        )
        for vname, vv in conv["variants"].items():
            ts = transfer_saving(res, vname)
            for dev, v in vv["scratch"].items():
                tr = vv.get("transfer", {}).get(dev)
                saving = ts["per_device"].get(dev, {}).get("saving_pct")
                L.append(
                    f"| {VARIANT_LABELS.get(vname, vname)} | {dev} | {_rtc(v)} | {_rtc(v, 'runs_to_converge_strict')} | "
                    f"{_rtc(v, 'runs_to_converge_reward')} | {_rtc(v, 'reward_stable_run')} | "
                    f"{_rtc(tr) if tr else '(source)'} | {_f(saving, '{:.1f}') + ' %' if saving is not None else '-'} |"
                )

    L.append("\n## Figures\n")
    for key, path in figures.items():
        L.append(f"- {key}: ![{key}]({path})")
    L.append("\n## Notes on the paper's ratios\n")
    L += notes(res)
    return "\n".join(L) + "\n"


def _n_to_order(diff: float, sigma: float, p: float = 0.9) -> float:
    """Measurements of each of two targets ``diff`` apart (relative) needed to order their sample
    means correctly with probability ``p`` under lognormal noise ``sigma``."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(p)
    return 2.0 * (z * sigma / diff) ** 2


def explain(res: dict[str, Any]) -> list[str]:
    """Why a target is missed, with numbers (and what bounds it)."""
    s = res["summary"]
    cfg = res["config"]
    out: list[str] = []
    sig = cfg["noise_sigma"]
    nf = res.get("noise_floor") or {}
    tot = {k: sum(v.get(k, 0) for v in nf.values()) for k in ("n", "lt1", "lt_half_sigma", "lt_sigma")}
    H = {v: variant_headlines(res, v) for v in VARIANTS if v in s.get("all", {}).get("policies", {})}
    imp, pap = H.get("autoscale", {}), H.get("autoscale-paper", {})
    if imp:
        out.append(
            f"- **Prediction accuracy >= {TARGETS['prediction_accuracy_pct']} % (exact action) is not reachable with "
            f"{100 * sig:.0f} % measurement noise.** Opt is chosen on the noise-free model; a learner only sees noisy "
            f"measurements. On the measured test inferences Opt's runner-up (the next cheapest target in Opt's own "
            f"feasible set) is within 1 % of Opt's energy in {_pct(tot['lt1'] / tot['n'] if tot['n'] else None)} % of "
            f"them, within {100 * sig / 2:.1f} % in {_pct(tot['lt_half_sigma'] / tot['n'] if tot['n'] else None)} % and "
            f"within one noise sigma ({100 * sig:.0f} %) in {_pct(tot['lt_sigma'] / tot['n'] if tot['n'] else None)} %: "
            f"adjacent DVFS steps differ by 1-3 %, and ordering two targets 2 % apart correctly 9 times out of 10 at "
            f"{100 * sig:.0f} % noise takes ~{_n_to_order(0.02, sig):.0f} measurements of each, while a state sees ~150 "
            "inferences spread over ~66 actions before the adapted window. Even a *perfect* learner of each reward "
            "(the argmax of its expectation under the noise) "
            f"agrees with Opt in only {_pct(imp.get('reward_oracle_is_opt'))} % of the decisions with the Opt-aligned "
            f"reward and {_pct(pap.get('reward_oracle_is_opt'))} % with eq. 5: targets whose expected latency sits just "
            "under the QoS budget (Opt's picks) miss it often under noise, and ones just over it often meet it. "
            f"AutoScale (improved) reaches {_pct(imp.get('prediction_accuracy'))} % exact, "
            f"{_pct(imp.get('tie_accuracy'))} % by the 1 % tie rule, and picks the perfect learner's action in "
            f"{_pct(imp.get('reward_oracle_accuracy'))} % of the decisions (the paper variant: "
            f"{_pct(pap.get('prediction_accuracy'))} % / {_pct(pap.get('tie_accuracy'))} % / "
            f"{_pct(pap.get('reward_oracle_accuracy'))} %). The paper's 97.9 % is consistent with its own remark that "
            "every miss was within 1 % of Opt's energy, i.e. with a measurement error well below the spacing of the "
            "actions."
        )
    if pap:
        out.append(
            f"- **Eq. 5 as published cannot match Opt** (AutoScale (paper): energy gap {_f(pap.get('energy_gap_pct'))} %, "
            f"QoS gap {_f(pap.get('qos_gap_pp'))} pp): with energy in mJ and latency in ms, alpha = 0.1 makes a QoS miss "
            "cost at most alpha x QoS = 5 mJ (10 mJ for MobileBERT) of reward, so eq. 5 prefers a violating target "
            "whenever it saves more than that, and it pays +0.1 per ms of slack, so it favours slower DVFS steps than "
            "min-energy Opt. Its random initial values in [0, 1) are optimistic against rewards of -10 .. -1,000s, so "
            "a state never seen (8 of the 10 networks share no Table I NN bins with any other: leave-one-out lands them "
            f"in unvisited states) first sweeps every action: cold-start energy gap {_f(pap.get('cold_energy_gap_pct'))} % "
            f"vs {_f(imp.get('cold_energy_gap_pct'))} % for the improved learner, whose untried actions start from "
            "the nearest visited state's values."
        )
    if imp:
        rtc = imp.get("runs_to_converge") or {}
        slow = {d: r for d, r in rtc.items() if r is None or r > TARGETS["runs_to_converge"]}
        conv = ((res.get("convergence") or {}).get("variants") or {}).get("autoscale") or {}
        if slow:
            details = []
            for d, v in (conv.get("scratch") or {}).items():
                e = np.abs(np.asarray(v.get("energy_gap", []), dtype=float))
                q = np.asarray(v.get("qos_miss", []), dtype=float)
                if not len(e):
                    continue
                ma = np.convolve(e, np.ones(5) / 5, mode="valid")
                within10 = next((k + 5 for k in range(len(ma)) if (ma[k:] <= 0.10).all()), None)
                details.append(
                    f"{d}: within 10 % from run {within10 if within10 else 'never'}, last 10 runs "
                    f"{100 * e[-10:].mean():.1f} % energy gap / {100 * q[-10:].mean():.0f} % QoS misses, "
                    + (
                        f"measured-reward curve within 5 % of its final level from run {v['reward_stable_run']}"
                        if v.get("reward_stable_run")
                        else f"measured-reward curve not within 5 % of its final level in {len(e)} runs"
                    )
                )
            out.append(
                f"- **Convergence within {TARGETS['runs_to_converge']} runs** is missed on "
                + ", ".join(
                    f"{d} ({r if r is not None else 'not within ' + str(cfg.get('convergence_runs', 100))})"
                    for d, r in slow.items()
                )
                + ". A state offers ~60-66 actions and gets one inference per run, so after 30 runs most actions have "
                "at most one measurement; the improved learner deliberately tries each once while exploring (which is "
                "what makes its adapted-window numbers good), and the measured reward -- exploration included, the "
                "curve of the paper's Fig. 14 -- only settles once that sweep ends. The exploited policy gets close "
                "sooner but not always within 5 %: " + "; ".join(details) + ". What remains is a few blocks whose "
                "best action was measured once early, while its state's row held only a costly explored action: with "
                "S' = S, Algorithm 1's bootstrap term (discount 0.1 x max Q(S')) depressed that one sample, and the "
                "visit-averaged value is only corrected when the exploration bonus brings the action back. "
                "The paper variant never meets the criterion within "
                f"{cfg.get('convergence_runs', 100)} runs on most devices because eq. 5's optimum is not Opt's."
            )
    if (
        imp
        and imp.get("energy_gap_pct") is not None
        and abs(imp["energy_gap_pct"]) <= TARGETS["energy_gap_pct"]
        and imp.get("qos_gap_pp") is not None
        and imp["qos_gap_pp"] <= TARGETS["qos_gap_pp"]
    ):
        out.append(
            f"- The energy and QoS targets are met by the improved learner (energy gap {_f(imp['energy_gap_pct'])} %, "
            f"QoS gap {_f(imp['qos_gap_pp'])} pp) although {100 - 100 * imp['prediction_accuracy']:.1f} % of its "
            "decisions differ from Opt's: on the noise-free model its choices' total energy differs from Opt's by "
            f"{_f(imp.get('expected_energy_excess_pct'), '{:+.2f}')} %, i.e. the misses are mostly "
            "close runners-up (an adjacent DVFS step, GPU FP16 vs the DSP), plus a few cheaper choices that miss QoS "
            "in expectation where Opt's meets it "
            f"({_pct(imp.get('qos_expected_miss'), '{:.2f}')} % of the decisions) -- which is why the measured gap "
            "can even come out slightly below zero in a scenario group."
        )
    return out


def notes(res: dict[str, Any]) -> list[str]:
    """Where a paper ratio is out of reach with this calibration, say why, with numbers."""
    s = res["summary"]
    out: list[str] = []
    st = s.get("static")
    if st:
        g = st["policies"]
        off = [
            (b, p, st["improvement"].get(b))
            for b, p in PAPER["static_improvement"].items()
            if b in g and st["improvement"].get(b) is not None and abs(st["improvement"][b] - p) / p > 0.25
        ]
        if off:
            opt = g.get("opt", {})
            out.append(
                "- Static improvements off the paper's by more than 25 %: "
                + "; ".join(
                    f"over {b} {o:.2f}x (paper {p}x; {b} averages {g[b]['energy_mj']:.1f} mJ per inference)"
                    for b, p, o in off
                )
                + f". AutoScale averages {g.get('autoscale', {}).get('energy_mj', math.nan):.1f} mJ and Opt "
                f"{opt.get('energy_mj', math.nan):.1f} mJ; Opt itself is {opt.get('ppw_norm', math.nan):.1f}x Edge CPU FP32, so "
                "the ratios are set by the calibrated profiles rather than by the learner. Eqs. 1-4 charge only the processor "
                "or the radio, not the phone's base power that the paper's Monsoon meter also measured: CPU FP32 at the "
                "top DVFS step (up to 5.5 W for 0.2-0.6 s on the 2-6 GMAC networks) is far costlier than a 10-50 mJ "
                "offload, which widens the ratio against the CPU, while offloading at -85 dBm (0.5-2 J for 0.6-1 MB "
                "inputs) is what separates AutoScale from Cloud / Connected Edge in S4 / S5."
            )
    sharing = res.get("state_sharing") or {}
    alone = [m for m, others in sharing.items() if not others]
    if alone:
        out.append(
            f"- Leave-one-out: {len(alone)} of {len(sharing)} networks ({', '.join(alone)}) share their Table I NN bins "
            "with no other network, so training on the others leaves their Q rows empty: their cold start depends "
            "entirely on the initial values (random in the paper, borrowed from the nearest state in the improved learner)."
        )
    if not out:
        out.append("- Every computed ratio is within 25 % of the paper's value.")
    return out
