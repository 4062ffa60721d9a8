"""Q-learning hyper-parameters: Algorithm 1's (paper Sec. V-C) and the options beyond the paper.

``QParams.paper()`` is Algorithm 1 as published (the dataclass defaults); ``QParams.improved()``
switches every option on (what ``services.evaluation`` reports as "autoscale").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

Q_INITS: tuple[str, ...] = ("random", "nearest")
LR_SCHEDULES: tuple[str, ...] = ("constant", "visits")


class QSettings(Protocol):
    """What ``QParams.from_settings`` reads: ``services.common.settings.Settings`` has these
    (declared here because the pure core does not import the platform's settings)."""

    @property
    def learning_rate(self) -> float: ...
    @property
    def discount(self) -> float: ...
    @property
    def epsilon(self) -> float: ...
    @property
    def accuracy_masking(self) -> bool: ...
    @property
    def seed(self) -> int | None: ...
    @property
    def q_init(self) -> str: ...
    @property
    def lr_schedule(self) -> str: ...
    @property
    def lr_floor(self) -> float: ...
    @property
    def explore_bonus(self) -> float: ...
    @property
    def explore_untried(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class QParams:
    """Hyper-parameters (paper Sec. V-C: lr 0.9, discount 0.1, epsilon 0.1)."""

    learning_rate: float = 0.9
    discount: float = 0.1
    epsilon: float = 0.1
    accuracy_masking: bool = True
    # Random initial Q values are drawn from [init_low, init_high). Eq. 5 rewards are almost
    # always negative (-energy in mJ dominates), so small non-negative initial values are
    # optimistic: greedy selection tries every untried action of a state once before it
    # exploits, which is what lets the table settle within tens of runs.
    init_low: float = 0.0
    init_high: float = 1.0
    init_seed: int = 0
    # --- options beyond the paper (defaults = Algorithm 1 as published; ``improved()``: the
    # --- configuration the evaluation measures as "autoscale") -------------------------------
    # Initial value of a missing entry. "random": the paper's (above). "nearest": borrowed from
    # the nearest state (weighted Table I bin distance, ``_DIM_WEIGHTS``) that holds a value for
    # that action, within ``near_radius``, rescaled to this state (median ratio of this state's
    # values to the lenders' on the actions both hold); an action no state within the radius holds
    # ranks below every known value of the row (twice the worst); a row with nothing known nearby
    # borrows from any distance, else falls back to "random". Needs a table that keeps an
    # ``EntryIndex`` (QTable, QStore); the paper's transfer learning (Sec. VI-C) applied across
    # states, so a network never seen before starts from its neighbours' experience.
    q_init: str = "random"
    near_radius: int | None = 4
    # "nearest": borrowed values made optimistic (> 0) or pessimistic (< 0) by this fraction of
    # their magnitude (0: as estimated).
    init_optimism: float = 0.0
    # "constant": Algorithm 1's learning rate. "visits": max(lr_floor, 1 / (n + 1)) for the
    # (n + 1)-th update of the entry -- the first update replaces the initial value, later ones
    # average the measurement noise out (a sample mean that slowly forgets).
    lr_schedule: str = "constant"
    lr_floor: float = 0.05
    # Exploration bonus (0: off, the paper's pure epsilon-greedy). While exploring (epsilon > 0)
    # the greedy step ranks Q + explore_bonus * |Q| * sqrt(ln(N + 1) / (n + 1)), n = the entry's
    # visits, N = the state's (UCB1's bonus, relative to |Q| so that it means the same at 10 mJ
    # as at 2 J, with an initial value counting as one observation): one unlucky measurement
    # cannot bury an action for good. Pure exploitation (epsilon 0, e.g. the evaluation's test
    # windows) ranks Q alone.
    explore_bonus: float = 0.0
    # While exploring (epsilon > 0), an action never tried in this state ranks above every tried
    # one (UCB1 plays each arm once), the most promising initial value first. Unlike optimistic
    # initial values this never leaks into exploitation: with epsilon 0 an untried action is
    # worth its initial value.
    explore_untried: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {self.discount}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if not (math.isfinite(self.init_low) and math.isfinite(self.init_high) and self.init_low <= self.init_high):
            raise ValueError("init_low <= init_high, both finite")
        if self.q_init not in Q_INITS:
            raise ValueError(f"q_init must be one of {', '.join(Q_INITS)}, got {self.q_init!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0.0 < self.lr_floor <= 1.0:
            raise ValueError(f"lr_floor must be in (0, 1], got {self.lr_floor}")
        if not (math.isfinite(self.init_optimism) and -1.0 < self.init_optimism < 1.0):
            raise ValueError(f"init_optimism must be in (-1, 1), got {self.init_optimism}")
        if not (math.isfinite(self.explore_bonus) and self.explore_bonus >= 0.0):
            raise ValueError(f"explore_bonus must be finite and >= 0, got {self.explore_bonus}")
        if self.near_radius is not None and self.near_radius < 0:
            raise ValueError(f"near_radius must be >= 0 or None, got {self.near_radius}")

    @classmethod
    def improved(cls, **kw: Any) -> QParams:
        """Every option beyond the paper switched on, as evaluated (``services.evaluation``):
        nearest-state initial values, visit-count learning rate, UCB-style exploration that
        tries every action once while exploring, with the values the evaluation's tuning split
        chose (discount 0, lr_floor 0.02, explore_bonus 0.5; the decider's defaults too). Pair it
        with ``reward_mode="qos"``."""
        kw.setdefault("q_init", "nearest")
        kw.setdefault("lr_schedule", "visits")
        kw.setdefault("discount", 0.0)
        kw.setdefault("lr_floor", 0.02)
        kw.setdefault("explore_bonus", 0.5)
        kw.setdefault("explore_untried", True)
        return cls(**kw)

    @classmethod
    def paper(cls, **kw: Any) -> QParams:
        """Algorithm 1 as published: random initial values, constant learning rate."""
        kw.setdefault("q_init", "random")
        kw.setdefault("lr_schedule", "constant")
        return cls(**kw)

    @classmethod
    def from_settings(cls, settings: QSettings, seed: int | None = None) -> QParams:
        """From ``services.common.settings.Settings`` (any object with the ``QSettings`` fields)."""
        s = seed if seed is not None else settings.seed
        return cls(
            learning_rate=float(settings.learning_rate),
            discount=float(settings.discount),
            epsilon=float(settings.epsilon),
            accuracy_masking=bool(settings.accuracy_masking),
            init_seed=int(s) if s is not None else 0,
            q_init=str(settings.q_init),
            lr_schedule=str(settings.lr_schedule),
            lr_floor=float(settings.lr_floor),
            explore_bonus=float(settings.explore_bonus),
            explore_untried=bool(settings.explore_untried),
        )
