"""The report's study sections (each present only when its study ran): the settings sweep with
its leave-one-device-out choices, the profiles' world (sigma 0), streaming (Fig. 10), the swap
table and the decider's energy overhead."""

from __future__ import annotations

from typing import Any

from services.evaluation.report.fmt import num, pct
from services.evaluation.report.paper import PAPER_OVERHEAD
from services.evaluation.studies import SWEEP_LABELS


def _gaps_row(label: str, summ: dict[str, Any], policy: str) -> str:
    g = (summ.get("all") or {}).get("gaps_by_policy", {}).get(policy, {})
    st = (summ.get("all") or {}).get("policies", {}).get(policy, {})
    return (
        f"| {label} | {num(g.get('energy_gap_pct'))} % | {num(g.get('qos_gap_pp'))} pp | "
        f"{pct(st.get('category_accuracy'))} % |"
    )


def sweep_section(st: dict[str, Any]) -> list[str]:
    sw = st.get("sweep")
    if not sw:
        return []
    out = [
        "\n## Study: settings sweep (tuning seeds and the paper's phones only)\n",
        f"Seeds {sw['seeds']}, phones {', '.join(sw['devices'])}; criterion: {sw['criterion']}. Each phone's value "
        "is chosen on the other two (leave-one-device-out); *held-out score* is that value's score on the phone "
        "left out. Scores: energy gap (%) + QoS gap (pp), lower is better.\n",
        "| setting | default | values: score per phone | chosen (tuned on -> value, held-out score) |",
        "|---|---|---|---|",
    ]
    for key, v in sw["settings"].items():
        scores = "; ".join(
            f"{val}: " + ", ".join(f"{d} {num(x, '{:.1f}')}" for d, x in by_d.items())
            for val, by_d in v["scores"].items()
        )
        rot = "; ".join(
            f"{'+'.join(r['tuned_on'])} -> {r['chosen']:g} "
            f"({r['held_out_device']}: {num(r['held_out_score'], '{:.1f}')})"
            for r in v["rotations"]
        )
        out.append(f"| {SWEEP_LABELS.get(key, key)} | {v['default']:g} | {scores} | {rot} |")
    return out


def world_sections(st: dict[str, Any], main_summary: dict[str, Any]) -> list[str]:
    out: list[str] = []
    s0 = st.get("sigma0")
    if s0:
        out += [
            "\n## Study: the profiles' own world (sigma 0)\n",
            "The same grid where the truth *is* the profiles (no hidden deviations, exact energy estimates): the "
            "difference to the headline is what the hidden world costs each learner. Cold window.\n",
            "| learner, world | energy gap | QoS gap | category accuracy |",
            "|---|---|---|---|",
        ]
        for p in ("autoscale", "autoscale-paper"):
            out.append(_gaps_row(f"{p}, hidden world (headline)", main_summary, p))
            out.append(_gaps_row(f"{p}, sigma 0", s0["summary"], p))
    sm = st.get("streaming")
    if sm:
        out += [
            "\n## Study: streaming (30 FPS, QoS 33.3 ms for vision; Fig. 10)\n",
            "| learner | energy gap | QoS gap | category accuracy |",
            "|---|---|---|---|",
        ]
        out += [_gaps_row(p, sm["summary"], p) for p in ("autoscale", "autoscale-paper")]
    return out


def swap_section(st: dict[str, Any]) -> list[str]:
    sw = st.get("swap")
    if not sw:
        return []
    out = [
        "\n## Study: swap table (what makes the paper's learner miss)\n",
        "The paper's learner (Algorithm 1: random initial values in [0, 1), constant learning rate 0.9, eq. 5) with "
        "one part turned into the improved Q-table learner's (`--learner table`), and the improved one with one part "
        "turned back; cold window, held-out seeds. S' is the request's own state unless the row says it is the next "
        "observed one. The default (prior) learner is not in this table: it has none of these parts but the reward.\n",
        "| learner | energy gap | QoS gap |",
        "|---|---|---|",
    ]
    out += [f"| {k} | {num(v['energy_gap_pct'])} % | {num(v['qos_gap_pp'])} pp |" for k, v in sw.items()]
    return out


def overhead_section(st: dict[str, Any]) -> list[str]:
    ov = st.get("overhead")
    if not ov:
        return []
    out = [
        "\n## Study: the decider's own energy (paper Sec. VI-C)\n",
        f"Modelled from a host measurement, not measured on a phone: {ov['source']}, charged at one phone CPU core's "
        "top-step busy power, against AutoScale's mean energy per inference (cold).\n",
        "| phone | core power | per decision, exploiting | per training step | share exploiting | share training "
        "| paper |",
        "|---|---|---|---|---|---|---|",
    ]
    for dev, v in ov["per_device"].items():
        out.append(
            f"| {dev} | {v['core_power_w']:.2f} W | {v['exploit_uj']:.1f} uJ | {v['train_uj']:.1f} uJ | "
            f"{num(v['exploit_share_pct'], '{:.3f}')} % | {num(v['train_share_pct'], '{:.3f}')} % | "
            f"{PAPER_OVERHEAD['exploit_pct']} % / {PAPER_OVERHEAD['train_pct']} % |"
        )
    return out
