"""The Redis-backed Q table as an operator drives it: export / import / reset, transfer between
devices, and the admin API."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from services.common.errors import install_error_handlers
from services.common.redis_embed import EmbeddedRedis
from services.core.policies.qlearning import (
    QTableImportError,
)
from services.decider.qstore import QStore
from tests.qstore_cases import dev, seed_store, strip, upd

# --------------------------------------------------------------------------- import / export / reset


async def test_export_import_round_trip(store: QStore) -> None:
    await seed_store(store)
    data = (await store.export()).model_dump()
    assert data["format_version"] == 1 and data["device"] == store.device
    json.dumps(data)  # JSON-able
    await store.reset()
    assert strip(await store.export())["states"] == {}
    assert store.row(0) == {}
    res = await store.import_(json.loads(json.dumps(data)))
    assert res.entries == sum(len(r) for r in data["states"].values())
    assert strip(await store.export()) == strip(data)
    # the cache follows the import
    for s, row in data["states"].items():
        assert dict(store.row(int(s))) == {a: e["q"] for a, e in row.items()}


async def test_import_merge_overwrites_only_given_entries(store: QStore) -> None:
    await seed_store(store)
    before = strip(await store.export())
    s0 = next(iter(before["states"]))
    a0 = next(iter(before["states"][s0]))
    patch = {
        "format_version": 1,
        "device": store.device,
        "actions": before["actions"],
        "states": {s0: {a0: {"q": 123.0, "n": 7}}},
    }
    await store.import_(patch, mode="merge")
    after = strip(await store.export())
    expected = json.loads(json.dumps(before))
    expected["states"][s0][a0] = {"q": 123.0, "n": 7}
    assert after == expected


@pytest.mark.parametrize(
    ("mutate", "field", "kind"),
    [
        (lambda d: d.update(format_version=99), "format_version", "malformed"),
        (lambda d: d.update(device="other-phone"), "device", "mismatch"),
        (lambda d: d["states"].update({"9999": {}}), "states.9999", "malformed"),
        (
            lambda d: d["states"].update({"1": {"edge/cpu/fp32@0": {"q": "x", "n": 1}}}),
            "states.1.edge/cpu/fp32@0.q",
            "malformed",
        ),
        (lambda d: d["actions"].append("edge/dsp/int8"), "actions[3]", "mismatch"),
        (lambda d: d.pop("actions"), "actions", "malformed"),
    ],
)
async def test_import_refuses_bad_input_and_leaves_the_table_unchanged(
    store: QStore, mutate: Callable[[dict[str, Any]], object], field: str, kind: str
) -> None:
    await seed_store(store)
    before = strip(await store.export())
    bad = json.loads(json.dumps(before))
    mutate(bad)
    with pytest.raises(QTableImportError) as ei:
        await store.import_(bad)
    assert (ei.value.field, ei.value.kind) == (field, kind)
    assert strip(await store.export()) == before


async def test_reset_reaches_other_processes_caches(rs: EmbeddedRedis) -> None:
    device = dev()
    a, b = QStore(rs.url, device), QStore(rs.url, device)
    await a.start()
    await b.start()
    await seed_store(a)
    assert await b.wait_synced()
    assert b.row(0) or b.row(1) or b.row(2)
    await a.reset()
    deadline = time.monotonic() + 1.0
    while any(b.row(s) for s in range(6)) and time.monotonic() < deadline:  # noqa: ASYNC110  # polls what the background tasks do, bounded
        await asyncio.sleep(0.01)
    assert not any(b.row(s) for s in range(6))
    await a.stop()
    await b.stop()


# --------------------------------------------------------------------------- transfer


MI8 = (
    [f"edge/cpu/fp32@{i}" for i in range(23)]
    + [f"edge/gpu/fp16@{i}" for i in range(7)]
    + ["edge/dsp/int8", "cloud/gpu/fp32", "peer/gpu/fp32"]
)
S10E = (
    [f"edge/cpu/fp32@{i}" for i in range(21)]
    + [f"edge/gpu/fp16@{i}" for i in range(9)]
    + ["cloud/gpu/fp32", "peer/gpu/fp32"]
)


async def test_transfer_keeps_only_the_destination_actions(rs: EmbeddedRedis) -> None:
    src_dev, dst_dev = dev(), dev()
    src = QStore(rs.url, src_dev, actions=MI8)
    dst = QStore(rs.url, dst_dev, actions=S10E)
    await src.start()
    await dst.start()
    rng = random.Random(2)
    for _ in range(300):
        src.submit(upd(rng.randrange(8), rng.choice(MI8), rng.uniform(-100, 0), rng.randrange(8), tuple(MI8)))
    assert await src.flush(10)
    src_data = (await src.export()).model_dump()
    report = await dst.transfer(src_dev)
    out = (await dst.export()).model_dump()
    assert report.to_device == dst_dev and report.entries_copied > 0
    acts = {a for row in out["states"].values() for a in row}
    assert acts <= set(S10E)
    assert "edge/dsp/int8" not in acts
    assert all(e["n"] == 0 for row in out["states"].values() for e in row.values())
    # DVFS scaled by index ratio: S10e's top CPU step inherits Mi8Pro's top step
    for s, row in src_data["states"].items():
        if "edge/cpu/fp32@22" in row:
            assert out["states"][s]["edge/cpu/fp32@20"]["q"] == row["edge/cpu/fp32@22"]["q"]
        if "cloud/gpu/fp32" in row:
            assert out["states"][s]["cloud/gpu/fp32"]["q"] == row["cloud/gpu/fp32"]["q"]
    # the destination's cache follows
    s0 = next(iter(out["states"]))
    assert dict(dst.row(int(s0))) == {a: e["q"] for a, e in out["states"][s0].items()}
    # from an export works the same, and the source is untouched
    report2 = await dst.transfer(src_data)
    assert report2.entries_copied == report.entries_copied
    assert strip(await src.export()) == strip(src_data)
    with pytest.raises(QTableImportError):
        await dst.transfer(dst_dev)
    with pytest.raises(QTableImportError) as ei:
        await dst.transfer("nobody")
    assert ei.value.field == "from_device"
    await src.stop()
    await dst.stop()


# --------------------------------------------------------------------------- admin API


@pytest.fixture
async def api(store: QStore) -> AsyncIterator[httpx.AsyncClient]:
    from fastapi import FastAPI

    from services.decider.api import admin

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(admin.router)
    app.state.qstore = store
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


async def test_admin_policy_export_stats(api: httpx.AsyncClient, store: QStore) -> None:
    await seed_store(store)
    r = await api.get("/policy")
    assert r.status_code == 200
    states = r.json()["states"]
    _s0, view = next(iter(states.items()))
    assert view["best"] in view["actions"] and view["visits"] >= 1 and "labels" in view
    assert view["best_q"] == max(e["q"] for e in view["actions"].values() if e["n"] > 0)
    assert (await api.get("/qtable/export")).json()["states"] == (await store.export()).model_dump()["states"]
    st = (await api.get("/qtable/stats")).json()
    assert st["paper_memory_bytes"] == 400_000


async def test_admin_import_errors_name_the_field_and_change_nothing(api: httpx.AsyncClient, store: QStore) -> None:
    await seed_store(store)
    before = strip(await store.export())
    bad = json.loads(json.dumps(before))
    bad["states"]["0"] = {"edge/cpu/fp32@0": {"q": 1.0}}
    r = await api.post("/qtable/import", json=bad)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_qtable"
    assert r.json()["error"]["field"] == "states.0.edge/cpu/fp32@0"
    r = await api.post("/qtable/import", content=b"{not json")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_json"
    mism = json.loads(json.dumps(before))
    mism["device"] = "someone-else"
    r = await api.post("/qtable/import", json=mism)
    assert r.status_code == 409 and r.json()["error"] == {
        "code": "qtable_mismatch",
        "field": "device",
        "message": r.json()["error"]["message"],
    }
    r = await api.post("/qtable/import?mode=sideways", json=before)
    assert r.status_code == 422
    assert strip(await store.export()) == before
    # a good import works
    r = await api.post("/qtable/import?mode=replace", json=before)
    assert r.status_code == 200 and r.json()["entries"] > 0


async def test_admin_reset_and_transfer(api: httpx.AsyncClient, store: QStore, rs: EmbeddedRedis) -> None:
    await seed_store(store)
    r = await api.post("/qtable/reset")
    assert r.status_code == 200
    assert (await store.export()).states == {}
    r = await api.post("/qtable/transfer", json={"from_device": "nobody"})
    assert r.status_code == 409 and r.json()["error"]["field"] == "from_device"
    r = await api.post("/qtable/transfer", json={"from": "x"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "from"
    other = QStore(rs.url, dev())
    await other.start()
    for i in range(20):
        other.submit(upd(i % 4, "cloud/gpu/fp32", -10.0, 0, ("cloud/gpu/fp32", "edge/cpu/fp32@0")))
    assert await other.flush(5)
    r = await api.post("/qtable/transfer", json={"from_device": other.device})
    assert r.status_code == 200, r.text
    assert r.json()["entries_copied"] == 4
    assert set((await store.export()).states) == {"0", "1", "2", "3"}
    await other.stop()
