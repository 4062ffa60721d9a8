"""Discovery of runner replicas that register themselves in Redis (``services.common.registry``).

The decider subscribes to the registry channel (``join``: read the record and list the replica;
``leave``: forget it; ``refused``: log the runner's refusal) and scans every record every
``AUTOSCALE_RUNNER_REFRESH_S``, so a missed message heals at the next scan. Every record read is
validated again (``RunnerRecord``; the device profile this decider models for its role; its URL not
already listed) and one that does not validate is ignored, its reason logged once.

A listed replica whose record has gone without a ``leave`` (its heartbeat expired) is forgotten at
the first scan that misses it if its last probe failed too (a killed runner). One that still
answers its probes is kept for one more TTL: the record may have lapsed in Redis only (Redis
restarted, or hung past the TTL), and the runner writes it again on its next heartbeat.

Static replicas (the runner URL settings; all of them when ``AUTOSCALE_RUNNER_REGISTRY`` is off) are
listed at start and never forgotten; they are what a runner without access to Redis (a phone)
is reached through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field

import httpx
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from services.common.logging import log_event
from services.common.registry import RegistryKeys, publish_profiles, read_record, read_records
from services.common.settings import Settings
from services.core.registration import RegistryEvent, RunnerRecord, profile_refusal, refusal
from services.core.schemas import Location, Precision
from services.decider.deps import ModelCatalog
from services.decider.metrics import decider_metrics
from services.decider.runners import ClientsFor, Replica, RunnerRegistry

log = logging.getLogger("autoscale.decider.registry")


def static_urls(s: Settings) -> dict[Location, str]:
    """The runners listed by URL: with the registry on, those whose URL is set (runners that cannot
    register); off, one per role (its URL, else ``http://HOST:PORT``)."""
    explicit = {Location.edge: s.edge_url, Location.peer: s.peer_url, Location.cloud: s.cloud_url}
    if not s.runner_registry:
        return {role: s.url(role.value) for role in Location}
    return {role: url.rstrip("/") for role, url in explicit.items() if url}


def _role_label(raw: bytes | str) -> str:
    """The role a record claims, as a metric label (``unknown`` when it names none)."""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        role = json.loads(raw).get("role")
        if role in {r.value for r in Location}:
            return str(role)
    return "unknown"


@dataclass
class RegistryWatcher:
    redis: aioredis.Redis
    runners: RunnerRegistry
    clients_for: ClientsFor
    profiles: dict[Location, str]  # the device each role must be: this decider's cost model
    scan_s: float
    keys: RegistryKeys = field(default_factory=RegistryKeys)
    _ignored: dict[str, str] = field(default_factory=dict)  # runner id -> the reason last logged
    _scan_failures: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)  # the channel and the scan both admit
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, repr=False)

    async def start(self) -> None:
        """Publish the profiles, read what is registered, then follow the channel and scan."""
        try:
            await self.scan()
        except (RedisError, OSError) as exc:
            self._scan_failed(exc)  # the scan loop retries
        self._tasks = [
            asyncio.create_task(self._listen(), name="registry-listen"),
            asyncio.create_task(self._scan_loop(), name="registry-scan"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ scan
    async def _scan_loop(self) -> None:
        while True:  # for the decider's life, one scan per interval
            await asyncio.sleep(self.scan_s)
            try:
                await self.scan()
            except (RedisError, OSError) as exc:
                self._scan_failed(exc)
            else:
                self._scan_failures = 0

    def _scan_failed(self, exc: Exception) -> None:
        # Nothing is forgotten while Redis does not answer: the replicas keep serving.
        self._scan_failures += 1
        if self._scan_failures in (1, 10) or self._scan_failures % 100 == 0:
            log_event(log, "registry scan failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")

    async def scan(self) -> None:
        """List every valid record; forget the registered replicas whose record has gone (see the
        module docstring). The profiles are written again too (a Redis restarted without them)."""
        started = time.monotonic()
        await publish_profiles(self.redis, self.keys, self.profiles)
        records = await read_records(self.redis, self.keys)
        for rid, raw in records.items():
            await self.admit(rid, raw)
        now = time.monotonic()
        # One that joined (on the channel) after the records were read is not missing from them.
        gone = [
            r for r in self.runners.replicas.values() if not r.static and r.id not in records and r.added_at < started
        ]
        for replica in gone:
            if replica.missing_since is None:
                replica.missing_since = now
            if not replica.healthy or now - replica.missing_since >= max(replica.ttl_s, self.scan_s):
                await self.forget(replica.id, "expired")
        for rid in [rid for rid in self._ignored if rid not in records]:
            del self._ignored[rid]

    # ------------------------------------------------------------------ channel
    async def _listen(self) -> None:
        """Subscribe and handle events; after a lost subscription, subscribe again and scan (what was
        published meanwhile is lost)."""
        backoff = 0.1
        while True:  # for the decider's life; each failure waits (at most 2 s) before resubscribing
            ps = self.redis.pubsub()
            try:
                await ps.subscribe(self.keys.channel)
                backoff = 0.1
                while True:
                    msg = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        await self._on_event(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_event(log, "registry channel lost; resubscribing", logging.WARNING, error=f"{type(exc).__name__}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(ps.aclose(), 2.0)

    async def _on_event(self, data: bytes | str) -> None:
        try:
            ev = RegistryEvent.model_validate_json(data)
        except ValidationError as exc:
            log_event(log, "ignored registry message", logging.WARNING, reason=refusal(exc))
            return
        if ev.event == "join":
            raw = await read_record(self.redis, self.keys, ev.id)
            if raw is not None:
                await self.admit(ev.id, raw)
        elif ev.event == "leave":
            replica = self.runners.replicas.get(ev.id)
            if replica is not None and not replica.static:
                await self.forget(ev.id, "left")
        else:
            role = ev.role if ev.role in {r.value for r in Location} else "unknown"
            decider_metrics.registration(role, "refused")
            log_event(
                log,
                "runner registration refused",
                logging.WARNING,
                id=ev.id,
                role=ev.role,
                url=ev.url,
                reason=ev.reason,
            )

    # ------------------------------------------------------------------ membership
    def validate(self, rid: str, raw: bytes | str) -> RunnerRecord | str:
        """The record, or why this decider does not accept it."""
        try:
            record = RunnerRecord.model_validate_json(raw)
        except ValidationError as exc:
            return refusal(exc)
        if record.id != rid:
            return f"the record under runner id {rid!r} names id {record.id!r}"
        why = profile_refusal(record, self.profiles)
        if why:
            return why
        same_id = self.runners.replicas.get(record.id)
        if same_id is not None and same_id.static:
            return f"duplicate id: {record.id!r} names the {same_id.role.value} runner listed by URL ({same_id.url})"
        for other in self.runners.replicas.values():
            if other.id != record.id and other.url.rstrip("/") == record.url:
                kind = "listed by a URL setting" if other.static else f"registered by runner {other.id!r}"
                return f"duplicate URL: {record.url} is already {kind}"
        return record

    async def admit(self, rid: str, raw: bytes | str) -> None:
        """List the replica a record describes (or update it); ignore, and log once, one that does not validate."""
        async with self._lock:
            replica = await self._admit(rid, raw)
        if replica is not None:
            await self.runners.refresh_one(replica)  # probed at once: dispatched to as soon as it answers

    async def _admit(self, rid: str, raw: bytes | str) -> Replica | None:
        """The new replica, if the record adds one."""
        record = self.validate(rid, raw)
        existing = self.runners.replicas.get(rid)
        if isinstance(record, str):
            if self._ignored.get(rid) != record:
                self._ignored[rid] = record
                decider_metrics.registration(_role_label(raw), "invalid")
                log_event(log, "ignored runner registration", logging.WARNING, id=rid, reason=record)
            if existing is not None and not existing.static:
                await self._forget(rid, "invalid")  # what it says now is not acceptable: no longer listed
            return None
        self._ignored.pop(rid, None)
        if existing is not None and existing.url == record.url and existing.role is record.role:
            if existing.started_at != record.started_at:
                log_event(log, "runner restarted", id=rid, role=record.role.value, url=record.url)
            existing.missing_since, existing.started_at, existing.ttl_s = None, record.started_at, record.ttl_s
            return None
        if existing is not None:
            await self.runners.remove(rid)
        client, runs = self.clients_for(record.url)
        replica = Replica(
            id=rid,
            role=record.role,
            url=record.url,
            client=client,
            runs=runs,
            device=record.device,
            started_at=record.started_at,
            ttl_s=record.ttl_s,
        )
        replica.set_targets(record.targets)
        self.runners.add(replica)
        decider_metrics.registration(record.role.value, "joined")
        log_event(log, "runner joined", id=rid, role=record.role.value, url=record.url, device=record.device)
        return replica

    async def forget(self, rid: str, reason: str) -> None:
        async with self._lock:
            await self._forget(rid, reason)

    async def _forget(self, rid: str, reason: str) -> None:
        replica = await self.runners.remove(rid)
        if replica is not None:
            decider_metrics.deregistration(replica.role.value, reason)
            log_event(log, "runner forgotten", id=rid, role=replica.role.value, url=replica.url, reason=reason)


async def sync_models(catalog: ModelCatalog, runners: RunnerRegistry, replica: Replica) -> None:
    """A replica that comes up (a new registration, a static runner at decider start) is sent the
    uploaded models it does not hold, so that it serves them too (built-ins it builds itself)."""
    uploads = [n for n in catalog.names() if not catalog.store.builtin(n)]
    if not uploads:
        return
    try:
        resp = await replica.client.get("/models", timeout=10.0)
        resp.raise_for_status()
        held = {m["name"]: m.get("sha256") for m in resp.json()}
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        log_event(log, "model sync skipped", logging.WARNING, id=replica.id, error=f"{type(exc).__name__}: {exc}")
        return
    for name in uploads:
        info = catalog.get(name)
        if held.get(name) == info.sha256:
            continue
        data = await asyncio.to_thread(catalog.store.path(name, Precision.fp32).read_bytes)
        failed = await runners.push_model(info, data, [replica])
        log_event(log, "model synced" if not failed else "model sync failed", id=replica.id, model=name, failed=failed)
