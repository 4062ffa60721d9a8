"""The action ids a device has offered, mirrored into Redis (``Keys.actions``) for transfers."""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis

from services.decider.qstore.keys import REGISTER_LUA, Keys


class ActionSet:
    """Action ids this device has offered (``known``) and those Redis already lists (``synced``).

    The writer notes the actions of every update it submits (``last_next`` remembers the last
    candidate tuple seen: the decider reuses them, so most updates add nothing); the bulk
    operations read the set and add imported actions.
    """

    __slots__ = ("known", "last_next", "synced")

    def __init__(self, actions: Iterable[str] | None = None) -> None:
        self.known: set[str] = set(actions or ())
        self.synced: set[str] = set()
        self.last_next: tuple[str, ...] | None = None

    def unsynced(self) -> bool:
        return bool(self.known - self.synced)

    async def sync(self, r: aioredis.Redis, keys: Keys) -> None:
        """Add the actions Redis does not list yet, and give them a slot in the packed records
        (in sorted order: the records are laid out once for the whole set, not grown one by one)."""
        new = sorted(self.known - self.synced)
        if new:
            await r.sadd(keys.actions, *new)
            await r.eval(REGISTER_LUA, 2, keys.aidx, keys.cap, keys.prefix, *new)
            self.synced.update(new)
