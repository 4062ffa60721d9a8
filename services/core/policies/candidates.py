"""What every policy does with the offered candidates: which it may pick, and their ids. Pure.

* ``eligible_indices``: accuracy masking (our default, switchable) never picks a target below
  ``accuracy_min``; with it off we have the paper's penalty-only behaviour, where eq. 5's
  ``R_accuracy - 100`` teaches a learner to avoid them.
* ``epsilon_greedy``: Algorithm 1's action choice over a row of values.
* ``candidate_ids``: a memo of each candidate tuple's action ids, accuracies and positions
  (``CandInfo``), because building ``Target.id`` strings per request would cost more than a
  whole Q-row lookup.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from services.core.policies.base import Candidate, DecisionContext
from services.core.policies.errors import NoCandidate


def eligible_indices(accuracies: Sequence[float], accuracy_min: float | None, masking: bool) -> list[int]:
    """Indices of the candidates the learner may pick.

    With masking on, candidates below ``accuracy_min`` are never picked. If none reaches it
    (the decider answers 422 before deciding, so only a direct caller hits this), we fall back
    to the most accurate candidates: the closest we can get, and eq. 5 still penalises them.
    """
    n = len(accuracies)
    if not masking or accuracy_min is None:
        return list(range(n))
    ok = [i for i in range(n) if accuracies[i] >= accuracy_min]
    if ok or n == 0:
        return ok
    best = max(accuracies)
    return [i for i in range(n) if accuracies[i] == best]


def epsilon_greedy(
    values: Sequence[float], eligible: Sequence[int], epsilon: float, rng: random.Random
) -> tuple[int, bool]:
    """Pick an index among ``eligible``: uniformly with probability epsilon, else the argmax.

    Returns (index, explored). With epsilon == 0 the rng is not even consulted, so a greedy
    policy never explores and does not perturb a shared random stream. Ties go to the first
    candidate (stable, deterministic).
    """
    if not eligible:
        raise NoCandidate("no eligible candidate")
    if epsilon > 0.0 and rng.random() < epsilon:
        return eligible[rng.randrange(len(eligible))], True
    best_i = eligible[0]
    best_v = values[best_i]
    for i in eligible:
        v = values[i]
        if v > best_v:
            best_i, best_v = i, v
    return best_i, False


@dataclass(frozen=True, slots=True)
class CandInfo:
    """A candidate tuple, digested once: action ids, accuracies, every index, id -> position."""

    candidates: tuple[Candidate, ...]
    ids: tuple[str, ...]
    accuracies: tuple[float, ...]
    all_idx: tuple[int, ...]
    index: dict[str, int]  # action id -> position


class _CandidateIds:
    """Memo of candidate ids per candidates tuple.

    ``Target.id`` builds a string on every access; on a 66-action row that alone would cost more
    than the whole lookup. The decider reuses candidate tuples between requests, so a small
    identity-keyed memo (holding the tuple, so its id cannot be recycled) removes that cost.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._memo: dict[int, CandInfo] = {}

    def get(self, cands: tuple[Candidate, ...]) -> CandInfo:
        hit = self._memo.get(id(cands))
        if hit is not None and hit.candidates is cands:
            return hit
        ids = tuple(c.action_id for c in cands)
        info = CandInfo(
            cands,
            ids,
            tuple(float(c.accuracy) for c in cands),
            tuple(range(len(cands))),
            {a: i for i, a in enumerate(ids)},
        )
        if len(self._memo) >= self._size:
            self._memo.pop(next(iter(self._memo)))
        self._memo[id(cands)] = info
        return info


candidate_ids = _CandidateIds()


def offered(ctx: DecisionContext, masking: bool) -> tuple[CandInfo, Sequence[int]]:
    """A request's candidates, digested, and the indices a policy may pick (``eligible_indices``;
    ``info.all_idx`` itself when nothing is masked). NoCandidate when nothing is offered."""
    info = candidate_ids.get(ctx.candidates)
    if not info.ids:
        raise NoCandidate("no candidate target offered")
    if not masking or ctx.accuracy_min is None:
        return info, info.all_idx
    return info, eligible_indices(info.accuracies, ctx.accuracy_min, True)
