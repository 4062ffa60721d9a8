"""The testbed's figures (matplotlib, Agg). Each caption says what was measured here and what was modelled."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt
import numpy as np

from services.testbed.models import Figure, InterferenceRow, PolicySummary, Record, TestbedPlan, Window

COLORS = {
    "autoscale": "#d32f2f",
    "edge-cpu-fp32": "#9e9e9e",
    "edge-best": "#64b5f6",
    "cloud": "#ffb74d",
    "connected-edge": "#81c784",
    "opt": "#212121",
    "lr": "#ba68c8",
    "knn": "#a1887f",
}
CORUNNER_SHADE = {"cpu": "#ffcdd2", "mem": "#ffe0b2"}
LATENCY = "latency measured on this host (edge: its own CPUs, with the co-runners; peer/cloud: the other CPUs)"
ENERGY = "energy modelled: calibrated edge power x measured time; eq. 4 radio energy at the emulated RSSI"


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def learning(windows: list[Window], out: Path) -> Figure:
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for policy in dict.fromkeys(w.policy for w in windows):
        mine = [w for w in windows if w.policy == policy]
        style = {"color": COLORS.get(policy, "#607d8b"), "lw": 1.6 if policy == "autoscale" else 1.0}
        ax1.plot([w.index for w in mine], [w.reward_mean for w in mine], label=policy, **style)
        ax2.plot([w.index for w in mine], [w.qos_violation_pct for w in mine], label=policy, **style)
    auto = [w for w in windows if w.policy == "autoscale"]
    for w0, w1 in itertools.pairwise(auto):
        if w1.pass_index != w0.pass_index:
            for ax in (ax1, ax2):
                ax.axvline(w1.index - 0.5, color="k", lw=0.5, alpha=0.4)
    ax1.set_ylabel("mean reward (eq. 5)")
    ax2.set_ylabel("QoS violations %")
    ax2.set_xlabel("window of requests, the same for every policy (vertical lines: passes; the last compares)")
    ax1.legend(fontsize=7)
    ax1.set_title("AutoScale learning from an empty Q-table on the live mesh", fontsize=9)
    caption = (
        "Learning curve per window of requests (every policy served the same requests at the same moments). "
        f"{LATENCY}; {ENERGY}; reward from both."
    )
    return Figure(file=_save(fig, out / "learning.png"), caption=caption)


def policies(summaries: list[PolicySummary], out: Path) -> Figure:
    names = [s.policy for s in summaries]
    colors = [COLORS.get(n, "#607d8b") for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    panels = (
        ([s.energy_mj_mean for s in summaries], "energy per inference, mJ (phone)"),
        ([s.qos_violation_pct for s in summaries], "QoS violations, %"),
        ([s.ppw_vs_edge_cpu_fp32 or 0.0 for s in summaries], "PPW vs Edge CPU FP32"),
    )
    for ax, (vals, label) in zip(axes, panels, strict=True):
        ax.bar(names, vals, color=colors)
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", rotation=35, labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    caption = (
        "Every policy on the same requests at the same moments (comparison pass, interleaved). "
        f"{LATENCY}; {ENERGY}. Opt is the calibrated profile's Opt at the observed conditions, not a measured oracle."
    )
    return Figure(file=_save(fig, out / "policies.png"), caption=caption)


def _category(r: Record) -> str:
    if r.runner == "edge":
        return "edge " + r.target_id.split("/")[2].split("@")[0]
    return r.runner


def timeline(records: list[Record], plan: TestbedPlan, out: Path, window: int) -> Figure:
    """Long because it draws three aligned panels (target share, co-runner load, signal) with the phases shaded."""
    rs = [r for r in records if r.policy == "autoscale" and r.ok]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 7), sharex=True)
    cats = sorted({_category(r) for r in rs})
    xs, shares = [], defaultdict(list)
    for i in range(0, len(rs), window):
        w = rs[i : i + window]
        xs.append(i + len(w) / 2)
        for c in cats:
            shares[c].append(sum(_category(r) == c for r in w) / len(w))
    if xs:
        ax1.stackplot(xs, *[shares[c] for c in cats], labels=cats, alpha=0.85)
    ax1.set_ylabel(f"AutoScale target share\n(per {window} requests)")
    ax1.legend(fontsize=7, loc="upper right")
    idx = np.arange(len(rs))
    ax2.plot(idx, [r.co_cpu for r in rs], lw=0.8, color="#c62828", label="co_cpu (measured)")
    ax2.plot(idx, [r.co_mem for r in rs], lw=0.8, color="#ef6c00", label="co_mem (measured)")
    ax2.set_ylabel("co-runner load")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=7, loc="upper right")
    ax3.plot(idx, [r.rssi_wifi_dbm for r in rs], lw=0.8, label="Wi-Fi RSSI (emulated)")
    ax3.plot(idx, [r.rssi_p2p_dbm for r in rs], lw=0.8, label="Wi-Fi Direct RSSI (emulated)")
    ax3.axhline(-80, color="k", lw=0.5, ls=":")
    ax3.set_ylabel("dBm")
    ax3.set_xlabel("AutoScale request (all passes; shaded: co-runner running on the edge CPUs)")
    ax3.legend(fontsize=7, loc="lower right")
    start = None
    for i, r in enumerate([*rs, None]):
        kind = r.corunner if r is not None else "none"
        if start is not None and (r is None or kind != rs[start].corunner):
            for ax in (ax1, ax2, ax3):
                ax.axvspan(start, i, color=CORUNNER_SHADE[rs[start].corunner], alpha=0.5, lw=0)
            start = None
        if r is not None and kind != "none" and start is None:
            start = i
    ax1.set_title("Where AutoScale ran each inference, against the co-runner and signal timeline", fontsize=9)
    caption = (
        "Target share over time. Co-runner load measured by the telemetry service (psutil) while real co-runners "
        "ran on the edge CPUs; RSSI emulated from the scenario timeline (S1, S4, S5, D3); placements are the "
        "decider's, learning from measured latency."
    )
    return Figure(file=_save(fig, out / "timeline.png"), caption=caption)


def interference(rows: list[InterferenceRow], out: Path) -> Figure:
    keys = sorted({(r.model, r.target_id) for r in rows})
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.75 * len(keys))), 4.5))
    width = 0.27
    for j, kind in enumerate(("none", "cpu", "mem")):
        by = {(r.model, r.target_id): r for r in rows if r.corunner == kind}
        med = [by[k].median_ms if k in by else 0.0 for k in keys]
        lo = [by[k].median_ms - by[k].p10_ms if k in by else 0.0 for k in keys]
        hi = [by[k].p90_ms - by[k].median_ms if k in by else 0.0 for k in keys]
        color = {"none": "#1976d2", "cpu": "#d32f2f", "mem": "#f57c00"}[kind]
        x = np.arange(len(keys)) + (j - 1) * width
        ax.bar(x, med, width, yerr=[lo, hi], color=color, label=f"co-runner: {kind}", capsize=2)
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels([f"{m}\n{t}" for m, t in keys], fontsize=6, rotation=30, ha="right")
    ax.set_ylabel("edge inference latency, ms (median, p10-p90)")
    ax.set_yscale("log")  # 2 ms and 300 ms networks on one axis; a slowdown is the same height everywhere
    ax.legend(fontsize=7)
    ax.set_title("Measured edge latency with and without the co-runners", fontsize=9)
    caption = (
        "Measured on this host: the edge runner's execution time of each edge target, by co-runner running "
        "(none / CPU burners / memory streamer on the edge CPUs), over every request any policy sent there."
    )
    return Figure(file=_save(fig, out / "interference.png"), caption=caption)
