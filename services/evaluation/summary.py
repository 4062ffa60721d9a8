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
    """Mean over (device, scenario) of the energy gap (sum over networks) and the QoS-violation gap."""
    e_gaps, q_gaps = [], []
    per_ds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for dev, s, _m, pol in cases(res, scenarios):
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
        "runs_to_converge_mean": (mean([float(r) for r in rtc]) if rtc and all(r is not None for r in rtc) else None),
        "transfer_saving_pct": transfer_saving(res, variant).get("mean_saving_pct"),
    }
    ee = eo = n = qm = 0.0
    for _dev, _s, _m, pol in cases(res, s.get("static_scenarios", []) + s.get("dynamic_scenarios", [])):
        v = pol.get(variant)
        if v and "expected_energy_mj" in v:
            ee += v["expected_energy_mj"] * v["n"]
            eo += v["opt_expected_energy_mj"] * v["n"]
            qm += v.get("qos_expected_miss", 0.0) * v["n"]
            n += v["n"]
    out["expected_energy_excess_pct"] = 100.0 * (ee / eo - 1.0) if eo > 0 else None
    out["qos_expected_miss"] = qm / n if n else None
    return out
