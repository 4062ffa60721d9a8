"""What an evaluation runs (``EvalConfig``) and the scenario groups it reports.

Kept apart from the evaluation itself so that the results contract (``services.evaluation.results``)
and the CLI can name the configuration without importing the simulator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, with_config

from services.core.reward import RewardWeights
from services.core.schemas import POLICY_NAMES

DEFAULT_DEVICES = ("mi8pro", "galaxy_s10e", "moto_x_force")
STATIC = ("s1", "s2", "s3", "s4", "s5")
DYNAMIC = ("d1", "d2", "d3", "d4")
DEFAULT_SCENARIOS = STATIC + DYNAMIC
# AutoScale as configured (EvalConfig.reward_mode / q_init / lr_schedule) and as published
# (eq. 5, random initial values, constant learning rate), evaluated side by side.
AUTOSCALE = ("autoscale", "autoscale-paper")
EVAL_POLICIES: tuple[str, ...] = (*POLICY_NAMES, "autoscale-paper")


# extra="forbid": results.json's "config" must be exactly these fields (services.evaluation.results).
@with_config(ConfigDict(extra="forbid"))
@dataclass
class EvalConfig:
    """One evaluation's configuration; written as results.json's ``config``."""

    devices: list[str] = field(default_factory=lambda: list(DEFAULT_DEVICES))
    scenarios: list[str] = field(default_factory=lambda: list(DEFAULT_SCENARIOS))
    models: list[str] | None = None  # None: the zoo's ten
    policies: list[str] = field(default_factory=lambda: list(EVAL_POLICIES))
    runs: int = 100  # training inferences per (network, scenario)
    test_runs: int = 50  # measured test inferences per (held-out network, scenario) and window
    adapt_runs: int = 100  # online inferences of the held-out network between the cold and adapted windows
    predictor_samples: int = 600  # training observations per fold for each predictor
    predictor_test_runs: int = 5
    seed: int = 0
    noise_sigma: float = 0.07  # lognormal sigma of measured latency/energy around the model
    peer: str = "galaxy_tab_s6"
    cloud: str = "cloud_p100"
    profiles_dir: Path | None = None
    scenarios_dir: Path | None = None
    transfer_source: str = "mi8pro"
    convergence_runs: int = 100
    convergence_tolerance: float = 0.05  # greedy reward within 5 % of Opt's = converged
    accuracy_targets: list[float | None] = field(default_factory=lambda: [None, 50.0, 65.0, 70.0])
    accuracy_runs: int = 20  # training runs per (network, scenario) of the accuracy-target study
    accuracy_test_runs: int = 20  # test inferences per (held-out network, static scenario) of that study
    workers: int = 2
    extras: bool = True  # convergence, transfer and accuracy-target studies
    # "autoscale"'s learner: "prior" (Q-learning of the residual over the device profile's corrected
    # physics, services.core.policies.prior) or "table" (the Q table alone, configured below:
    # QParams.improved() by default).
    learner: str = "prior"
    # AutoScale as configured ("autoscale"); "autoscale-paper" always uses eq. 5, random initial
    # values and the constant learning rate. Every other learner gets reward_mode's reward too
    # (as in the decider, which computes one reward per inference).
    reward_mode: str = "qos"
    q_init: str = "nearest"
    lr_schedule: str = "visits"
    init_optimism: float = 0.0
    explore_bonus: float = 0.2
    explore_untried: bool = True
    near_radius: int | None = 4
    discount: float = 0.1  # "autoscale" only; the paper's variant always uses Algorithm 1's 0.1
    lr_floor: float = 0.05
    qos_penalty: float = 2.0

    def weights(self) -> RewardWeights:
        return RewardWeights(qos_penalty=self.qos_penalty)

    def reward_of(self, policy: str) -> tuple[str, RewardWeights]:
        """The reward (mode, weights) ``policy`` learns from."""
        return ("paper", RewardWeights()) if policy == "autoscale-paper" else (self.reward_mode, self.weights())

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("profiles_dir", "scenarios_dir"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d
