"""The decider's long-lived parts, built once by the app factory and injected into routes."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from services.common.auth import check_admin
from services.common.model_store import ModelStore, UnknownModel
from services.common.settings import Settings
from services.core import costmodel
from services.core.policies import PolicySet
from services.core.policies.base import Candidate, Outcome
from services.core.reward import RewardWeights
from services.core.schemas import ModelFeatures, ModelInfo, RuntimeConditions, Target
from services.decider.qstore import QStore
from services.decider.runners import RunnerRegistry
from services.decider.telemetry_cache import TelemetryCache


@dataclass
class ModelCatalog:
    """Model infos by name, served from memory (the store reads disk only on change)."""

    store: ModelStore
    _infos: dict[str, ModelInfo] | None = None

    def reload(self) -> None:
        self._infos = {n: self.store.info(n) for n in self.store.names()}

    def names(self) -> list[str]:
        if self._infos is None:
            self.reload()
        return list(self._infos or {})

    def get(self, name: str) -> ModelInfo:
        if self._infos is None:
            self.reload()
        info = (self._infos or {}).get(name)
        if info is None:
            names = self.names()
            raise UnknownModel(f"unknown model {name!r}; known models: {', '.join(names)}", known=names)
        return info


@dataclass
class Decider:
    settings: Settings
    models: ModelCatalog
    runners: RunnerRegistry
    telemetry: TelemetryCache
    policies: PolicySet
    qstore: QStore
    mesh: costmodel.Mesh
    rng: random.Random

    def __post_init__(self) -> None:
        s = self.settings
        self.reward_weights = RewardWeights(alpha=s.alpha, beta=s.beta, qos_penalty=s.qos_penalty)

    def oracle(
        self, features: ModelFeatures, cond: RuntimeConditions, candidates: tuple[Candidate, ...]
    ) -> Callable[[Target], Outcome]:
        """True costs from the device profiles: exact while the runners report modelled figures.
        Only `opt` calls it, so nothing is computed unless it does."""
        accuracy: dict[str, float] = {}

        def cost(target: Target) -> Outcome:
            if not accuracy:
                accuracy.update({c.target.id: c.accuracy for c in candidates})
            c = costmodel.estimate(self.mesh, features, target, cond)
            return Outcome(latency_s=c.latency_s, energy_j=c.energy_j, accuracy=accuracy.get(target.id, 0.0))

        return cost


async def get_decider(request: Request) -> Decider:  # async: a sync dependency costs a threadpool hop
    return request.app.state.decider


DeciderDep = Annotated[Decider, Depends(get_decider)]


async def require_admin(request: Request) -> None:
    """Admin routes: open when no token is configured (loopback default), else a bearer token."""
    check_admin(request.app.state.decider.settings.admin_token, request.headers.get("authorization", ""))
