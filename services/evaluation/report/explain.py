"""The report's prose about misses: why a target is out of reach and where a paper ratio differs,
each claim with the numbers of this evaluation."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from services.evaluation.report.fmt import num, pct
from services.evaluation.report.paper import PAPER, TARGETS
from services.evaluation.summary import VARIANTS, variant_headlines


def _n_to_order(diff: float, sigma: float, p: float = 0.9) -> float:
    """Measurements of each of two targets ``diff`` apart (relative) needed to order their sample
    means correctly with probability ``p`` under lognormal noise ``sigma``."""
    z = NormalDist().inv_cdf(p)
    return 2.0 * (z * sigma / diff) ** 2


def _share(part: int, whole: int) -> str:
    return pct(part / whole if whole else None)


def _prediction_bound(res: dict[str, Any], imp: dict[str, Any], pap: dict[str, Any]) -> str:
    """Why exact-action accuracy cannot reach the target under the measurement noise."""
    sig = res["config"]["noise_sigma"]
    nf = res.get("noise_floor") or {}
    tot = {k: sum(v.get(k, 0) for v in nf.values()) for k in ("n", "lt1", "lt_half_sigma", "lt_sigma")}
    return (
        f"- **Prediction accuracy >= {TARGETS['prediction_accuracy_pct']} % (exact action) is not reachable with "
        f"{100 * sig:.0f} % measurement noise.** Opt is chosen on the noise-free model; a learner only sees noisy "
        f"measurements. On the measured test inferences Opt's runner-up (the next cheapest target in Opt's own "
        f"feasible set) is within 1 % of Opt's energy in {_share(tot['lt1'], tot['n'])} % of "
        f"them, within {100 * sig / 2:.1f} % in {_share(tot['lt_half_sigma'], tot['n'])} % and "
        f"within one noise sigma ({100 * sig:.0f} %) in {_share(tot['lt_sigma'], tot['n'])} %: "
        f"adjacent DVFS steps differ by 1-3 %, and ordering two targets 2 % apart correctly 9 times out of 10 at "
        f"{100 * sig:.0f} % noise takes ~{_n_to_order(0.02, sig):.0f} measurements of each, while a state sees ~150 "
        "inferences spread over ~66 actions before the adapted window. Even a *perfect* learner of each reward "
        "(the argmax of its expectation under the noise) "
        f"agrees with Opt in only {pct(imp.get('reward_oracle_is_opt'))} % of the decisions with the Opt-aligned "
        f"reward and {pct(pap.get('reward_oracle_is_opt'))} % with eq. 5: targets whose expected latency sits just "
        "under the QoS budget (Opt's picks) miss it often under noise, and ones just over it often meet it. "
        f"AutoScale (improved) reaches {pct(imp.get('prediction_accuracy'))} % exact, "
        f"{pct(imp.get('tie_accuracy'))} % by the 1 % tie rule, and picks the perfect learner's action in "
        f"{pct(imp.get('reward_oracle_accuracy'))} % of the decisions (the paper variant: "
        f"{pct(pap.get('prediction_accuracy'))} % / {pct(pap.get('tie_accuracy'))} % / "
        f"{pct(pap.get('reward_oracle_accuracy'))} %). The paper's 97.9 % is consistent with its own remark that "
        "every miss was within 1 % of Opt's energy, i.e. with a measurement error well below the spacing of the "
        "actions."
    )


def _paper_reward(imp: dict[str, Any], pap: dict[str, Any]) -> str:
    """Why eq. 5 as published steers away from Opt."""
    return (
        "- **Eq. 5 as published cannot match Opt** (AutoScale (paper): energy gap "
        f"{num(pap.get('energy_gap_pct'))} %, "
        f"QoS gap {num(pap.get('qos_gap_pp'))} pp): with energy in mJ and latency in ms, alpha = 0.1 makes a QoS miss "
        "cost at most alpha x QoS = 5 mJ (10 mJ for MobileBERT) of reward, so eq. 5 prefers a violating target "
        "whenever it saves more than that, and it pays +0.1 per ms of slack, so it favours slower DVFS steps than "
        "min-energy Opt. Its random initial values in [0, 1) are optimistic against rewards of -10 .. -1,000s, so "
        "a state never seen (8 of the 10 networks share no Table I NN bins with any other: leave-one-out lands them "
        "in unvisited states) first sweeps every action: cold-start energy gap "
        f"{num(pap.get('cold_energy_gap_pct'))} % "
        f"vs {num(imp.get('cold_energy_gap_pct'))} % for the improved learner, whose untried actions start from "
        "the nearest visited state's values."
    )


def _convergence_detail(device: str, curve: dict[str, Any]) -> str | None:
    """Where one device's exploited policy and measured-reward curve stand (None: no curve)."""
    e = np.abs(np.asarray(curve.get("energy_gap", []), dtype=float))
    q = np.asarray(curve.get("qos_miss", []), dtype=float)
    if not len(e):
        return None
    ma = np.convolve(e, np.ones(5) / 5, mode="valid")
    within10 = next((k + 5 for k in range(len(ma)) if (ma[k:] <= 0.10).all()), None)
    return (
        f"{device}: within 10 % from run {within10 if within10 else 'never'}, last 10 runs "
        f"{100 * e[-10:].mean():.1f} % energy gap / {100 * q[-10:].mean():.0f} % QoS misses, "
        + (
            f"measured-reward curve within 5 % of its final level from run {curve['reward_stable_run']}"
            if curve.get("reward_stable_run")
            else f"measured-reward curve not within 5 % of its final level in {len(e)} runs"
        )
    )


def _slow_convergence(res: dict[str, Any], slow: dict[str, int | None]) -> str:
    """Why the improved learner needs more runs than the target on some devices."""
    cfg = res["config"]
    conv = ((res.get("convergence") or {}).get("variants") or {}).get("autoscale") or {}
    details = [line for d, v in (conv.get("scratch") or {}).items() if (line := _convergence_detail(d, v)) is not None]
    return (
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


def _targets_met(imp: dict[str, Any]) -> bool:
    return (
        imp.get("energy_gap_pct") is not None
        and abs(imp["energy_gap_pct"]) <= TARGETS["energy_gap_pct"]
        and imp.get("qos_gap_pp") is not None
        and imp["qos_gap_pp"] <= TARGETS["qos_gap_pp"]
    )


def _met_despite_misses(imp: dict[str, Any]) -> str:
    """How the energy and QoS targets are met although decisions differ from Opt's."""
    return (
        f"- The energy and QoS targets are met by the improved learner (energy gap {num(imp['energy_gap_pct'])} %, "
        f"QoS gap {num(imp['qos_gap_pp'])} pp) although {100 - 100 * imp['prediction_accuracy']:.1f} % of its "
        "decisions differ from Opt's: on the noise-free model its choices' total energy differs from Opt's by "
        f"{num(imp.get('expected_energy_excess_pct'), '{:+.2f}')} %, i.e. the misses are mostly "
        "close runners-up (an adjacent DVFS step, GPU FP16 vs the DSP), plus a few cheaper choices that miss QoS "
        "in expectation where Opt's meets it "
        f"({pct(imp.get('qos_expected_miss'), '{:.2f}')} % of the decisions) -- which is why the measured gap "
        "can even come out slightly below zero in a scenario group."
    )


def explain(res: dict[str, Any]) -> list[str]:
    """Why a target is missed, with numbers (and what bounds it)."""
    s = res["summary"]
    out: list[str] = []
    headlines = {v: variant_headlines(res, v) for v in VARIANTS if v in s.get("all", {}).get("policies", {})}
    imp, pap = headlines.get("autoscale", {}), headlines.get("autoscale-paper", {})
    if imp:
        out.append(_prediction_bound(res, imp, pap))
    if pap:
        out.append(_paper_reward(imp, pap))
    if imp:
        rtc = imp.get("runs_to_converge") or {}
        slow = {d: r for d, r in rtc.items() if r is None or r > TARGETS["runs_to_converge"]}
        if slow:
            out.append(_slow_convergence(res, slow))
    if imp and _targets_met(imp):
        out.append(_met_despite_misses(imp))
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
                f"{opt.get('energy_mj', math.nan):.1f} mJ; Opt itself is {opt.get('ppw_norm', math.nan):.1f}x "
                "Edge CPU FP32, so the ratios are set by the calibrated profiles rather than by the learner. "
                "Eqs. 1-4 charge only the processor or the radio, "
                "not the phone's base power that the paper's Monsoon meter also measured: CPU FP32 at the "
                "top DVFS step (up to 5.5 W for 0.2-0.6 s on the 2-6 GMAC networks) is far costlier than a 10-50 mJ "
                "offload, which widens the ratio against the CPU, while offloading at -85 dBm (0.5-2 J for 0.6-1 MB "
                "inputs) is what separates AutoScale from Cloud / Connected Edge in S4 / S5."
            )
    sharing = res.get("state_sharing") or {}
    alone = [m for m, others in sharing.items() if not others]
    if alone:
        out.append(
            f"- Leave-one-out: {len(alone)} of {len(sharing)} networks ({', '.join(alone)}) share their Table I NN "
            "bins with no other network, so training on the others leaves their Q rows empty: their cold start "
            "depends entirely on the initial values (random in the paper, borrowed from the nearest state in the "
            "improved learner)."
        )
    if not out:
        out.append("- Every computed ratio is within 25 % of the paper's value.")
    return out
