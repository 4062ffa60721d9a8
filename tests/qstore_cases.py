"""Helpers shared by the Redis-backed Q table's tests: device names, updates, exports, a seeded table."""

from __future__ import annotations

import random
import uuid

from services.core.policies.qlearning import QTableExport, QUpdate, initial_q
from services.decider.qstore import QStore


def dev() -> str:
    return "t" + uuid.uuid4().hex[:10]


def upd(
    state: int,
    action: str,
    reward: float,
    next_state: int,
    next_actions: tuple[str, ...] = (),
    lr: float = 0.9,
    discount: float = 0.1,
) -> QUpdate:
    return QUpdate(
        state=state,
        action=action,
        reward=reward,
        next_state=next_state,
        next_actions=next_actions,
        init=initial_q(0, state, action),
        next_inits=tuple(initial_q(0, next_state, a) for a in next_actions),
        learning_rate=lr,
        discount=discount,
    )


def strip(export: dict | QTableExport) -> dict:
    data = export.model_dump() if isinstance(export, QTableExport) else export
    return {k: v for k, v in data.items() if k not in ("exported_at", "params")}


async def seed_store(store: QStore, n: int = 60) -> None:
    rng = random.Random(1)
    acts = ("edge/cpu/fp32@0", "edge/cpu/fp32@1", "cloud/gpu/fp32")
    for _ in range(n):
        store.submit(upd(rng.randrange(6), rng.choice(acts), rng.uniform(-100, 0), rng.randrange(6), acts))
    assert await store.flush(5)
