"""Rewards of a block's every (inference, target) at once: eq. 5 (or the Opt-aligned reward) on
arrays, and its expectation under the block's outcome noise. Pure."""

from __future__ import annotations

import numpy as np

from services.core.reward import ACCURACY_MISS_MJ, ACCURACY_MISS_MJ_PER_POINT, RewardWeights


def reward_matrix(
    energy_j: np.ndarray,
    latency_s: np.ndarray,
    accuracy: np.ndarray,
    qos_s: float,
    accuracy_min: float | None,
    weights: RewardWeights = RewardWeights(),
    mode: str = "paper",
) -> np.ndarray:
    """The reward over arrays: the vectorised twin of ``services.core.reward.reward`` (tested equal)."""
    e_mj, l_ms = energy_j * 1e3, latency_s * 1e3
    acc = np.broadcast_to(accuracy, e_mj.shape)
    met_qos = l_ms < qos_s * 1e3
    if mode == "paper":
        r = np.where(met_qos, -e_mj + weights.alpha * l_ms + weights.beta * acc, -e_mj + weights.beta * acc)
    elif mode == "qos":
        r = np.where(met_qos, -e_mj, -e_mj * (1.0 + weights.qos_penalty))
    else:
        raise ValueError(f"unknown reward mode {mode!r}")
    return _accuracy_branch(r, e_mj, acc, accuracy_min, weights, mode)


def _accuracy_branch(
    r: np.ndarray, e_mj: np.ndarray, acc: np.ndarray, accuracy_min: float | None, weights: RewardWeights, mode: str
) -> np.ndarray:
    """Eq. 5's accuracy-miss branch where ``acc < accuracy_min`` (paper: R_accuracy - 100; qos: the
    worst QoS-miss cost plus a per-point charge), ``r`` elsewhere."""
    if accuracy_min is None:
        return r
    if mode == "paper":
        miss_acc = acc - 100.0
    else:
        miss_acc = (
            -e_mj * (1.0 + weights.qos_penalty) - ACCURACY_MISS_MJ - ACCURACY_MISS_MJ_PER_POINT * (accuracy_min - acc)
        )
    return np.where(acc < accuracy_min, miss_acc, r)


def expected_reward_matrix(
    energy_j: np.ndarray,
    latency_s: np.ndarray,
    accuracy: np.ndarray,
    qos_s: float,
    accuracy_min: float | None,
    sigma: float,
    weights: RewardWeights = RewardWeights(),
    mode: str = "paper",
) -> np.ndarray:
    """E[reward] of each (expected) outcome under the simulator's noise: energy and latency are
    both scaled by one lognormal factor f of unit mean and log-sd ``sigma``. Vectorised twin of
    ``services.core.reward.reward_expected`` (tested equal)."""
    if sigma <= 0.0:
        return reward_matrix(energy_j, latency_s, accuracy, qos_s, accuracy_min, weights, mode)
    from scipy.special import ndtr

    e_mj, l_ms = energy_j * 1e3, latency_s * 1e3
    acc = np.broadcast_to(accuracy, e_mj.shape)
    mu = -0.5 * sigma * sigma
    with np.errstate(divide="ignore"):
        z = (np.log(qos_s * 1e3 / np.maximum(l_ms, 1e-300)) - mu - sigma * sigma) / sigma
    ef_met = ndtr(z)
    if mode == "paper":
        r = -e_mj + weights.alpha * l_ms * ef_met + weights.beta * acc
    elif mode == "qos":
        r = -e_mj * (1.0 + weights.qos_penalty * (1.0 - ef_met))
    else:
        raise ValueError(f"unknown reward mode {mode!r}")
    return _accuracy_branch(r, e_mj, acc, accuracy_min, weights, mode)
