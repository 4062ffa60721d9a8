"""The runner's side of the registry: join once listening, renew on a heartbeat, leave on shutdown.

A runner with a ``REDIS_URL`` (and ``AUTOSCALE_RUNNER_REGISTRY`` on) registers a ``RunnerRecord``
under its id with a TTL (``services.common.registry``) as soon as it answers on its own port, so
that a decider that discovers it can use it at once; until then its ``/readyz`` says it is not
ready. Every ``AUTOSCALE_REGISTRY_HEARTBEAT_S`` it writes the record again (its models may have
changed). A refusal (an invalid record, a duplicate URL or id, a device profile the deciders do not
model for this role) changes nothing in Redis; it is logged here and published on the registry
channel, so the deciders log it too. A duplicate may be the previous process at this address whose
record has not expired yet, so duplicates are retried on every heartbeat; an invalid record is not.
On shutdown the record and its URL claim are deleted and ``leave`` is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from services.common.logging import log_event
from services.common.registry import RegistryKeys, deregister, publish_refusal, register
from services.common.settings import Settings
from services.common.version import package_version
from services.core.registration import RegistryEvent, RunnerRecord, refusal
from services.core.schemas import Location, TargetInfo

log = logging.getLogger("autoscale.runner.registration")
_WILDCARD = ("0.0.0.0", "::", "")  # bind addresses meaning every interface


def _host_address() -> str:
    """This host's address as others see it: what its hostname resolves to (in a container or pod,
    its own IP), else the hostname itself."""
    name = socket.gethostname()
    try:
        addr = socket.gethostbyname(name)
    except OSError:
        return name
    return name if addr.startswith("127.") else addr


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def advertise_url(s: Settings, role: str) -> str:
    """``AUTOSCALE_ADVERTISE_URL``, else ``http://HOST:PORT`` (a wildcard bind: this host's address)."""
    if s.advertise_url:
        return s.advertise_url
    return _url(_host_address() if s.host in _WILDCARD else s.host, s.port(role))


def local_url(s: Settings, role: str) -> str:
    """Where this process answers from this host (to wait until it listens)."""
    return _url("127.0.0.1" if s.host in _WILDCARD else s.host, s.port(role))


def runner_id(s: Settings, role: str) -> str:
    """``AUTOSCALE_RUNNER_ID``, else ROLE-HOST-PORT-<random>: unique even for two hosts of one name."""
    return s.runner_id or f"{role}-{socket.gethostname()}-{s.port(role)}-{uuid.uuid4().hex[:6]}"


@dataclass
class Registration:
    """Keeps one runner registered; ``fields`` gives the record's fields as they are now."""

    redis: aioredis.Redis
    fields: Callable[[], dict[str, object]]
    local_url: str
    heartbeat_s: float
    keys: RegistryKeys = field(default_factory=RegistryKeys)
    record: RunnerRecord | None = None  # the last one written
    registered: bool = False
    status: str = "waiting until this runner answers on its port"
    _refused: str = ""  # the last refusal logged (logged again only when it changes)
    _redis_failures: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="runner-registration")

    async def _run(self) -> None:
        await self._wait_listening()
        self.status = "registering"
        while True:  # for the process's life, one renewal per heartbeat
            if not await self.beat():
                return
            await asyncio.sleep(self.heartbeat_s)

    async def _wait_listening(self, timeout_s: float = 120.0) -> None:
        """Until ``/healthz`` answers on our own port (uvicorn listens once the lifespan has started),
        at most ``timeout_s``: a decider that discovers us must be able to connect."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.local_url, timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        log_event(log, "own port not answering; registering anyway", logging.WARNING, url=self.local_url)

    async def beat(self) -> bool:
        """One registration or renewal; False when there is nothing to retry (an invalid record)."""
        raw = self.fields()
        try:
            record = RunnerRecord.model_validate(raw)
        except ValidationError as exc:
            event = RegistryEvent(
                event="refused", id=str(raw.get("id")), role=str(raw.get("role")), url=str(raw.get("url")), reason=""
            )
            await self._refuse(event.model_copy(update={"reason": refusal(exc)}), logging.ERROR)
            return False
        try:
            claim = await register(self.redis, self.keys, record)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return True
        self._redis_failures = 0
        if claim.refused:
            event = RegistryEvent(event="refused", id=record.id, role=record.role.value, url=record.url)
            level = logging.ERROR if claim.outcome == "profile" else logging.WARNING
            await self._refuse(event.model_copy(update={"reason": claim.reason(record)}), level)
            return True
        if claim.outcome == "joined" or not self.registered:
            log_event(log, "registered", id=record.id, role=record.role.value, url=record.url, outcome=claim.outcome)
        self.record, self.registered, self._refused = record, True, ""
        self.status = "registered"
        return True

    async def _refuse(self, event: RegistryEvent, level: int) -> None:
        """Log the refusal and tell the deciders, once per distinct reason (it is retried every heartbeat)."""
        self.status = f"registration refused: {event.reason}"
        if event.reason == self._refused:
            return
        self._refused = event.reason
        log_event(log, "registration refused", level, id=event.id, role=event.role, url=event.url, reason=event.reason)
        with contextlib.suppress(RedisError, OSError):
            await publish_refusal(self.redis, self.keys, event)

    def _redis_failed(self, exc: Exception) -> None:
        self._redis_failures += 1
        if not self.registered:
            self.status = f"registry unreachable: {type(exc).__name__}: {exc}"
        if self._redis_failures in (1, 10) or self._redis_failures % 100 == 0:  # not a line per heartbeat
            log_event(
                log,
                "registry unreachable; retrying",
                logging.WARNING,
                error=f"{type(exc).__name__}: {exc}",
                failures=self._redis_failures,
            )

    async def stop(self) -> None:
        """Stop renewing, then leave: the record and its URL claim are deleted, ``leave`` published."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.record is not None:
            try:
                async with asyncio.timeout(2.0):
                    await deregister(self.redis, self.keys, self.record)
                log_event(log, "deregistered", id=self.record.id, url=self.record.url)
            except (RedisError, OSError, TimeoutError) as exc:
                log_event(log, "deregistration failed; the record expires by itself", logging.WARNING, error=str(exc))
        with contextlib.suppress(Exception):
            await self.redis.aclose()


def start_registration(
    s: Settings,
    role: Location,
    device: str,
    targets: Callable[[], list[TargetInfo]],
    models: Callable[[], list[str]],
) -> Registration | None:
    """Start keeping this runner registered (the record's fields read afresh at every heartbeat), or
    say in the log why it runs in static mode."""
    redis_url = s.redis_url.get_secret_value()
    if not (s.runner_registry and redis_url):
        why = "AUTOSCALE_RUNNER_REGISTRY is off" if not s.runner_registry else "no REDIS_URL"
        hint = f"list it on the deciders: AUTOSCALE_{role.value.upper()}_URL"
        log_event(log, "static mode: not registering", reason=why, hint=hint)
        return None
    rid, url, started = runner_id(s, role.value), advertise_url(s, role.value), time.time()

    def fields() -> dict[str, object]:
        infos = targets()
        return {
            "id": rid,
            "role": role.value,
            "url": url,
            "device": device,
            "targets": infos,
            "engines": {i.target.engine: i.engine_version for i in infos},
            "models": models(),
            "started_at": started,
            "version": package_version(),
            "heartbeat_s": s.registry_heartbeat_s,
            "ttl_s": s.registry_ttl_s,
        }

    redis = aioredis.Redis.from_url(redis_url, socket_timeout=s.redis_timeout_s, socket_connect_timeout=2.0)
    reg = Registration(redis, fields, local_url(s, role.value), s.registry_heartbeat_s)
    reg.start()
    return reg
