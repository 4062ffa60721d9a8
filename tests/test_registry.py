"""The runner registry without a mesh: the record's validation, the registration scripts on a real
redis-server (refusals change nothing), and how dispatch picks a replica (least outstanding, ties
round-robin, ejection per replica)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from services.common.http import PostClient
from services.common.redis_embed import EmbeddedRedis
from services.common.registry import Claim, RegistryKeys, deregister, publish_profiles, read_records, register
from services.core.registration import RegistryEvent, RunnerRecord, profile_refusal, refusal
from services.core.schemas import Location, Precision, Processor, Target, TargetInfo
from services.decider.outliers import EjectionPolicy, OutlierDetector
from services.decider.runners import Replica, RunnerRegistry


def _target(role: Location = Location.cloud, processor: Processor = Processor.gpu) -> TargetInfo:
    t = Target(runner=role, processor=processor, precision=Precision.fp32)
    return TargetInfo(target=t, id=t.id, device="cloud_p100", models=["mobilenet_v1"])


def record(**overrides: Any) -> RunnerRecord:
    fields: dict[str, Any] = {
        "id": "cloud-a",
        "role": "cloud",
        "url": "http://127.0.0.1:9001",
        "device": "cloud_p100",
        "targets": [_target()],
        "started_at": 1.0,
        "heartbeat_s": 1.0,
        "ttl_s": 3.0,
    }
    return RunnerRecord.model_validate(fields | overrides)


# --------------------------------------------------------------------------- the record


def test_a_record_names_every_invalid_field() -> None:
    assert record(url="http://h:1/").url == "http://h:1"  # compared without the trailing slash
    with pytest.raises(ValidationError) as err:
        record(url="ftp://h", id="bad id!", role="gpu")
    why = refusal(err.value)
    assert why.startswith("invalid registration: ")
    for field in ("url:", "id:", "role:"):
        assert field in why, why
    assert "is not an http(s) URL" in why
    with pytest.raises(ValidationError, match="do not belong to the cloud role"):
        record(targets=[_target(Location.edge)])
    with pytest.raises(ValidationError, match="targets"):
        record(targets=[])
    for bad in ("http://", "http://h:99999", "http://h/?q=1"):
        with pytest.raises(ValidationError, match="url"):
            record(url=bad)


def test_a_profile_other_than_the_roles_is_refused_naming_both() -> None:
    rec = record(device="cloud_v100")
    why = profile_refusal(rec, {Location.cloud: "cloud_p100"})
    assert why is not None and "'cloud_v100'" in why and "'cloud_p100'" in why and "AUTOSCALE_CLOUD_DEVICE" in why
    assert profile_refusal(record(), {Location.cloud: "cloud_p100"}) is None
    assert profile_refusal(rec, {}) is None  # no decider has said yet: nothing to compare with


# --------------------------------------------------------------------------- the scripts, on Redis


@pytest.fixture
async def r(rs: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(rs.url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


async def _snapshot(r: aioredis.Redis) -> dict[bytes, bytes | None]:
    keys = sorted([k async for k in r.scan_iter(match="autoscale:registry:*")])
    return {k: await r.dump(k) for k in keys}


async def test_register_renew_and_leave_with_events(r: aioredis.Redis) -> None:
    keys = RegistryKeys()
    ps = r.pubsub()
    await ps.subscribe(keys.channel)
    await ps.get_message(timeout=1.0)  # the subscription confirmation
    rec = record()
    assert (await register(r, keys, rec)).outcome == "joined"
    assert (await register(r, keys, rec)).outcome == "renewed"
    assert 0 < await r.pttl(keys.record(rec.id)) <= 3000 and 0 < await r.pttl(keys.claim(rec.url)) <= 3000
    assert RunnerRecord.model_validate_json((await read_records(r, keys))["cloud-a"]) == rec
    assert await deregister(r, keys, rec)
    assert await read_records(r, keys) == {} and await r.get(keys.claim(rec.url)) is None
    events = []
    for _ in range(10):  # bounded: the two messages are already published
        msg = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if msg is None:
            break
        events.append(RegistryEvent.model_validate_json(msg["data"]))
    assert [(e.event, e.id, e.url) for e in events] == [("join", "cloud-a", rec.url), ("leave", "cloud-a", rec.url)]
    await ps.aclose()


async def test_refusals_change_nothing(r: aioredis.Redis) -> None:
    keys = RegistryKeys()
    first = record()
    await publish_profiles(r, keys, {Location.cloud: "cloud_p100"})
    assert (await register(r, keys, first)).outcome == "joined"
    before = await _snapshot(r)

    dup_url = await register(r, keys, record(id="cloud-b"))
    assert dup_url == Claim("url", "cloud-a", dup_url.expires_in_s) and dup_url.expires_in_s is not None
    assert "duplicate URL" in dup_url.reason(record(id="cloud-b")) and "AUTOSCALE_ADVERTISE_URL" in dup_url.reason(
        record(id="cloud-b")
    )
    dup_id = await register(r, keys, record(url="http://127.0.0.1:9002"))
    assert dup_id.outcome == "id" and dup_id.holder == first.url and "duplicate id" in dup_id.reason(first)
    profile = await register(r, keys, record(id="cloud-c", url="http://127.0.0.1:9003", device="cloud_v100"))
    assert profile.outcome == "profile" and profile.holder == "cloud_p100"
    assert "unknown device profile 'cloud_v100'" in profile.reason(record(device="cloud_v100"))
    assert await _snapshot(r) == before

    # Leaving removes only what is one's own: a runner that never registered deletes nothing.
    assert not await deregister(r, keys, record(id="cloud-b"))
    assert await _snapshot(r) == before


async def test_the_url_is_free_again_once_its_holder_expires(r: aioredis.Redis) -> None:
    keys = RegistryKeys()
    assert (await register(r, keys, record(ttl_s=0.2, heartbeat_s=0.1))).outcome == "joined"
    assert (await register(r, keys, record(id="cloud-b"))).outcome == "url"
    for _ in range(50):  # bounded wait for the TTL (0.2 s) to pass
        if await r.get(keys.claim("http://127.0.0.1:9001")) is None:
            break
        await asyncio.sleep(0.05)
    assert (await register(r, keys, record(id="cloud-b"))).outcome == "joined"
    assert set(await read_records(r, keys)) == {"cloud-b"}


# --------------------------------------------------------------------------- picking a replica


def _registry(*ids: str) -> RunnerRegistry:
    reg = RunnerRegistry(refresh_s=1.0, run_timeout_s=1.0, outliers=OutlierDetector(EjectionPolicy(consecutive=2)))
    for rid in ids:
        url = f"http://{rid}"
        client, runs = httpx.AsyncClient(), PostClient(url)
        rep = Replica(id=rid, role=Location.cloud, url=url, client=client, runs=runs, healthy=True)
        rep.set_targets([_target()])
        reg.add(rep)
    return reg


def test_least_outstanding_wins_and_ties_take_turns() -> None:
    reg = _registry("a", "b", "c")
    t = _target().target
    picks = [reg.pick(t, "mobilenet_v1", set()) for _ in range(6)]
    assert [p.id for p in picks if p] == ["a", "b", "c", "a", "b", "c"]
    reg.replicas["a"].outstanding = 2
    reg.replicas["b"].outstanding = 1
    reg.replicas["c"].outstanding = 1
    assert {getattr(reg.pick(t, "mobilenet_v1", set()), "id", None) for _ in range(4)} == {"b", "c"}
    reg.replicas["c"].outstanding = 0
    assert getattr(reg.pick(t, "mobilenet_v1", set()), "id", None) == "c"
    assert getattr(reg.pick(t, "mobilenet_v1", {"c"}), "id", None) == "b"  # the next one after a failure
    assert reg.pick(t, "resnet50", set()) is None  # no replica holds that model


def test_an_ejected_replica_leaves_its_role_up() -> None:
    reg = _registry("a", "b")
    for _ in range(2):
        reg._failed(reg.replicas["a"], "connection", "refused")
    assert reg.outliers.is_ejected("a") and not reg.outliers.is_ejected("b")
    assert [r.id for r in reg.pool(Location.cloud)] == ["b"] and reg.roles_available() == [Location.cloud]
    assert reg.ejected() == ["cloud"]
    reg.mark_down(reg.replicas["b"], "refused")
    assert reg.roles_available() == [] and reg.down() == ["cloud b: refused"]


def test_the_target_list_has_each_target_once_per_role() -> None:
    reg = _registry("a", "b")
    reg.replicas["b"].set_targets([_target(), _target(processor=Processor.cpu)])
    listed = {t.id: up for t, up in reg.role_targets(Location.cloud)}
    assert listed == {"cloud/gpu/fp32": True, "cloud/cpu/fp32": True}
    reg.mark_down(reg.replicas["b"], "gone")
    assert {t.id: up for t, up in reg.role_targets(Location.cloud)} == {"cloud/gpu/fp32": True, "cloud/cpu/fp32": False}
