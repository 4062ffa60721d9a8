"""The runner registry in Redis: its keys, the scripts that change it, and the calls both sides make.

Layout (prefix ``autoscale:registry``):

- ``runner:<id>``: a runner's ``RunnerRecord`` (JSON), written with a TTL and rewritten on every
  heartbeat; gone when the runner deregisters or stops renewing it.
- ``url:<url>``: the id that holds an advertised URL, with the same TTL: two live runners cannot
  claim one URL (the second is refused until the first's claim expires).
- ``profiles``: a hash role -> device profile, written by the deciders: the profile a runner of
  that role must stand for.
- ``events``: the channel of ``RegistryEvent`` messages (join, leave, refused).

Registration is one Lua script, so a refused runner changes nothing: it checks the profile, the
URL claim and the id, then writes the claim and the record and publishes ``join`` for a new record.
Writing needs the mesh's Redis credentials (``REDIS_URL`` may carry a password): whoever can write
these keys can add a runner, so the Redis must not be reachable by anyone else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from services.core.registration import RegistryEvent, RunnerRecord, profile_refusal
from services.core.schemas import Location

REGISTER_LUA = """
-- KEYS: 1 record  2 url claim  3 profiles
-- ARGV: 1 id  2 record JSON  3 ttl ms  4 role  5 device  6 url  7 channel  8 join event JSON
local expected = redis.call('HGET', KEYS[3], ARGV[4])
if expected and expected ~= ARGV[5] then
  return {'profile', expected}
end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  return {'url', holder, tostring(redis.call('PTTL', KEYS[2]))}
end
local old = redis.call('GET', KEYS[1])
if old then
  local ok, prev = pcall(cjson.decode, old)
  if ok and type(prev) == 'table' and prev['url'] and prev['url'] ~= ARGV[6] then
    return {'id', tostring(prev['url']), tostring(redis.call('PTTL', KEYS[1]))}
  end
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if old then
  return {'renewed'}
end
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {'joined'}
"""

# Only what is this runner's: a claim or record another process took over in the meantime stays.
DEREGISTER_LUA = """
-- KEYS: 1 record  2 url claim   ARGV: 1 id  2 url  3 channel  4 leave event JSON
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
local old = redis.call('GET', KEYS[1])
if not old then
  return 0
end
local ok, prev = pcall(cjson.decode, old)
if ok and type(prev) == 'table' and prev['url'] ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""


@dataclass(frozen=True, slots=True)
class RegistryKeys:
    prefix: str = "autoscale:registry"

    def record(self, runner_id: str) -> str:
        return f"{self.prefix}:runner:{runner_id}"

    def claim(self, url: str) -> str:
        return f"{self.prefix}:url:{url}"

    @property
    def records(self) -> str:
        """The SCAN pattern of every record."""
        return f"{self.prefix}:runner:*"

    def runner_id(self, key: bytes | str) -> str:
        text = key.decode() if isinstance(key, bytes) else key
        return text.removeprefix(f"{self.prefix}:runner:")

    @property
    def profiles(self) -> str:
        return f"{self.prefix}:profiles"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:events"


@dataclass(frozen=True, slots=True)
class Claim:
    """What a registration attempt got: ``joined`` (a new record), ``renewed``, or a refusal:
    ``profile`` (the deciders model this role as another device), ``url`` (another live runner
    holds the URL), ``id`` (a live record with this id has another URL)."""

    outcome: Literal["joined", "renewed", "profile", "url", "id"]
    holder: str = ""  # the expected profile, the id holding the URL, or the URL holding the id
    expires_in_s: float | None = None

    @property
    def refused(self) -> bool:
        return self.outcome in ("profile", "url", "id")

    def reason(self, record: RunnerRecord) -> str:
        """The refusal in one line, saying what to change."""
        left = f" (its registration expires in {self.expires_in_s:.1f} s unless renewed)" if self.expires_in_s else ""
        if self.outcome == "profile":
            return profile_refusal(record, {record.role: self.holder}) or ""
        if self.outcome == "url":
            return (
                f"duplicate URL: {record.url} is registered by live runner {self.holder!r}{left}; give each "
                "replica its own AUTOSCALE_ADVERTISE_URL (or leave it unset: http://HOST:PORT)"
            )
        if self.outcome == "id":
            return (
                f"duplicate id: runner {record.id!r} is registered at {self.holder}{left}; give each replica "
                "its own AUTOSCALE_RUNNER_ID (or leave it unset)"
            )
        return ""


def _event(kind: Literal["join", "leave", "refused"], record: RunnerRecord, reason: str = "") -> str:
    return RegistryEvent(
        event=kind, id=record.id, role=record.role.value, url=record.url, reason=reason
    ).model_dump_json()


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _bytes(v: bytes | str) -> bytes:
    return v if isinstance(v, bytes) else v.encode()


async def register(r: aioredis.Redis, keys: RegistryKeys, record: RunnerRecord) -> Claim:
    """Write (or renew) ``record`` and its URL claim with its TTL, unless refused (then nothing changes)."""
    reply = await r.eval(
        REGISTER_LUA,
        3,
        keys.record(record.id),
        keys.claim(record.url),
        keys.profiles,
        record.id,
        record.model_dump_json(),
        max(1, int(record.ttl_s * 1000)),
        record.role.value,
        record.device,
        record.url,
        keys.channel,
        _event("join", record),
    )
    parts = [_text(p) for p in reply]
    outcome = parts[0]
    if outcome in ("joined", "renewed"):
        return Claim(outcome)  # type: ignore[arg-type]  # checked just above
    pttl = float(parts[2]) / 1e3 if len(parts) > 2 and float(parts[2]) > 0 else None
    return Claim(outcome, parts[1], pttl)  # type: ignore[arg-type]  # the script returns no other word


async def deregister(r: aioredis.Redis, keys: RegistryKeys, record: RunnerRecord) -> bool:
    """Delete this runner's record and claim (only if still its own) and publish ``leave``."""
    done = await r.eval(
        DEREGISTER_LUA,
        2,
        keys.record(record.id),
        keys.claim(record.url),
        record.id,
        record.url,
        keys.channel,
        _event("leave", record),
    )
    return bool(done)


async def publish_refusal(r: aioredis.Redis, keys: RegistryKeys, event: RegistryEvent) -> None:
    """Tell the deciders (their logs) that a runner was refused; nothing is written."""
    await r.publish(keys.channel, event.model_dump_json())


async def publish_profiles(r: aioredis.Redis, keys: RegistryKeys, profiles: Mapping[Location, str]) -> None:
    """The device profile each role must stand for (the deciders' cost model); registration checks it."""
    await r.hset(keys.profiles, mapping={role.value: name for role, name in profiles.items()})


async def read_records(r: aioredis.Redis, keys: RegistryKeys, max_keys: int = 10_000) -> dict[str, bytes]:
    """Every record now in Redis, raw, by runner id (SCAN, so a large keyspace is not blocked;
    at most ``max_keys``)."""
    found: list[bytes] = []
    async for key in r.scan_iter(match=keys.records, count=500):
        found.append(key)
        if len(found) >= max_keys:
            break
    if not found:
        return {}
    values = await r.mget(found)
    return {keys.runner_id(k): _bytes(v) for k, v in zip(found, values, strict=True) if v is not None}


async def read_record(r: aioredis.Redis, keys: RegistryKeys, runner_id: str) -> bytes | None:
    value = await r.get(keys.record(runner_id))
    return None if value is None else _bytes(value)
