"""The prior learner: AutoScale's Q-learning on top of the device profile's cost model, corrected
online by what the decider observes. See ``policy`` for the algorithm, ``physics`` for the prior,
``services.core.policies.qlearning.corrections`` for the learned family corrections."""

from services.core.policies.prior.params import PriorParams
from services.core.policies.prior.physics import PhysicsPrior, expected_rewards, family_factors, family_of
from services.core.policies.prior.policy import PriorPolicy

__all__ = ["PhysicsPrior", "PriorParams", "PriorPolicy", "expected_rewards", "family_factors", "family_of"]
