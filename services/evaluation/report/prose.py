"""The report's opening prose: what was run, how long it took, the two AutoScale variants and
the definitions every later number relies on."""

from __future__ import annotations

from typing import Any

from services.evaluation.report.fmt import num


def setup(res: dict[str, Any]) -> list[str]:
    """The title, what was evaluated and what it cost."""
    s, cfg, t = res["summary"], res["config"], res["timing"]
    cpu = t.get("cpu_s")
    return [
        "# AutoScale evaluation report\n",
        f"Devices: {', '.join(res['per_case'])}. "
        f"Scenarios: {', '.join(s['static_scenarios'] + s['dynamic_scenarios'])}. "
        f"Networks: {', '.join(res['models'])}. Seed {cfg['seed']}; "
        f"{cfg['runs']} training runs per (network, scenario), "
        f"{cfg['test_runs']} test inferences per (held-out network, scenario) "
        f"(predictors: {cfg['predictor_samples']} training samples per fold, "
        f"{cfg['predictor_test_runs']} test inferences); "
        f"outcome noise: lognormal sigma {cfg['noise_sigma']}.\n",
        f"Total time **{t['wall_s']:.1f} s** wall with {cfg['workers']} worker process(es), "
        f"**{num(cpu, '{:.0f}')} CPU-seconds** (this process and its workers; "
        f"{num(None if cpu is None else cpu / max(cfg['workers'], 1), '{:.0f}')} s "
        f"if the {cfg['workers']} cores were otherwise "
        f"idle); {t['decisions']:,} simulated decisions in the leave-one-out experiment, "
        f"**{t['decisions_per_s']:,.0f} decisions/s** overall.\n",
    ]


def variants(cfg: dict[str, Any]) -> list[str]:
    """What sets the published AutoScale and the improved one apart."""
    return [
        "## The two AutoScale variants\n",
        "- **AutoScale (paper)** (`autoscale-paper`): Algorithm 1 and eq. 5 exactly as published -- random initial Q "
        "values in [0, 1), learning rate 0.9, discount 0.1, epsilon-greedy (0.1), reward eq. 5 in mJ / ms with "
        "alpha = beta = 0.1.\n"
        f"- **AutoScale (improved)** (`autoscale`, as configured here: reward `{cfg.get('reward_mode')}`, "
        f"q_init `{cfg.get('q_init')}`, lr_schedule `{cfg.get('lr_schedule')}`, "
        f"explore_bonus {cfg.get('explore_bonus')}, "
        f"explore_untried {cfg.get('explore_untried')}): the same tabular Q-learner over the same Table I states and "
        'actions with (1) the reward aligned with Opt (`reward_mode="qos"`: -E within QoS, -E x (1 + '
        f"{cfg.get('qos_penalty', 2.0):g}) on a QoS miss; no bonus for being slower), (2) initial values borrowed "
        "from the "
        'nearest state in Table I bin space that holds the action, rescaled (`q_init="nearest"`; the paper\'s transfer '
        "learning applied across states), (3) a visit-count learning rate 1/(n+1) floored at "
        f'{cfg.get("lr_floor", 0.05)} (`lr_schedule="visits"`: averages the measurement noise out), (4) while '
        "exploring "
        "(epsilon > 0), every action of a state is tried once before any is retried, and a UCB-style bonus "
        "|Q| x c x sqrt(ln N / (n+1)) makes rarely tried actions retried -- exploitation (epsilon 0) ranks Q alone. "
        "Every other learner (LinUCB, BO, SVM/KNN labels) gets the same reward as the improved AutoScale, as in the "
        "decider, which computes one reward per inference.\n"
        "- The decider's defaults (`services/common/settings.py`) are the improved variant, because it is better on "
        "every headline metric below; `reward_mode=paper`, `q_init=random`, `lr_schedule=constant`, "
        "`explore_bonus=0`, `explore_untried=false` restore Algorithm 1 as published.\n",
    ]


def definitions(cfg: dict[str, Any]) -> list[str]:
    """The metrics and the methodology, defined once."""
    return [
        "## Definitions\n",
        "- **PPW** (performance per watt) = inferences per joule = 1 / (the phone's energy per inference, eqs. 1-4). "
        "*PPW normalised to Edge (CPU FP32)* for one (device, scenario, network) = E(Edge CPU FP32) / E(policy); "
        "averages are arithmetic means over those cases. "
        "*Improvement over X* = mean normalised PPW of AutoScale / that of X.\n"
        "- **Energy gap to Opt** = mean over (device, scenario) of "
        "(sum of AutoScale's measured energy over the networks / Opt's - 1).\n"
        "- **QoS-violation gap** = mean over (device, scenario) of (AutoScale's share of inferences with measured "
        "latency "
        ">= the QoS target - Opt's share), in percentage points (QoS 50 ms vision, 100 ms MobileBERT).\n"
        "- **Prediction accuracy** = share of test decisions equal to Opt's (exact action incl. DVFS step); "
        "*category accuracy* counts a match at Fig. 13's granularity (location x processor x precision). "
        "*Tie-rule accuracy* (a separate, looser metric, never a replacement): the decision is Opt's, "
        "or its expected energy "
        "is within 1 % of Opt's and it meets QoS in expectation whenever Opt's does -- the paper's remark that "
        "AutoScale "
        '"mis-predicts only when the energy difference is less than 1 %".\n'
        "- **Opt** = the paper's oracle (fn. 8): min expected energy meeting QoS and accuracy on the noise-free "
        "model.\n"
        "- **Perfect learner of a reward** = the argmax of that reward's expectation under the outcome noise "
        "(closed form, "
        "`services.core.reward.reward_expected`): the best any learner of that reward can do; *its agreement with Opt* "
        "is "
        "the ceiling that reward allows.\n"
        "- Methodology: leave-one-out across the networks (train on nine, test the tenth) per device. Per scenario the "
        f"held-out network is measured in two windows of {cfg['test_runs']} inferences: *cold start*, right after the "
        f"leave-one-out training, and *adapted*, after {cfg.get('adapt_runs', 0)} further online inferences in which "
        "AutoScale keeps learning (epsilon 0.1; LinUCB and the static-best baselines keep learning too; "
        "LR/SVR/SVM/KNN/BO "
        "are trained offline on profiling samples and are not refitted). Both windows exploit (epsilon 0). "
        "Unless marked *cold start*, numbers are from the adapted window.\n",
    ]
