"""The evaluation's figures (matplotlib, Agg backend), named after the paper's."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt
import numpy as np

from services.evaluation.contenders import PREDICTORS
from services.evaluation.summary import BASELINES, CATEGORY_LABELS, group_stats, norm_ppw, transfer_saving

MAIN = ("edge-cpu-fp32", "edge-best", "cloud", "connected-edge", "autoscale-paper", "autoscale", "opt")
COLORS = {
    "edge-cpu-fp32": "#9e9e9e",
    "edge-best": "#64b5f6",
    "cloud": "#ffb74d",
    "connected-edge": "#81c784",
    "autoscale": "#d32f2f",
    "autoscale-paper": "#ff8a80",
    "opt": "#212121",
    "lr": "#ba68c8",
    "svr": "#7986cb",
    "svm": "#4db6ac",
    "knn": "#a1887f",
    "bo": "#f06292",
    "linucb": "#aed581",
}


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _bars(ax: Any, groups: list[str], series: dict[str, list[float]], ylabel: str, log: bool = False) -> None:
    names = list(series)
    w = 0.8 / max(len(names), 1)
    x = np.arange(len(groups))
    for i, n in enumerate(names):
        vals = [v if not math.isnan(v) else 0.0 for v in series[n]]
        ax.bar(x + (i - (len(names) - 1) / 2) * w, vals, w, label=n, color=COLORS.get(n))
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)


def fig9_ppw(res: dict[str, Any], out: Path) -> str:
    """PPW normalised to Edge (CPU FP32), static scenarios: per device (top) and per network (bottom)."""
    s = res["summary"]
    static = s["static_scenarios"]
    devices = list(res["per_case"])
    pols = [p for p in MAIN if p in res["config"]["policies"]]
    fig, axes = plt.subplots(2, 1, figsize=(10, 7.5))
    series = {p: [group_stats(res, static, d).get(p, {}).get("ppw_norm", math.nan) for d in devices] for p in pols}
    _bars(axes[0], devices, series, "PPW / Edge (CPU FP32)", log=True)
    axes[0].set_title("Fig. 9 - energy efficiency, static scenarios (mean over networks and scenarios)")
    axes[0].legend(fontsize=7, ncol=3)
    models = res["models"]
    per_model: dict[str, list[float]] = {p: [] for p in pols}
    for m in models:
        for p in pols:
            vals = [
                norm_ppw(res["per_case"][d][sc][m], p)
                for d in devices
                for sc in static
                if sc in res["per_case"][d] and m in res["per_case"][d][sc]
            ]
            vals = [v for v in vals if not math.isnan(v)]
            per_model[p].append(float(np.mean(vals)) if vals else math.nan)
    _bars(axes[1], models, per_model, "PPW / Edge (CPU FP32)", log=True)
    axes[1].set_title("per network (mean over devices and static scenarios)")
    return _save(fig, out / "fig9_ppw.png")


def fig11_qos(res: dict[str, Any], out: Path) -> str:
    """QoS violation ratio per scenario (mean over devices and networks)."""
    scen = res["summary"]["static_scenarios"] + res["summary"]["dynamic_scenarios"]
    pols = [p for p in MAIN if p in res["config"]["policies"]]
    series = {p: [100 * group_stats(res, [sc]).get(p, {}).get("qos_violation", math.nan) for sc in scen] for p in pols}
    fig, ax = plt.subplots(figsize=(10, 4))
    _bars(ax, [x.upper() for x in scen], series, "QoS violation (%)")
    ax.set_title("Fig. 11 - QoS violation ratio per execution environment (Table IV)")
    ax.legend(fontsize=7, ncol=3)
    return _save(fig, out / "fig11_qos.png")


def fig12_dynamic(res: dict[str, Any], out: Path) -> str:
    """Dynamic scenarios: normalised PPW and QoS violations per scenario."""
    dyn = res["summary"]["dynamic_scenarios"] or res["summary"]["static_scenarios"]
    pols = [p for p in MAIN if p in res["config"]["policies"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    _bars(
        axes[0],
        [x.upper() for x in dyn],
        {p: [group_stats(res, [sc]).get(p, {}).get("ppw_norm", math.nan) for sc in dyn] for p in pols},
        "PPW / Edge (CPU FP32)",
        log=True,
    )
    axes[0].set_title("Dynamic environments - energy efficiency")
    _bars(
        axes[1],
        [x.upper() for x in dyn],
        {p: [100 * group_stats(res, [sc]).get(p, {}).get("qos_violation", math.nan) for sc in dyn] for p in pols},
        "QoS violation (%)",
    )
    axes[1].set_title("Dynamic environments - QoS violations")
    axes[1].legend(fontsize=7, ncol=2)
    return _save(fig, out / "fig12_dynamic.png")


def fig12_accuracy(res: dict[str, Any], out: Path) -> str | None:
    acc = res.get("accuracy_targets")
    if not acc:
        return None
    devices = list(acc)
    targets = list(next(iter(acc.values())))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ppw = {
        t: [acc[d][t]["edge-cpu-fp32"]["energy_mj"] / acc[d][t]["autoscale"]["energy_mj"] for d in devices]
        for t in targets
    }
    qos = {t: [100 * acc[d][t]["autoscale"]["qos_violation"] for d in devices] for t in targets}
    _bars(axes[0], devices, ppw, "AutoScale PPW / Edge (CPU FP32)", log=True)
    axes[0].legend(title="accuracy target (%)", fontsize=7)
    axes[0].set_title("Fig. 12 - accuracy targets (static scenarios)")
    _bars(axes[1], devices, qos, "AutoScale QoS violation (%)")
    return _save(fig, out / "fig12_accuracy_targets.png")


def fig13_selection(res: dict[str, Any], out: Path) -> str:
    sel = res["summary"]["selection_static"]
    devices = list(sel)
    cats = list(CATEGORY_LABELS)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(devices) * 2)
    bottoms = np.zeros(len(x))
    cmap = plt.get_cmap("tab10")
    for i, c in enumerate(cats):
        vals = np.array([sel[d][who][c] for d in devices for who in ("opt", "autoscale")])
        ax.bar(x, vals, bottom=bottoms, label=CATEGORY_LABELS[c], color=cmap(i))
        bottoms += vals
    ax.set_xticks(x)
    ax.set_xticklabels([f"{d}\n{who}" for d in devices for who in ("Opt", "AutoScale")], fontsize=8)
    ax.set_ylabel("selection rate (%)")
    ax.set_title("Fig. 13 - target selection, static scenarios")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _save(fig, out / "fig13_selection.png")


def fig14_prediction(res: dict[str, Any], out: Path) -> str:
    g = res["summary"]["all"]["policies"]
    pols = [p for p in ("autoscale", "autoscale-paper", *PREDICTORS, *BASELINES) if p in g]
    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(pols))
    ax.bar(x - 0.2, [100 * g[p]["prediction_accuracy"] for p in pols], 0.4, label="exact action", color="#d32f2f")
    ax.bar(x + 0.2, [100 * g[p]["category_accuracy"] for p in pols], 0.4, label="Fig. 13 category", color="#ef9a9a")
    ax.set_xticks(x)
    ax.set_xticklabels(pols, rotation=30, ha="right")
    ax.set_ylabel("decisions equal to Opt's (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Prediction accuracy vs prediction-based approaches (all scenarios)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / "fig14_prediction_accuracy.png")


def convergence(res: dict[str, Any], out: Path) -> str | None:
    conv = res.get("convergence")
    if not conv or not conv.get("variants"):
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    styles = {"autoscale": "-", "autoscale-paper": ":"}
    for vname, vv in conv["variants"].items():
        ls = styles.get(vname, "-")
        for d, v in vv["scratch"].items():
            x = np.arange(1, len(v["reward"]) + 1)
            lab = f"{d} ({'paper' if vname == 'autoscale-paper' else 'improved'})"
            axes[0].plot(x, v["reward"], ls, label=lab)
            axes[1].plot(x, 100 * np.abs(np.array(v["energy_gap"])), ls, label=lab)
            axes[2].plot(x, 100 * np.array(v["qos_miss"]), ls, label=lab)
    axes[0].set_xlabel("run")
    axes[0].set_ylabel("mean measured reward (incl. exploration)")
    axes[0].set_yscale("symlog", linthresh=10)
    axes[0].set_title("Fig. 14 - reward vs run (each variant's own reward)")
    for ax, title in (
        (axes[1], "|energy gap| of the exploited actions to Opt (%)"),
        (axes[2], "blocks whose exploited action misses QoS (%)"),
    ):
        ax.axhline(100 * conv["tolerance"], color="k", lw=0.8, ls="--")
        ax.set_xlabel("run")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("symlog", linthresh=1)
    axes[1].set_ylim(bottom=0)
    axes[2].legend(fontsize=6, ncol=2)
    return _save(fig, out / "convergence.png")


def transfer(res: dict[str, Any], out: Path) -> str | None:
    ts = (
        transfer_saving(res, "autoscale")
        if (res.get("convergence") or {}).get("variants", {}).get("autoscale")
        else transfer_saving(res)
    )
    if not ts["per_device"]:
        return None
    devs = list(ts["per_device"])
    conv = res["convergence"]
    n = len(next(iter(conv["scratch"].values()))["gap"])
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(len(devs))
    sc = [ts["per_device"][d]["scratch"] or n for d in devs]
    tr = [ts["per_device"][d]["transfer"] or n for d in devs]
    ax.bar(x - 0.2, sc, 0.4, label="from scratch", color="#9e9e9e")
    ax.bar(x + 0.2, tr, 0.4, label=f"transferred from {conv['source']}", color="#d32f2f")
    ax.set_xticks(x)
    ax.set_xticklabels(devs)
    ax.set_ylabel("runs to converge (AutoScale as configured)")
    ax.set_title("Transfer learning")
    ax.legend(fontsize=8)
    return _save(fig, out / "transfer.png")


def learning_curves(res: dict[str, Any], out: Path) -> str | None:
    """The protocol's curves: energy and QoS gaps to Opt after 0 (cold), 10, 30, 100 online inferences."""
    curve = res.get("learning_curve") or {}
    if not curve:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, rows in curve.items():
        if len(rows) < 2:
            continue
        k = [r["online_runs"] for r in rows]
        for ax, key in zip(axes, ("energy_gap_pct", "qos_gap_pp"), strict=True):
            y = [math.nan if r[key] is None else r[key] for r in rows]
            ax.plot(k, y, marker="o", label=name, color=COLORS.get(name))
    axes[0].set_ylabel("energy gap to Opt (%)")
    axes[1].set_ylabel("QoS-violation gap (pp)")
    for ax in axes:
        ax.set_xlabel("online inferences of the held-out network (0 = cold)")
        ax.set_xscale("symlog", linthresh=10)
        ax.axhline(0.0, color="#212121", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Leave-one-network-out, hidden true world, held-out seeds")
    return _save(fig, out / "learning_curves.png")


def make_all(res: dict[str, Any], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    figs: dict[str, str | None] = {
        "Learning curves (cold, then after 10/30/100 online inferences)": learning_curves(res, out),
        "Fig. 9 (PPW)": fig9_ppw(res, out),
        "Fig. 11 (QoS violations)": fig11_qos(res, out),
        "Fig. 12 (dynamic scenarios)": fig12_dynamic(res, out),
        "Fig. 12 (accuracy targets)": fig12_accuracy(res, out),
        "Fig. 13 (target selection)": fig13_selection(res, out),
        "Fig. 14 (prediction accuracy)": fig14_prediction(res, out),
        "Convergence": convergence(res, out),
        "Transfer learning": transfer(res, out),
    }
    return {k: v for k, v in figs.items() if v}
