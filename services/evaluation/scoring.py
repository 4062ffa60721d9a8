"""How a test window is scored against Opt: sums over its inferences (``Agg``) and how close Opt's
choice was to its runner-up (``noise_floor``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from services.evaluation.simulator import Block, Trace


def category(target_id: str) -> str:
    """Fig. 13's target category of an action (DVFS steps aggregated)."""
    runner, proc, prec = target_id.partition("@")[0].split("/")
    return f"edge-{proc}-{prec}" if runner == "edge" else runner


@dataclass
class Agg:
    """Sums over test inferences of one (device, scenario, model, policy)."""

    n: int = 0
    energy_j: float = 0.0
    latency_s: float = 0.0
    qos_violations: int = 0
    accuracy: float = 0.0
    reward: float = 0.0
    opt_energy_j: float = 0.0
    opt_match: int = 0
    opt_category_match: int = 0
    reward_oracle_match: int = 0  # choice == argmax of the expected reward (the policy's reward mode)
    reward_oracle_is_opt: int = 0  # that argmax == Opt's choice (the ceiling that reward allows)
    # Tie rule (paper Sec. VI-B: "mis-predicts only when the energy difference ... is less than
    # 1 %"): the choice's expected energy is within 1 % of Opt's and it meets QoS in expectation
    # whenever Opt's does. A separate metric; never replaces the exact match.
    opt_tie_match: int = 0
    qos_expected_miss: int = 0  # choices whose *expected* latency misses QoS while Opt's meets it
    opt_qos_violations: int = 0  # Opt's measured QoS misses on the same inferences
    expected_energy_j: float = 0.0  # sum of the choices' expected (noise-free) energy
    opt_expected_energy_j: float = 0.0
    choices: dict[str, int] = field(default_factory=dict)  # category -> count
    opt_choices: dict[str, int] = field(default_factory=dict)

    def add(self, tr: Trace, cands_ids: Sequence[str], start: int = 0) -> None:
        a = tr.arrays()
        sl = slice(start, None)
        ch, op = a["choice"][sl], a["opt"][sl]
        self.n += len(ch)
        self.energy_j += float(a["energy_j"][sl].sum())
        self.latency_s += float(a["latency_s"][sl].sum())
        self.qos_violations += int((a["latency_s"][sl] >= a["qos_s"][sl]).sum())
        self.accuracy += float(a["accuracy"][sl].sum())
        self.reward += float(a["reward"][sl].sum())
        self.opt_match += int((ch == op).sum())
        rb = a["best_reward"][sl]
        self.reward_oracle_match += int((ch == rb).sum())
        self.reward_oracle_is_opt += int((rb == op).sum())
        ee, oe = a["expected_energy_j"][sl], a["opt_expected_energy_j"][sl]
        feas = a["expected_qos_met"][sl] | ~a["opt_expected_qos_met"][sl]
        self.opt_tie_match += int(((ch == op) | ((ee <= 1.01 * oe) & feas)).sum())
        self.qos_expected_miss += int((~feas).sum())
        self.opt_qos_violations += int((a["opt_latency_s"][sl] >= a["qos_s"][sl]).sum())
        self.expected_energy_j += float(ee.sum())
        self.opt_expected_energy_j += float(oe.sum())
        for c, o in zip(ch.tolist(), op.tolist(), strict=True):
            cc, oc = category(cands_ids[c]), category(cands_ids[o])
            self.choices[cc] = self.choices.get(cc, 0) + 1
            self.opt_choices[oc] = self.opt_choices.get(oc, 0) + 1
            self.opt_category_match += cc == oc

    def merge(self, other: Agg) -> None:
        """Add another window's sums (the same case under another seed)."""
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, dict):
                for k, v in b.items():
                    a[k] = a.get(k, 0) + v
            else:
                setattr(self, f.name, a + b)

    def summary(self) -> dict[str, Any]:
        n = max(self.n, 1)
        return {
            "n": self.n,
            "energy_mj": 1e3 * self.energy_j / n,
            "latency_ms": 1e3 * self.latency_s / n,
            "qos_violation": self.qos_violations / n,
            "accuracy": self.accuracy / n,
            "reward": self.reward / n,
            "prediction_accuracy": self.opt_match / n,
            "category_accuracy": self.opt_category_match / n,
            "reward_oracle_accuracy": self.reward_oracle_match / n,
            "reward_oracle_is_opt": self.reward_oracle_is_opt / n,
            "tie_accuracy": self.opt_tie_match / n,
            "qos_expected_miss": self.qos_expected_miss / n,
            "opt_qos_violation": self.opt_qos_violations / n,
            "expected_energy_mj": 1e3 * self.expected_energy_j / n,
            "opt_expected_energy_mj": 1e3 * self.opt_expected_energy_j / n,
            "choices": dict(sorted(self.choices.items())),
            "opt_choices": dict(sorted(self.opt_choices.items())),
        }


def noise_floor(block: Block, windows: Sequence[range]) -> dict[str, int]:
    """How close Opt's choice is to the runner-up on the measured test inferences.

    For each inference: the runner-up = the cheapest (expected energy) other target in Opt's own
    pool (meeting QoS and accuracy, or accuracy only where nothing meets QoS). ``lt1``: it is
    within 1 % of Opt's energy (the paper's tie rule); ``lt_sigma``: within the outcome noise's
    sigma, so that a single measurement of each orders them wrongly with probability > ~25 %."""
    c = block.case
    idx = np.array([i for w in windows for i in w], dtype=np.int64)
    lat, en = block.latency[idx], block.energy[idx]
    if c.accuracy_min is None:
        acc_ok = np.ones(len(c.accuracy), dtype=bool)
    else:
        acc_ok = c.accuracy >= c.accuracy_min
        if not acc_ok.any():
            acc_ok = c.accuracy == c.accuracy.max()
    ok = acc_ok[None, :] & (lat < c.qos_s)
    pool = np.where(ok.any(axis=1, keepdims=True), ok, acc_ok[None, :])
    e = np.where(pool, en, np.inf)
    opt = block.opt[idx]
    e_opt = e[np.arange(len(idx)), opt]
    e[np.arange(len(idx)), opt] = np.inf
    runner = e.min(axis=1)
    rel = runner / e_opt - 1.0
    sigma = max(block.noise_sigma, 1e-12)
    return {
        "n": len(idx),
        "lt1": int((rel < 0.01).sum()),
        "lt_sigma": int((rel < sigma).sum()),
        "lt_half_sigma": int((rel < sigma / 2).sum()),
    }
