"""report.md's section on partitioned execution (``services.evaluation.partitioning``'s summary)."""

from __future__ import annotations

import math
from typing import Any

from services.evaluation.partitioning import POLICIES, RATIOS
from services.evaluation.report.fmt import diff, num


def report_lines(part: dict[str, Any] | None) -> list[str]:
    """report.md's section on partitioned execution (nothing when the study did not run)."""
    if not part:
        return []
    out = [
        "\n## Partitioned execution: NeuroSurgeon, MOSAIC, AutoScale with splits\n",
        "NeuroSurgeon (`neurosurgeon`: min phone energy within QoS; `neurosurgeon-latency`: min latency) splits a "
        "network between the phone and the cloud at a cut point chosen per request from per-layer-type "
        "regressions and the current bandwidth; MOSAIC (`mosaic`) slices it across the phone's processors by "
        "a dynamic program over the profile's per-slice costs, once per network. `autoscale-splits` is "
        "AutoScale whose action space also holds each network's most promising split actions (one per "
        "remote location). Each plan's latency and energy are the simulator's cost of every part (eqs. 1-4 "
        "on the part's MACs and layers, the boundary bytes over the link, copies between processors) with "
        "the same outcome noise and hidden deviations from the profiles as any target (each part under its own "
        "target's). Scored on the cold leave-one-out window, like the headline; Opt stays the paper's "
        "(whole networks).\n",
        "| AutoScale vs | ours (all scenarios) | paper | difference |",
        "|---|---|---|---|",
    ]
    allg = part["groups"].get("all", {}).get("ratios", {})
    for b, pv in part["paper"].items():
        o = allg.get(f"autoscale/{b}")
        out.append(f"| {b} | {num(o)}x | {pv}x | {diff(o, pv)}x |")
    cols = [p for p in POLICIES if any(p in r["ppw_norm"] for r in part["scenarios"].values())]
    ratio_keys = [f"{a}/{b}" for a, b in RATIOS if any(f"{a}/{b}" in r["ratios"] for r in part["scenarios"].values())]
    out += [
        "\nPer scenario, per group, then per network (over every device and scenario): PPW normalised to Edge "
        "(CPU FP32), QoS violations, and the PPW ratios.\n",
        "| scenario | " + " | ".join(cols) + " | " + " | ".join(ratio_keys) + " |",
        "|---|" + "---|" * (len(cols) + len(ratio_keys)),
    ]
    rows = {**part["scenarios"], **{f"**{k}**": v for k, v in part["groups"].items()}}
    rows |= {f"`{k}`": v for k, v in part.get("networks", {}).items()}
    for name, r in rows.items():
        cells = [
            f"{num(r['ppw_norm'].get(p))}x ({100 * r['qos_violation'].get(p, math.nan):.1f} %)"
            if p in r["ppw_norm"]
            else "–"
            for p in cols
        ]
        cells += [f"{num(r['ratios'].get(k))}x" for k in ratio_keys]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out
