"""LinUCB contextual bandit over the candidate targets -- beyond the paper, as a stronger learner.

Disjoint LinUCB (Li et al., WWW 2010): one ridge regression per action from the raw context
(NN features + runtime conditions, not binned) to the reward, and the upper confidence bound
theta_a . x + alpha * sqrt(x^T A_a^-1 x) picks the target. Unlike the Q table it generalises
across contexts (an unseen state still gets a sensible estimate), and its exploration is
directed by uncertainty instead of epsilon.

The reward is eq. 5 passed through symlog: raw rewards span -thousands .. +tens of mJ, and a
linear model in that range would be dominated by the most expensive targets.
"""

from __future__ import annotations

import random

import numpy as np

from services.core.policies.base import Decision, DecisionContext, Outcome
from services.core.policies.candidates import offered
from services.core.policies.featurise import CONTEXT_DIM, context_vector, symlog


class LinUCBPolicy:
    name = "linucb"

    def __init__(self, *, alpha: float = 1.0, ridge: float = 1.0, accuracy_masking: bool = True) -> None:
        self.alpha = alpha
        self.ridge = ridge
        self.accuracy_masking = accuracy_masking
        self.dim = CONTEXT_DIM + 1  # + bias
        self._index: dict[str, int] = {}
        cap = 16
        # Per action: A^-1 (kept by Sherman-Morrison: no inversion per step), b, theta = A^-1 b.
        self._a_inv = np.zeros((cap, self.dim, self.dim))
        self._b = np.zeros((cap, self.dim))
        self._theta = np.zeros((cap, self.dim))
        self.counts = np.zeros(cap, dtype=np.int64)

    def _x(self, ctx: DecisionContext) -> np.ndarray:
        return np.array([1.0, *context_vector(ctx.features, ctx.conditions)])

    def _slot(self, action: str) -> int:
        i = self._index.get(action)
        if i is not None:
            return i
        i = len(self._index)
        if i >= self._a_inv.shape[0]:
            grow = self._a_inv.shape[0]
            self._a_inv = np.concatenate([self._a_inv, np.zeros((grow, self.dim, self.dim))])
            self._b = np.concatenate([self._b, np.zeros((grow, self.dim))])
            self._theta = np.concatenate([self._theta, np.zeros((grow, self.dim))])
            self.counts = np.concatenate([self.counts, np.zeros(grow, dtype=np.int64)])
        self._a_inv[i] = np.eye(self.dim) / self.ridge
        self._index[action] = i
        return i

    def scores(self, ctx: DecisionContext, actions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(mean estimate, confidence width) per action, in the symlog reward scale."""
        x = self._x(ctx)
        idx = np.array([self._slot(a) for a in actions])
        mean = self._theta[idx] @ x
        width = np.sqrt(np.maximum(np.einsum("kij,i,j->k", self._a_inv[idx], x, x), 0.0))
        return mean, width

    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        info, elig = offered(ctx, self.accuracy_masking)
        mean, width = self.scores(ctx, [info.ids[i] for i in elig])
        ucb = mean + self.alpha * width
        j = int(np.argmax(ucb))
        # "Explored" when the confidence bonus, not the estimate, made the choice.
        return Decision(ctx.candidates[elig[j]].target, explored=bool(j != int(np.argmax(mean))))

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None:
        i = self._slot(decision.target.id)
        x = self._x(ctx)
        a_inv = self._a_inv[i]
        ax = a_inv @ x
        a_inv -= np.outer(ax, ax) / (1.0 + x @ ax)
        self._b[i] += symlog(reward) * x
        self._theta[i] = a_inv @ self._b[i]
        self.counts[i] += 1
