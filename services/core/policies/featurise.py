"""How the prediction-based policies and the bandit see a request: the context vector (NN features
and raw runtime conditions) and the target encoding. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence

from services.core.schemas import Location, ModelFeatures, Precision, Processor, RuntimeConditions, Target
from services.core.state import WEAK_RSSI_DBM


def context_vector(features: ModelFeatures, cond: RuntimeConditions) -> list[float]:
    """NN features and runtime conditions, roughly unit-scaled (raw, not binned: the regressors
    and the bandit get strictly more information than the Table I state)."""
    return [
        features.conv / 100.0,
        features.fc / 20.0,
        features.rc / 30.0,
        math.log10(1.0 + features.macs) / 10.0,
        math.log10(1.0 + features.input_bytes) / 7.0,
        cond.co_cpu,
        cond.co_mem,
        (cond.rssi_wifi_dbm - WEAK_RSSI_DBM) / 20.0,
        (cond.rssi_p2p_dbm - WEAK_RSSI_DBM) / 20.0,
        1.0 if cond.rssi_wifi_dbm <= WEAK_RSSI_DBM else 0.0,
        1.0 if cond.rssi_p2p_dbm <= WEAK_RSSI_DBM else 0.0,
    ]


CONTEXT_DIM = 11
_LOCS = tuple(Location)
_PROCS = tuple(Processor)
_PRECS = tuple(Precision)


def symlog(x: float) -> float:
    """Compress eq. 5 rewards (-thousands .. +tens) to a range a GP / linear model can fit."""
    return math.copysign(math.log1p(abs(x)), x)


class TargetEncoder:
    """Target -> runner/processor/precision one-hots, relative DVFS position, action one-hot.

    The vocabulary of action ids grows as targets appear; a fitted model keeps the vocabulary
    it was fitted with (ids it never saw encode as zeros in that block).
    """

    def __init__(self) -> None:
        self.max_step: dict[tuple[str, str, str], int] = {}
        self._seen: dict[int, object] = {}  # candidate tuples already observed (by identity, held)

    def observe(self, targets: Sequence[Target]) -> None:
        for t in targets:
            if t.dvfs is not None:
                k = (t.runner.value, t.processor.value, t.precision.value)
                if t.dvfs > self.max_step.get(k, -1):
                    self.max_step[k] = t.dvfs

    def struct(self, t: Target) -> list[float]:
        v = [0.0] * (len(_LOCS) + len(_PROCS) + len(_PRECS) + 1)
        v[_LOCS.index(t.runner)] = 1.0
        v[len(_LOCS) + _PROCS.index(t.processor)] = 1.0
        v[len(_LOCS) + len(_PROCS) + _PRECS.index(t.precision)] = 1.0
        if t.dvfs is None:
            v[-1] = 1.0
        else:
            top = self.max_step.get((t.runner.value, t.processor.value, t.precision.value), t.dvfs)
            v[-1] = t.dvfs / top if top > 0 else 1.0
        return v

    @staticmethod
    def onehot(action: str, vocab: dict[str, int]) -> list[float]:
        v = [0.0] * len(vocab)
        i = vocab.get(action)
        if i is not None:
            v[i] = 1.0
        return v
