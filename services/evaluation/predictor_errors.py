"""How far the prediction-based comparators' predictions are from what happened (paper Sec. III-C:
MAPE of LR 13.6/24.6 %, SVR 10.8/21.1 %, BO 9.2/15.7 % without/with runtime variance).

LR and SVR predict each target's energy: their error is every eligible target's predicted energy
against its measured (true) energy. BO's surrogate predicts the reward (in symlog units): its
error is every eligible target's predicted reward against the reward of its observed outcome.
SVM and KNN predict a class (the best target); their misclassification ratio is 1 - the exact-
action accuracy of their exploiting decisions, computed from the scores directly.
"""

from __future__ import annotations

import math

from services.core.policies.base import Policy
from services.core.policies.candidates import eligible_indices
from services.core.policies.featurise import context_vector
from services.core.policies.predictors import BayesOptPolicy, RegressionPolicy
from services.core.reward import RewardWeights
from services.evaluation.simulator import Block


def _symexp(y: float) -> float:
    return math.copysign(math.expm1(abs(y)), y)


MAX_ROWS = 4  # inferences per window and scenario whose predictions are checked (one sklearn call each)


def prediction_errors(
    policy: Policy, block: Block, idx: range, mode: str, weights: RewardWeights
) -> tuple[float, int] | None:
    """(sum of absolute percentage errors, count) over every eligible target of the first
    ``MAX_ROWS`` inferences of a window (``mode``/``weights``: the reward BO learnt); None for a
    policy that predicts no quantity."""
    if not isinstance(policy, (RegressionPolicy, BayesOptPolicy)) or policy.model is None:
        return None
    model = policy.model
    _lat, en_m = block.measured
    rewards = block.rewards(mode, weights)
    total, n = 0.0, 0
    for i in list(idx)[:MAX_ROWS]:
        ctx = block.context(i)
        elig = eligible_indices([c.accuracy for c in ctx.candidates], ctx.accuracy_min, policy.params.accuracy_masking)
        pool = [ctx.candidates[k] for k in elig]
        cols = [block.case.index[c.target.id] for c in pool]
        vec = context_vector(ctx.features, ctx.conditions)
        if isinstance(policy, RegressionPolicy):
            e, _pl = policy.predict(model, pool, vec)
            pred, actual = [float(x) / 1e3 for x in e], [float(en_m[i, j]) for j in cols]
        else:
            mu = model.gp.predict(policy._candidate_matrix(pool, vec, model.vocab))
            pred, actual = [_symexp(float(x)) for x in mu], [float(rewards[i, j]) for j in cols]
        for p_, a_ in zip(pred, actual, strict=True):
            if a_ != 0.0:
                total += abs(p_ - a_) / abs(a_)
                n += 1
    return total, n
