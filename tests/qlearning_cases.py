"""Small synthetic decision problems shared by the Q-learning tests."""

from __future__ import annotations

from hypothesis import settings

from services.core.policies.base import Candidate, DecisionContext
from services.core.schemas import ModelFeatures, RuntimeConditions, Target

FAST = settings(max_examples=100, deadline=None)
FEAT = ModelFeatures(conv=14, fc=1, rc=0, macs=569_000_000)
COND = RuntimeConditions()


def cand(action: str, accuracy: float = 70.0) -> Candidate:
    return Candidate(Target.parse(action), accuracy)


def ctx(
    cands: tuple[Candidate, ...], state: int = 7, accuracy_min: float | None = None, qos_s: float = 0.05
) -> DecisionContext:
    return DecisionContext(
        model="m", features=FEAT, conditions=COND, state=state, candidates=cands, qos_s=qos_s, accuracy_min=accuracy_min
    )


ARMS = {  # action -> (energy mJ, latency ms) on a small synthetic problem, per state
    0: {
        "edge/cpu/fp32@3": (120.0, 40.0),
        "edge/gpu/fp16@2": (35.0, 20.0),
        "edge/dsp/int8": (18.0, 30.0),
        "cloud/gpu/fp32": (60.0, 35.0),
        "peer/gpu/fp32": (45.0, 45.0),
    },
    1: {
        "edge/cpu/fp32@3": (120.0, 40.0),
        "edge/gpu/fp16@2": (35.0, 20.0),
        "edge/dsp/int8": (40.0, 80.0),
        "cloud/gpu/fp32": (25.0, 30.0),
        "peer/gpu/fp32": (45.0, 45.0),
    },
}
# State 1: a co-runner slows the DSP past QoS and raises its energy; the cloud wins. (Eq. 5 only
# drops the alpha*latency term on a QoS miss, so a miss alone is a small penalty.)
BEST = {0: "edge/dsp/int8", 1: "cloud/gpu/fp32"}
