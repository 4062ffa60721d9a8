"""Headline numbers of an evaluation, computed from its per-case results (results.json's
``summary`` and what the report and the figures read).

PPW (performance per watt) = inferences per joule = 1 / (phone energy per inference). "PPW
normalised to Edge (CPU FP32)" of a policy on one (device, scenario, network) is
E_edge-cpu-fp32 / E_policy; averages are arithmetic means over those cases, as in Figs. 9 and 11.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from services.evaluation.config import AUTOSCALE, DYNAMIC, STATIC

BASELINES = ("edge-cpu-fp32", "edge-best", "cloud", "connected-edge")
VARIANTS = AUTOSCALE  # as configured / as published
VARIANT_LABELS = {"autoscale": "AutoScale (default)", "autoscale-paper": "AutoScale (paper)"}
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


def cases(res: dict[str, Any], scenarios: Iterable[str]) -> Iterable[tuple[str, str, str, dict[str, Any]]]:
    wanted = set(scenarios)
    for dev, by_s in res["per_case"].items():
        for s, by_m in by_s.items():
            if s in wanted:
                for m, pol in by_m.items():
                    yield dev, s, m, pol


def mean(xs: list[float]) -> float:
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
    for dev, _s, _m, pol in cases(res, scenarios):
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
            "ppw_norm": mean(ppw),
            "qos_violation": mean(d["qos"]),
            "energy_mj": mean(d["energy"]),
            "prediction_accuracy": sum(d["pred"]) / n,
            "category_accuracy": sum(d["cat"]) / n,
            "reward_oracle_accuracy": sum(d["roa"]) / n,
            "reward_oracle_is_opt": sum(d["rio"]) / n,
            "tie_accuracy": sum(d["tie"]) / n,
            "cases": len(d["n"]),
        }
    return out


def gaps_to_opt(res: dict[str, Any], scenarios: Iterable[str], policy: str = "autoscale") -> dict[str, float]:
    """Mean over (device, scenario) of the energy gap (sum over networks) and the QoS-violation gap,
    each against Opt on the very inferences the policy was scored on."""
    e_gaps, q_gaps = [], []
    per_ds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for dev, s, _m, pol in cases(res, scenarios):
        if policy in pol:
            per_ds.setdefault((dev, s), []).append(pol[policy])
    for vs in per_ds.values():
        n = sum(v["n"] for v in vs)
        e_o = sum(v["opt_energy_mj"] * v["n"] for v in vs)
        if n == 0 or e_o <= 0:
            continue
        e_p = sum(v["energy_mj"] * v["n"] for v in vs)
        q_p = sum(v["qos_violation"] * v["n"] for v in vs) / n
        q_o = sum(v["opt_qos_violation"] * v["n"] for v in vs) / n
        e_gaps.append(100.0 * (e_p / e_o - 1.0))
        q_gaps.append(100.0 * (q_p - q_o))
    return {"energy_gap_pct": mean(e_gaps), "qos_gap_pp": mean(q_gaps), "cases": len(e_gaps)}


def selection_shares(
    res: dict[str, Any], scenarios: Iterable[str], policy: str = "autoscale"
) -> dict[str, dict[str, dict[str, float]]]:
    """Fig. 13: per device, share (%) of each target category for Opt and ``policy``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for dev, _s, _m, pol in cases(res, scenarios):
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
    """Per scenario group (static: Table IV S1-S5, dynamic: D1-D4, held-out: every other trace,
    all): per-policy stats, gaps to Opt (overall and per device) and PPW ratios over the baselines."""
    devices = list(res["per_case"])
    scen = {s for by_s in res["per_case"].values() for s in by_s}
    static = [s for s in STATIC if s in scen]
    dynamic = [s for s in DYNAMIC if s in scen]
    held_out = sorted(scen - set(STATIC) - set(DYNAMIC))
    out: dict[str, Any] = {"static_scenarios": static, "dynamic_scenarios": dynamic, "held_out_scenarios": held_out}
    groups = (("static", static), ("dynamic", dynamic), ("held_out", held_out), ("all", static + dynamic + held_out))
    for label, group in groups:
        if not group:
            continue
        g = group_stats(res, group)
        out[label] = {
            "policies": g,
            "per_device": {d: group_stats(res, group, d) for d in devices},
            "gaps": gaps_to_opt(res, group),
            "gaps_by_policy": {v: gaps_to_opt(res, group, v) for v in g if v != "opt"},
            "gaps_by_device": {d: gaps_to_opt({"per_case": {d: res["per_case"][d]}}, group) for d in devices},
            "improvement_by_policy": {},
        }
        for v in VARIANTS:
            if v not in g:
                continue
            a = g[v].get("ppw_norm", math.nan)
            out[label]["improvement_by_policy"][v] = {
                b: a / g[b]["ppw_norm"] for b in (*BASELINES, "opt") if b in g and g[b]["ppw_norm"] > 0
            }
        out[label]["improvement"] = out[label]["improvement_by_policy"].get("autoscale", {})
    out["selection_static"] = selection_shares(res, static or dynamic or held_out)
    out["selection_dynamic"] = selection_shares(res, dynamic) if dynamic else {}
    return out


def headline(res: dict[str, Any], policy: str = "autoscale") -> dict[str, Any]:
    """``summary.headline``: AutoScale's default on cold leave-one-out over every reported case
    (no inference of the held-out network before scoring); runs to converge from the convergence
    study (mean over phones, null when a phone did not converge or the study did not run)."""
    allg = res["summary"].get("all") or {}
    g = allg.get("gaps_by_policy", {}).get(policy, {})
    st = allg.get("policies", {}).get(policy, {})
    inf = allg.get("policies", {}).get("opt-informed", {})
    conv = ((res.get("convergence") or {}).get("variants") or {}).get(policy) or {}
    rtc = [v.get("runs_to_converge") for v in (conv.get("scratch") or {}).values()]
    return {
        "protocol": "cold-loo",
        "energy_gap_pct": g.get("energy_gap_pct"),
        "qos_gap_pp": g.get("qos_gap_pp"),
        "exact_action_accuracy": st.get("prediction_accuracy"),
        "category_accuracy": st.get("category_accuracy"),
        "informed_exact_action_accuracy": inf.get("prediction_accuracy"),
        "informed_category_accuracy": inf.get("category_accuracy"),
        "runs_to_converge": mean([float(r) for r in rtc]) if rtc and all(r is not None for r in rtc) else None,
    }


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
    return {"per_device": rows, "mean_saving_pct": mean(savings) if savings else None}
