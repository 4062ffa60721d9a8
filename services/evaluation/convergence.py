"""Fig. 14: how fast AutoScale converges from scratch, and from a table transferred from another
device."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from services.core.policies import QTable
from services.core.policies.qlearning import transfer_table, validate_export
from services.evaluation.config import AUTOSCALE, STATIC, EvalConfig
from services.evaluation.contenders import autoscale_policy
from services.evaluation.simulator import run_steps, set_exploration
from services.evaluation.tuning import tuned_config
from services.evaluation.world import seed_of, world_of


def convergence_curve(
    cfg: EvalConfig,
    device: str,
    scenarios: Sequence[str],
    table: QTable | None = None,
    tag: str = "conv",
    variant: str = "autoscale",
) -> dict[str, Any]:
    """From scratch (or from ``table``): every (network, scenario) learnt in parallel, run by run.

    Run r = the r-th inference of each (network, scenario), in a shuffled order, epsilon 0.1.
    After each run, for every block, the action the learner would exploit now (epsilon 0) is
    scored on the noise-free model:

    * ``energy_gap``: expected energy of the exploited actions / Opt's - 1 (summed over blocks),
      and ``qos_miss``: share of blocks whose exploited action misses QoS in expectation where
      Opt's meets it -- the headline yardstick, the same for every variant.
      ``runs_to_converge`` (the reported one): the first run from which the 5-run trailing
      moving averages of both stay within ``convergence_tolerance`` (|energy gap| <= 5 %, QoS
      misses <= 5 % of the blocks); ``runs_to_converge_strict``: the same without smoothing.
    * ``gap``: sum over blocks of (best expected reward - the exploited action's expected reward)
      / sum |best expected reward|, "expected" under the outcome noise, "best" = what a perfect
      learner of this variant's own reward picks; ``runs_to_converge_reward``: first run from which
      its 5-run moving average stays within the tolerance.
    * ``reward``: the mean measured reward of the run (the curve of the paper's Fig. 14, with
      exploration); ``reward_stable_run``: the first run from which its 5-run moving average stays
      within the tolerance of the final level (mean of the last 10 runs).
    """
    world = world_of(cfg, device)
    cfg = tuned_config(cfg, world.device)  # after world_of: the world does not depend on learner settings
    qt = table if table is not None else QTable()
    policy = autoscale_policy(variant, cfg, cfg.seed, qt, mesh=world.mesh)
    mode, weights = cfg.reward_of(variant)
    rng = random.Random(seed_of(cfg.seed, device, tag))
    n = cfg.convergence_runs
    blocks = [world.block(m, s, "conv", n) for m in world.features for s in scenarios]
    exp_r = [b.expected_rewards(mode, weights) for b in blocks]
    best = [b.reward_argmax(mode, weights) for b in blocks]
    reward_curve, gap_curve, energy_curve, qos_curve = [], [], [], []
    for r in range(n):
        order = list(range(len(blocks)))
        rng.shuffle(order)
        tr = run_steps(policy, [(blocks[b], r) for b in order], rng, reward_mode=mode, weights=weights)
        reward_curve.append(float(np.mean(tr.reward)))
        old = set_exploration(policy, 0.0)
        g_sum = b_sum = e_g = e_o = 0.0
        misses = 0
        for b in order:
            blk = blocks[b]
            j = blk.case.index[policy.decide(blk.context(r), rng).target.id]
            k, o = int(best[b][r]), int(blk.opt[r])
            g_sum += exp_r[b][r, k] - exp_r[b][r, j]
            b_sum += abs(exp_r[b][r, k])
            e_g += blk.energy[r, j]
            e_o += blk.energy[r, o]
            q = blk.case.qos_s
            misses += bool(blk.latency[r, j] >= q and blk.latency[r, o] < q)
        set_exploration(policy, old if old is not None else 0.1)
        gap_curve.append(max(0.0, g_sum / b_sum) if b_sum > 0 else 0.0)
        energy_curve.append(e_g / e_o - 1.0 if e_o > 0 else 0.0)
        qos_curve.append(misses / len(blocks))
    tol = cfg.convergence_tolerance
    e_ma, q_ma, g_ma = _trailing_mean(energy_curve), _trailing_mean(qos_curve), _trailing_mean(gap_curve)
    return {
        "reward": reward_curve,
        "gap": gap_curve,
        "energy_gap": energy_curve,
        "qos_miss": qos_curve,
        "runs_to_converge": _first_run_from_which(
            [abs(e) <= tol and q <= tol for e, q in zip(e_ma, q_ma, strict=True)]
        ),
        "runs_to_converge_strict": _first_run_from_which(
            [abs(e) <= tol and q <= tol for e, q in zip(energy_curve, qos_curve, strict=True)]
        ),
        "runs_to_converge_reward": runs_to_converge(g_ma, tol),
        "reward_stable_run": reward_stable_run(reward_curve, tol),
        "table": qt,
    }


def _trailing_mean(x: Sequence[float], window: int = 5) -> list[float]:
    a = np.asarray(x, dtype=float)
    c = np.concatenate([[0.0], np.cumsum(a)])
    return [float((c[i + 1] - c[max(0, i + 1 - window)]) / (i + 1 - max(0, i + 1 - window))) for i in range(len(a))]


def _first_run_from_which(ok: Sequence[bool]) -> int | None:
    """1-based index of the first run from which ``ok`` holds to the end (None: never)."""
    bad = [i for i, v in enumerate(ok) if not v]
    if not ok:
        return None
    if not bad:
        return 1
    return bad[-1] + 2 if bad[-1] + 1 < len(ok) else None


def runs_to_converge(gap: Sequence[float], tol: float) -> int | None:
    """First run from which the greedy gap stays within ``tol`` (None: never)."""
    for r in range(len(gap)):
        if all(g <= tol for g in gap[r:]):
            return r + 1
    return None


def reward_stable_run(reward: Sequence[float], tol: float, window: int = 5, tail: int = 10) -> int | None:
    """First run from which the ``window``-run moving average of the reward stays within ``tol``
    (relative) of its final level, the mean of the last ``tail`` runs (None: never)."""
    if len(reward) < max(window, tail):
        return None
    x = np.asarray(reward, dtype=float)
    final = float(x[-tail:].mean())
    ma = np.convolve(x, np.ones(window) / window, mode="valid")  # ma[k] covers runs k .. k+window-1
    ok = np.abs(ma - final) <= tol * abs(final)
    for k in range(len(ma)):
        if ok[k:].all():
            return k + window
    return None


def run_convergence_and_transfer(cfg: EvalConfig) -> dict[str, Any]:
    """Fig. 14: convergence from scratch per device and with a table transferred from the source,
    for every AutoScale variant evaluated."""
    names = list(world_of(cfg, cfg.devices[0]).scenarios)
    static = [s for s in names if s in STATIC] or names[:1]
    variants = [v for v in AUTOSCALE if v in cfg.policies] or ["autoscale"]
    by_name = {world_of(cfg, d).device: d for d in cfg.devices}
    src_name = cfg.transfer_source if cfg.transfer_source in by_name else next(iter(by_name))
    src = by_name[src_name]
    out: dict[str, Any] = {
        "scenarios": static,
        "tolerance": cfg.convergence_tolerance,
        "source": src_name,
        "variants": {},
    }
    for variant in variants:
        v_out: dict[str, Any] = {"scratch": {}, "transfer": {}}
        src_curve = None
        for name, d in by_name.items():
            c = convergence_curve(cfg, d, static, tag="conv", variant=variant)
            v_out["scratch"][name] = {k: v for k, v in c.items() if k != "table"}
            if d == src:
                src_curve = c
        if src_curve is not None and cfg.study("transfer"):
            src_actions = [t.id for t in world_of(cfg, src).mesh.targets()]
            exported = validate_export(src_curve["table"].export(src_name, src_actions))
            for name, d in by_name.items():
                if d == src:
                    continue
                dest_actions = [t.id for t in world_of(cfg, d).mesh.targets()]
                table, report = transfer_table(exported, name, dest_actions)
                qt = QTable()
                qt.load(table)
                c = convergence_curve(cfg, d, static, table=qt, tag="conv-transfer", variant=variant)
                v_out["transfer"][name] = {k: v for k, v in c.items() if k != "table"}
                v_out["transfer"][name]["entries_copied"] = report.entries_copied
        out["variants"][variant] = v_out
    # The configured AutoScale's curves at the top level too (the figures and older readers use them).
    main = out["variants"].get("autoscale") or next(iter(out["variants"].values()))
    out["scratch"], out["transfer"] = main["scratch"], main["transfer"]
    return out
