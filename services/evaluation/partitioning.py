"""The partitioning study: AutoScale against NeuroSurgeon and MOSAIC, and AutoScale with split
actions against AutoScale without them, per scenario (results.json's ``partition``, report.md's
section). Computed from the per-case results like every other summary: PPW normalised to Edge (CPU
FP32) per (device, scenario, network), averaged; a ratio is AutoScale's mean over the other's.
The report's section is ``services.evaluation.report.partition``.
"""

from __future__ import annotations

import math
from typing import Any

from services.evaluation.contenders import PARTITIONING, SPLITS
from services.evaluation.summary import group_stats

PAPER_RATIOS = {"neurosurgeon": 1.2, "mosaic": 1.9}  # Sec. VI-A: AutoScale's PPW over each
POLICIES = ("autoscale", SPLITS, "neurosurgeon", "neurosurgeon-latency", "mosaic")
# (numerator, denominator) of each reported PPW ratio
RATIOS = (
    ("autoscale", "neurosurgeon"),
    ("autoscale", "mosaic"),
    (SPLITS, "autoscale"),
    (SPLITS, "neurosurgeon"),
    (SPLITS, "mosaic"),
)


def _row(g: dict[str, dict[str, float]]) -> dict[str, Any]:
    ppw = {p: g[p]["ppw_norm"] for p in POLICIES if p in g}
    qos = {p: g[p]["qos_violation"] for p in POLICIES if p in g}
    ratios: dict[str, float | None] = {}
    for a, b in RATIOS:
        if a in ppw and b in ppw:
            x = ppw[a] / ppw[b] if ppw[b] > 0 else math.nan
            ratios[f"{a}/{b}"] = None if math.isnan(x) else x
    return {"ppw_norm": ppw, "qos_violation": qos, "ratios": ratios}


def partition_summary(res: dict[str, Any]) -> dict[str, Any] | None:
    """Per scenario and per scenario group (static, dynamic, all); None when no partitioning
    contender was evaluated."""
    policies = {p for by_s in res["per_case"].values() for by_m in by_s.values() for pol in by_m.values() for p in pol}
    if not policies & set(PARTITIONING):
        return None
    s = res["summary"]
    groups = {"static": s["static_scenarios"], "dynamic": s["dynamic_scenarios"]}
    groups["all"] = groups["static"] + groups["dynamic"]
    scenarios = {sc: _row(group_stats(res, [sc])) for sc in groups["all"]}
    return {
        "paper": dict(PAPER_RATIOS),
        "groups": {k: _row(group_stats(res, v)) for k, v in groups.items() if v},
        "scenarios": scenarios,
        "networks": {m: _row(_network_stats(res, m)) for m in res["models"]},
    }


def _network_stats(res: dict[str, Any], model: str) -> dict[str, dict[str, float]]:
    """``group_stats``'s PPW and QoS columns for one network over every device and scenario."""
    one = {
        "per_case": {d: {s: {model: by_m[model]} for s, by_m in by_s.items()} for d, by_s in res["per_case"].items()}
    }
    scen = [s for by_s in res["per_case"].values() for s in by_s]
    return group_stats(one, dict.fromkeys(scen))
