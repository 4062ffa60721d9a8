"""The report's later tables: per-policy averages, target selection (Fig. 13), accuracy targets
(Fig. 12) and convergence and transfer (Fig. 14)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from services.evaluation.report.fmt import num, pct, runs
from services.evaluation.report.paper import PAPER
from services.evaluation.summary import CATEGORY_LABELS, VARIANT_LABELS, transfer_saving

Fmt = Callable[[Any], str]


def _pct_of(x: float | None) -> str:
    return f"{num(x)} %"


def _pp_of(x: float | None) -> str:
    return f"{num(x)} pp"


def _share_of(x: float | None) -> str:
    return f"{pct(x)} %"


def _saving_of(x: float | None) -> str:
    return "n/a (did not converge)" if x is None else f"{num(x, '{:.1f}')} %"


def _ppw_order(kv: tuple[str, dict[str, Any]]) -> float:
    """Highest normalised PPW first; a policy without one (NaN) sorts as 0."""
    ppw: float = kv[1]["ppw_norm"]
    return -ppw if not math.isnan(ppw) else 0


def per_policy(s: dict[str, Any], variants: list[str]) -> list[str]:
    """Every policy's averages per scenario group, and each AutoScale variant's gaps to Opt there."""
    out = ["\n## Per-policy averages (cold)\n"]
    for label in ("static", "dynamic", "held_out"):
        g = s.get(label)
        if not g:
            continue
        out.append(f"\n### {label.replace('_', '-').capitalize()} scenarios ({', '.join(s[label + '_scenarios'])})\n")
        out.append(
            "| policy | PPW / Edge CPU FP32 | QoS violation | energy/inference | prediction acc. | category acc. "
            "| tie-rule acc. |\n|---|---|---|---|---|---|---|"
        )
        for name, v in sorted(g["policies"].items(), key=_ppw_order):
            out.append(
                f"| {name} | {num(v['ppw_norm'])}x | {100 * v['qos_violation']:.1f} % | {v['energy_mj']:.1f} mJ | "
                f"{100 * v['prediction_accuracy']:.1f} % | {100 * v['category_accuracy']:.1f} % | "
                f"{pct(v.get('tie_accuracy'))} % |"
            )
        for vname in variants:
            gp = g["gaps_by_policy"].get(vname, {})
            out.append(
                f"\n{VARIANT_LABELS[vname]} vs Opt here: energy gap {num(gp.get('energy_gap_pct'))} %, "
                f"QoS-violation gap {num(gp.get('qos_gap_pp'))} pp."
            )
    return out


def selection_table(s: dict[str, Any]) -> list[str]:
    """Fig. 13: the share of each target category, Opt's and AutoScale's, beside the paper's."""
    out = ["\n## Target selection (Fig. 13, static scenarios, AutoScale default, cold)\n"]
    sel = s.get("selection_static", {})
    if not sel:
        return out
    devs = list(sel)
    out.append("| target | " + " | ".join(f"{d} Opt | {d} AutoScale | paper Opt / AutoScale" for d in devs) + " |")
    out.append("|---|" + "---|---|---|" * len(devs))
    for c, lab in CATEGORY_LABELS.items():
        cells = []
        for d in devs:
            po = PAPER["fig13"].get(d, {}).get(c)
            cells.append(
                f"{sel[d]['opt'][c]:.1f} % | {sel[d]['autoscale'][c]:.1f} % | "
                + (f"{po[0]} / {po[1]} %" if po else "-")
            )
        out.append(f"| {lab} | " + " | ".join(cells) + " |")
    return out


def accuracy_targets_table(res: dict[str, Any]) -> list[str]:
    """Fig. 12: AutoScale and Opt per accuracy target (empty when the study was not run)."""
    if not res.get("accuracy_targets"):
        return []
    out = ["\n## Accuracy targets (Fig. 12, static scenarios, AutoScale as configured)\n"]
    ref = {t: m for t, m in (res.get("accuracy_refused") or {}).items() if m}
    if ref:
        out.append(
            "Requests no target can satisfy are refused by the decider (422) and left out: "
            + "; ".join(f"target {t} %: {', '.join(m)}" for t, m in ref.items())
            + ".\n"
        )
    out.append(
        "| device | target | AutoScale PPW / CPU FP32 | Opt PPW / CPU FP32 | AutoScale QoS viol. | Opt QoS viol. "
        "| AutoScale accuracy |\n|---|---|---|---|---|---|---|"
    )
    for dev, by_t in res["accuracy_targets"].items():
        for tgt, pol in by_t.items():
            cpu_e = pol["edge-cpu-fp32"]["energy_mj"]
            out.append(
                f"| {dev} | {tgt} | {cpu_e / pol['autoscale']['energy_mj']:.2f}x | "
                f"{cpu_e / pol['opt']['energy_mj']:.2f}x | "
                f"{100 * pol['autoscale']['qos_violation']:.1f} % | {100 * pol['opt']['qos_violation']:.1f} % | "
                f"{pol['autoscale']['accuracy']:.1f} % |"
            )
    return out


def convergence_table(res: dict[str, Any]) -> list[str]:
    """Fig. 14: runs to converge per variant and device, from scratch and with transfer."""
    conv = res.get("convergence") or {}
    if not conv.get("variants"):
        return []
    tol = f"{100 * conv['tolerance']:.0f} %"
    out = [
        "\n## Convergence and transfer (Fig. 14)\n",
        f"Setting: every (network, scenario) of {', '.join(conv['scenarios'])} learnt from scratch in parallel, one "
        "inference each per run (epsilon 0.1), on a fresh table per device. After each run the action AutoScale "
        "would *exploit* now (epsilon 0) in every (network, scenario) is scored on the noise-free model against Opt: "
        "the *energy gap* (its expected energy summed over the blocks / Opt's - 1) and the *QoS misses* (share of "
        "blocks whose exploited action misses QoS in expectation while Opt's meets it).\n\n"
        f"**Runs to converge** = the first run from which the 5-run trailing averages of both stay within "
        f"{tol} (|energy gap| <= {tol}, QoS misses <= {tol} of the blocks) until the last run "
        f"({res['config'].get('convergence_runs', 100)}). "
        "*Strict*: the same without the averaging. *Reward*: the 5-run average of the exploited actions' "
        "expected-reward "
        "shortfall vs the perfect learner of the variant's own reward stays within the tolerance. *Reward curve*: the "
        "paper's Fig. 14 notion -- the 5-run average of the measured reward (exploration included) stays within the "
        "tolerance of its final level.\n",
        "| variant | device | runs to converge | strict | reward | reward curve | with transfer from "
        f"{conv.get('source')} | saving |\n|---|---|---|---|---|---|---|---|",
    ]
    for vname, vv in conv["variants"].items():
        ts = transfer_saving(res, vname)
        for dev, v in vv["scratch"].items():
            tr = vv.get("transfer", {}).get(dev)
            saving = ts["per_device"].get(dev, {}).get("saving_pct")
            out.append(
                f"| {VARIANT_LABELS.get(vname, vname)} | {dev} | {runs(v)} | {runs(v, 'runs_to_converge_strict')} | "
                f"{runs(v, 'runs_to_converge_reward')} | {runs(v, 'reward_stable_run')} | "
                f"{runs(tr) if tr else '(source)'} | {num(saving, '{:.1f}') + ' %' if saving is not None else '-'} |"
            )
    return out
