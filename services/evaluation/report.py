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
        "mi8pro": {"edge-cpu-fp32": (0.0, 0.1), "edge-cpu-int8": (25.0, 15.0), "edge-gpu-fp32": (0.0, 0.2),
                   "edge-gpu-fp16": (30.0, 42.4), "edge-dsp-int8": (17.5, 14.9), "cloud": (27.5, 27.3), "peer": (0.0, 0.1)},
        "galaxy_s10e": {"edge-cpu-fp32": (0.0, 0.1), "edge-cpu-int8": (25.0, 20.9), "edge-gpu-fp32": (0.0, 0.8),
                        "edge-gpu-fp16": (47.5, 53.4), "edge-dsp-int8": (0.0, 0.0), "cloud": (27.5, 24.7), "peer": (0.0, 0.1)},
        "moto_x_force": {"edge-cpu-fp32": (0.0, 0.1), "edge-cpu-int8": (5.0, 4.2), "edge-gpu-fp32": (0.0, 0.2),
                         "edge-gpu-fp16": (2.5, 3.4), "edge-dsp-int8": (0.0, 0.0), "cloud": (50.0, 49.8), "peer": (42.5, 42.3)},
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


def group_stats(res: dict[str, Any], scenarios: Iterable[str], device: str | None = None) -> dict[str, dict[str, float]]:
    """Per policy: mean normalised PPW, QoS violation ratio, energy, prediction accuracy."""
    scenarios = list(scenarios)
    acc: dict[str, dict[str, list[float]]] = {}
    for dev, _s, _m, pol in _cases(res, scenarios):
        if device is not None and dev != device:
            continue
        for name, v in pol.items():
            d = acc.setdefault(name, {"ppw": [], "qos": [], "energy": [], "pred": [], "cat": [], "roa": [], "rio": [],
                                      "n": []})
            d["ppw"].append(norm_ppw(pol, name))
            d["qos"].append(v["qos_violation"])
            d["energy"].append(v["energy_mj"])
            d["pred"].append(v["prediction_accuracy"] * v["n"])
            d["cat"].append(v["category_accuracy"] * v["n"])
            d["roa"].append(v.get("reward_oracle_accuracy", math.nan) * v["n"])
            d["rio"].append(v.get("reward_oracle_is_opt", math.nan) * v["n"])
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


def selection_shares(res: dict[str, Any], scenarios: Iterable[str], policy: str = "autoscale") -> dict[str, dict[str, dict[str, float]]]:
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
        }
        a = g.get("autoscale", {}).get("ppw_norm", math.nan)
        out[label]["improvement"] = {b: a / g[b]["ppw_norm"] for b in BASELINES if b in g and g[b]["ppw_norm"] > 0}
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


def transfer_saving(res: dict[str, Any]) -> dict[str, Any]:
    conv = res.get("convergence") or {}
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
        f"Total time **{t['wall_s']:.1f} s** (wall, {cfg['workers']} worker process(es); "
        f"{_f(cpu, '{:.0f}')} CPU-seconds, so about {_f(None if cpu is None else cpu / max(cfg['workers'], 1), '{:.0f}')} s "
        "on otherwise idle cores); "
        f"{t['decisions']:,} simulated decisions in the leave-one-out experiment, "
        f"**{t['decisions_per_s']:,.0f} decisions/s** overall.\n"
    )
    L.append("## Definitions\n")
    L.append(
        "- **PPW** (performance per watt) = inferences per joule = 1 / (the phone's energy per inference, eqs. 1-4). "
        "*PPW normalised to Edge (CPU FP32)* for one (device, scenario, network) = E(Edge CPU FP32) / E(policy); "
        "averages are arithmetic means over those cases. *Improvement over X* = mean normalised PPW of AutoScale / that of X.\n"
        "- **Energy gap to Opt** = mean over (device, scenario) of (sum of AutoScale's energy over the networks / Opt's - 1).\n"
        "- **QoS violation** = share of inferences with latency >= the QoS target (50 ms vision, 100 ms MobileBERT).\n"
        "- **Prediction accuracy** = share of test decisions equal to Opt's (exact action incl. DVFS step); "
        "*category accuracy* counts a match at Fig. 13's granularity (location x processor x precision).\n"
        "- **Opt** = the paper's oracle (fn. 8): min expected energy meeting QoS and accuracy on the noise-free model.\n"
        "- Methodology: leave-one-out across the networks (train on nine, test the tenth) per device. Per scenario the "
        f"held-out network is measured in two windows of {cfg['test_runs']} inferences: *cold start*, right after the "
        f"leave-one-out training, and *adapted*, after {cfg.get('adapt_runs', 0)} further online inferences in which "
        "Algorithm 1 keeps learning (epsilon 0.1; LinUCB and the static-best baselines keep learning too; LR/SVR/SVM/KNN/BO "
        "are trained offline on profiling samples and are not refitted). Both windows exploit (epsilon 0). "
        "Unless marked *cold start*, numbers are from the adapted window.\n"
    )

    def vs_table(label: str, key: str) -> None:
        g = s.get(label)
        if not g:
            return
        L.append(f"\n| AutoScale vs | ours ({label}) | paper | difference |\n|---|---|---|---|")
        for b, p in PAPER[key].items():
            o = g["improvement"].get(b)
            L.append(f"| {b} | {_f(o)}x | {p}x | {_diff(o, p)}x |")

    L.append("\n## Headline numbers vs the paper\n")
    vs_table("static", "static_improvement")
    vs_table("dynamic", "dynamic_improvement")
    allg = s.get("all", {})
    gaps = allg.get("gaps", {})
    pa = allg.get("policies", {}).get("autoscale", {})
    conv = res.get("convergence") or {}
    rtc = [v.get("runs_to_converge") for v in (conv.get("scratch") or {}).values()]
    rtc_known = [r for r in rtc if r is not None]
    mean_rtc = _mean([float(r) for r in rtc_known]) if rtc_known and len(rtc_known) == len(rtc) else None
    ts = transfer_saving(res)
    L.append("\n| metric | ours | paper | difference | our target | status |\n|---|---|---|---|---|---|")
    eg, qg = gaps.get("energy_gap_pct"), gaps.get("qos_gap_pp")
    L.append(f"| energy gap to Opt (all scenarios) | {_f(eg)} % | {PAPER['energy_gap_to_opt_pct']} % | {_diff(eg, PAPER['energy_gap_to_opt_pct'])} pp | "
             f"<= {TARGETS['energy_gap_pct']} % (abs.) | {_status(None if eg is None or math.isnan(eg) else abs(eg) <= TARGETS['energy_gap_pct'])} |")
    L.append(f"| QoS-violation gap to Opt | {_f(qg)} pp | {PAPER['qos_gap_to_opt_pp']} pp | {_diff(qg, PAPER['qos_gap_to_opt_pp'])} pp | "
             f"<= {TARGETS['qos_gap_pp']} pp | {_status(None if qg is None or math.isnan(qg) else qg <= TARGETS['qos_gap_pp'])} |")
    cold = (res.get("summary_cold") or {}).get("all", {})
    cg = cold.get("gaps", {})
    cpa = cold.get("policies", {}).get("autoscale", {})
    L.append(f"| energy gap to Opt, cold start (first {cfg['test_runs']} test inferences) | {_f(cg.get('energy_gap_pct'))} % | "
             f"{PAPER['energy_gap_to_opt_pct']} % | {_diff(cg.get('energy_gap_pct'), PAPER['energy_gap_to_opt_pct'])} pp | - | - |")
    L.append(f"| QoS-violation gap to Opt, cold start | {_f(cg.get('qos_gap_pp'))} pp | {PAPER['qos_gap_to_opt_pp']} pp | "
             f"{_diff(cg.get('qos_gap_pp'), PAPER['qos_gap_to_opt_pp'])} pp | - | - |")
    pacc = 100 * pa["prediction_accuracy"] if pa else None
    cacc = 100 * pa["category_accuracy"] if pa else None
    L.append(f"| prediction accuracy (exact action) | {_f(pacc, '{:.1f}')} % | {PAPER['prediction_accuracy_pct']} % | "
             f"{_diff(pacc, PAPER['prediction_accuracy_pct'], '{:+.1f}')} pp | >= {TARGETS['prediction_accuracy_pct']} % | "
             f"{_status(None if pacc is None else pacc >= TARGETS['prediction_accuracy_pct'])} |")
    L.append(f"| prediction accuracy (Fig. 13 category) | {_f(cacc, '{:.1f}')} % | {PAPER['prediction_accuracy_pct']} % | "
             f"{_diff(cacc, PAPER['prediction_accuracy_pct'], '{:+.1f}')} pp | >= {TARGETS['prediction_accuracy_pct']} % | "
             f"{_status(None if cacc is None else cacc >= TARGETS['prediction_accuracy_pct'])} |")
    ccold = 100 * cpa["prediction_accuracy"] if cpa else None
    L.append(f"| prediction accuracy, cold start (exact action) | {_f(ccold, '{:.1f}')} % | {PAPER['prediction_accuracy_pct']} % | "
             f"{_diff(ccold, PAPER['prediction_accuracy_pct'], '{:+.1f}')} pp | - | - |")
    if pa:
        L.append(f"| AutoScale = argmax of expected eq. 5 reward | {100 * pa['reward_oracle_accuracy']:.1f} % | - | - | - | - |")
        L.append(f"| argmax of expected eq. 5 reward = Opt (ceiling for a perfect eq. 5 learner) | "
                 f"{100 * pa['reward_oracle_is_opt']:.1f} % | - | - | - | - |")
    rtc_txt = ", ".join(f"{d}: {v.get('runs_to_converge') or 'not within ' + str(len(v.get('gap', [])))}"
                        for d, v in (conv.get("scratch") or {}).items()) or "n/a"
    L.append(f"| runs to converge (from scratch) | {rtc_txt} | {PAPER['runs_to_converge']} | - | <= {TARGETS['runs_to_converge']} | "
             f"{_status(None if not rtc else (mean_rtc is not None and all(r <= TARGETS['runs_to_converge'] for r in rtc_known)))} |")
    ms = ts.get("mean_saving_pct")
    L.append(f"| transfer-learning saving | {_f(ms, '{:.1f}')} % | {PAPER['transfer_saving_pct']} % | "
             f"{_diff(ms, PAPER['transfer_saving_pct'], '{:+.1f}')} pp | - | - |")

    L.append("\n## Per-policy averages\n")
    for label in ("static", "dynamic"):
        g = s.get(label)
        if not g:
            continue
        L.append(f"\n### {label.capitalize()} scenarios ({', '.join(s[label + '_scenarios'])})\n")
        L.append("| policy | PPW / Edge CPU FP32 | QoS violation | energy/inference | prediction acc. | category acc. |\n|---|---|---|---|---|---|")
        for name, v in sorted(g["policies"].items(), key=lambda kv: -kv[1]["ppw_norm"] if not math.isnan(kv[1]["ppw_norm"]) else 0):
            L.append(f"| {name} | {_f(v['ppw_norm'])}x | {100 * v['qos_violation']:.1f} % | {v['energy_mj']:.1f} mJ | "
                     f"{100 * v['prediction_accuracy']:.1f} % | {100 * v['category_accuracy']:.1f} % |")
        gp = g["gaps"]
        L.append(f"\nAutoScale vs Opt here: energy gap {_f(gp['energy_gap_pct'])} %, QoS-violation gap {_f(gp['qos_gap_pp'])} pp.")

    L.append("\n## Target selection (Fig. 13, static scenarios)\n")
    sel = s.get("selection_static", {})
    if sel:
        devs = list(sel)
        L.append("| target | " + " | ".join(f"{d} Opt | {d} AutoScale | paper Opt / AutoScale" for d in devs) + " |")
        L.append("|---|" + "---|---|---|" * len(devs))
        for c, lab in CATEGORY_LABELS.items():
            cells = []
            for d in devs:
                po = PAPER["fig13"].get(d, {}).get(c)
                cells.append(f"{sel[d]['opt'][c]:.1f} % | {sel[d]['autoscale'][c]:.1f} % | "
                             + (f"{po[0]} / {po[1]} %" if po else "-"))
            L.append(f"| {lab} | " + " | ".join(cells) + " |")

    if res.get("accuracy_targets"):
        L.append("\n## Accuracy targets (Fig. 12, static scenarios)\n")
        ref = {t: m for t, m in (res.get("accuracy_refused") or {}).items() if m}
        if ref:
            L.append("Requests no target can satisfy are refused by the decider (422) and left out: "
                     + "; ".join(f"target {t} %: {', '.join(m)}" for t, m in ref.items()) + ".\n")
        L.append("| device | target | AutoScale PPW / CPU FP32 | Opt PPW / CPU FP32 | AutoScale QoS viol. | AutoScale accuracy |\n|---|---|---|---|---|---|")
        for dev, by_t in res["accuracy_targets"].items():
            for tgt, pol in by_t.items():
                cpu = pol["edge-cpu-fp32"]["energy_mj"]
                L.append(f"| {dev} | {tgt} | {cpu / pol['autoscale']['energy_mj']:.2f}x | {cpu / pol['opt']['energy_mj']:.2f}x | "
                         f"{100 * pol['autoscale']['qos_violation']:.1f} % | {pol['autoscale']['accuracy']:.1f} % |")
    if conv:
        L.append("\n## Convergence and transfer (Fig. 14)\n")
        L.append(f"Converged = from that run on, the expected eq. 5 reward of the actions AutoScale would exploit, summed over "
                 f"every (network, scenario) of {', '.join(conv['scenarios'])} (all learnt from scratch in parallel, one "
                 f"inference each per run, epsilon 0.1), stays within {100 * conv['tolerance']:.0f} % of Opt's.\n")
        L.append("| device | runs to converge (scratch) | with transfer from " + str(conv.get("source")) + " | saving |\n|---|---|---|---|")
        for dev, v in conv["scratch"].items():
            row = ts["per_device"].get(dev, {})
            L.append(f"| {dev} | {v.get('runs_to_converge') or 'not converged'} | {row.get('transfer', '-') if dev != conv.get('source') else '(source)'} | "
                     f"{_f(row.get('saving_pct'), '{:.1f}') + ' %' if row.get('saving_pct') is not None else '-'} |")

    L.append("\n## Figures\n")
    for key, path in figures.items():
        L.append(f"- {key}: ![{key}]({path})")
    L.append("\n## Notes on reaching the paper's numbers\n")
    L += explain(res)
    return "\n".join(L) + "\n"


def explain(res: dict[str, Any]) -> list[str]:
    """Where a paper number is out of reach with this calibration and this learner, say why, with numbers."""
    s = res["summary"]
    cfg = res["config"]
    out: list[str] = []
    st = s.get("static")
    if st:
        g = st["policies"]
        off = [(b, p, st["improvement"].get(b)) for b, p in PAPER["static_improvement"].items()
               if b in g and st["improvement"].get(b) is not None and abs(st["improvement"][b] - p) / p > 0.25]
        if off:
            opt = g.get("opt", {})
            out.append(
                "- Static improvements off the paper's by more than 25 %: "
                + "; ".join(f"over {b} {o:.2f}x (paper {p}x; {b} averages {g[b]['energy_mj']:.1f} mJ per inference)"
                            for b, p, o in off)
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
    cold = (res.get("summary_cold") or {}).get("all", {})
    if alone:
        cg = cold.get("gaps", {})
        out.append(
            f"- Leave-one-out: {len(alone)} of {len(sharing)} networks ({', '.join(alone)}) share their Table I NN bins "
            "with no other network, so training on the others leaves their Q rows untouched. The Q-learner's initial "
            "values are optimistic (uniform [0, 1) while eq. 5 rewards are negative), so greedy selection first tries "
            "every action of a new state once (~60-66 inferences) - the cold-start window shows it: energy gap "
            f"{_f(cg.get('energy_gap_pct'))} %, QoS-violation gap {_f(cg.get('qos_gap_pp'))} pp. Dynamic scenarios visit "
            f"several states per network, so {cfg.get('adapt_runs', 0)} adaptation runs do not cover them either."
        )
    pa = s.get("all", {}).get("policies", {}).get("autoscale")
    if pa:
        out.append(
            f"- Prediction accuracy: {100 * pa['prediction_accuracy']:.1f} % exact / {100 * pa['category_accuracy']:.1f} % "
            f"by category. Even the argmax of the *expected* eq. 5 reward equals Opt's choice in only "
            f"{100 * pa['reward_oracle_is_opt']:.1f} % of the inferences: with energy in mJ and latency in ms, "
            "alpha = 0.1 makes a QoS violation cost at most alpha x QoS = 5 mJ (10 mJ for MobileBERT) of reward, so "
            "eq. 5 prefers a violating target whenever it saves more energy than that, and it rewards slack "
            "(+0.1 per ms) so it favours slower DVFS steps than min-energy Opt. AutoScale matches that eq. 5 "
            f"argmax in {100 * pa['reward_oracle_accuracy']:.1f} % of the inferences (outcome noise sigma "
            f"{100 * cfg['noise_sigma']:.0f} % vs 1-3 % energy steps between adjacent DVFS settings)."
        )
    conv = res.get("convergence") or {}
    if conv and any(v.get("runs_to_converge") in (None,) or v["runs_to_converge"] > TARGETS["runs_to_converge"]
                    for v in conv.get("scratch", {}).values()):
        out.append(
            f"- Convergence: with ~60-66 actions per state and optimistic initial values, exploring each action once "
            f"already takes more than {TARGETS['runs_to_converge']} runs; the paper's 40-50 runs imply a learner "
            "that does not try every action (or shares values across states). Transfer copies Q values only for "
            "states the source visited, and the copied values of the source's best actions are not the destination's."
        )
    if not out:
        out.append("- Every computed headline is within 25 % of the paper's value or meets its target.")
    return out
