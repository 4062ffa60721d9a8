"""Reward of the paper's eq. 5. Pure.

Units follow the paper's use: energy in mJ and latency in ms are what make alpha = beta = 0.1
meaningful against accuracy in percent (an inference costs tens to thousands of mJ).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RewardWeights:
    alpha: float = 0.1  # latency weight
    beta: float = 0.1  # accuracy weight


def reward(
    *,
    energy_mj: float,
    latency_ms: float,
    accuracy: float,
    qos_ms: float,
    accuracy_min: float | None,
    weights: RewardWeights = RewardWeights(),
) -> float:
    """Eq. 5.

    if R_accuracy < requirement: R = R_accuracy - 100
    elif R_latency < QoS:        R = -R_energy + alpha * R_latency + beta * R_accuracy
    else:                        R = -R_energy + beta * R_accuracy
    """
    if accuracy_min is not None and accuracy < accuracy_min:
        return accuracy - 100.0
    if latency_ms < qos_ms:
        return -energy_mj + weights.alpha * latency_ms + weights.beta * accuracy
    return -energy_mj + weights.beta * accuracy
