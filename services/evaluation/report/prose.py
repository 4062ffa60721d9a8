"""The report's prose: what was run and what it cost, what is simulated, what is hidden from the
learners, what each setting was chosen on, and the definitions every number relies on."""

from __future__ import annotations

from typing import Any

from services.evaluation.report.fmt import num


def setup(res: dict[str, Any]) -> list[str]:
    """The title, what was evaluated and what it cost."""
    cfg, t = res["config"], res["timing"]
    cpu = t.get("cpu_s")
    return [
        "# AutoScale evaluation report\n",
        f"Command: `autoscale evaluate` with seeds {cfg['seeds']}, studies {cfg['studies'] or 'none'}; "
        f"{len(res['per_case'])} phones x {len(res['models'])} networks (leave-one-out) x "
        f"{len({s for d in res['per_case'].values() for s in d})} scenarios; {cfg['runs']} training runs per "
        f"(network, scenario), {cfg['test_runs']} inferences per window. Total **{t['wall_s']:.1f} s** wall with "
        f"{cfg['workers']} worker process(es), **{num(cpu, '{:.0f}')} CPU-seconds** (this process and its workers); "
        f"{t['decisions']:,} simulated decisions in the leave-one-out grid.\n",
    ]


def protocol(res: dict[str, Any]) -> list[str]:
    """What is simulated, what is hidden, what was tuned on what."""
    p, cfg = res["protocol"], res["config"]
    w = p["world"]
    out = [
        "\n## The protocol: what is simulated, hidden and tuned\n",
        "- **Simulated**: everything. Latency and energy come from the device profiles' cost model "
        "(paper eqs. 1-4, `services/core/costmodel.py`) plus the phone's base power (SoC + display idle, as the "
        "paper's whole-phone meter measured it), evaluated in a *hidden true world* that deviates from the "
        f"profiles: per device x processor x precision latency and power multipliers (lognormal, log-sd "
        f"{w['sigma']}), a network x processor interaction (log-sd {w['sigma'] / 2:g}), Wi-Fi / Wi-Fi Direct "
        f"goodput and radio power multipliers and the base power's (log-sd {w['sigma']}), drawn from each seed. "
        f"One run's outcome adds lognormal noise (log-sd {w['noise_sigma']}).\n",
        "- **Hidden from every policy**: the true world. A policy receives the profiles (what the decider knows), "
        "each inference's context (features, Table I state, conditions, candidates) and the *observed* outcome: "
        "the measured latency and the phone's energy *estimate* (eqs. 1-4 on that latency), which errs from the "
        f"true energy by a hidden per-target bias (log-sd {w['estimator_sigma']:.3f}, MAPE ~7.3 % as the paper "
        "reports for its estimator). Rewards are computed from the observed outcome; Opt (paper fn. 8) and "
        "every score use the true costs; Edge Best / Connected Edge are set offline from the true costs, as the "
        "paper set its baselines by measurement. A property test walks every policy-facing object "
        "(`tests/test_truth.py`).\n",
        f"- **Held out**: seeds {p['seeds']} (settings were chosen on seeds {p['tuning_seeds']}); the phone(s) "
        f"{', '.join(p['held_out_devices']) or '-'} and the trace(s) {', '.join(p['held_out_scenarios']) or '-'}, "
        "on which nothing was tuned; the paper's phones are each reported with settings chosen on the other two "
        "(leave-one-device-out, `--study sweep`).\n",
        "- **Windows**: *cold* = leave-one-network-out with no inference of the held-out network before it is "
        f"scored (the headline); then after {', '.join(str(k) for k in cfg['curve_runs'])} online inferences of it. "
        "Every scenario starts from the same trained state. Every contender gets the same data in every window.\n",
        "\n### What each learner setting was chosen on\n",
        "| setting | value | chosen on |",
        "|---|---|---|",
    ]
    out += [f"| {r['setting']} | {r['value']} | {r['chosen_on']} |" for r in p["settings"]]
    return out


def definitions() -> list[str]:
    """The metrics, defined once."""
    return [
        "\n## Definitions\n",
        "- **Energy gap to Opt** = mean over (phone, scenario) of (sum of the policy's true energy over the "
        "networks / Opt's - 1). **QoS-violation gap** = mean over (phone, scenario) of the policy's share of "
        "inferences with latency >= the QoS target (50 ms vision, 100 ms MobileBERT; 1/30 s when streaming) minus "
        "Opt's, in percentage points.\n",
        "- **Exact-action accuracy** = share of decisions equal to Opt's (DVFS step included); **category "
        "accuracy** = at Fig. 13's granularity (location x processor x precision).\n",
        "- **PPW** = inferences per joule of the phone; *normalised to Edge (CPU FP32)* per case = "
        "E(Edge CPU FP32) / E(policy), averaged over cases; *improvement over X* = that mean for AutoScale / "
        "for X.\n",
        "- **Opt** = the paper's oracle (fn. 8): min true expected energy meeting QoS and accuracy.\n",
    ]
