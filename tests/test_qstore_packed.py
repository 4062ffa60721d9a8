"""The packed Redis table (services.decider.qstore.keys) and the prior learner's corrections, against a
real redis-server: Lua == Python bit for bit, exact under concurrent processes, layout growth."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from services.common.config_files import load_mesh
from services.common.redis_embed import EmbeddedRedis
from services.core import costmodel
from services.core.costmodel import Mesh
from services.core.policies.base import Candidate, DecisionContext, Outcome
from services.core.policies.prior import PriorParams, PriorPolicy
from services.core.policies.qlearning import VISITS_MAX, CorrectionObs, QTable, QUpdate, f32
from services.core.schemas import ModelFeatures, RuntimeConditions
from services.core.state import state_index
from services.decider.qstore import QStore
from services.decider.qstore.codec import decode_corrections, stride
from services.decider.qstore.keys import GROUP, N_GROUPS
from tests.qstore_cases import dev, strip  # `store` and `rs`: tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]
FEATS = {
    "mobilenet_v1": ModelFeatures(conv=14, fc=1, rc=0, macs=569_000_000, input_bytes=602_112, output_bytes=4_000),
    "resnet50": ModelFeatures(conv=53, fc=1, rc=0, macs=4_100_000_000, input_bytes=602_112, output_bytes=4_000),
}


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    return load_mesh("mi8pro", "galaxy_tab_s6", "cloud_p100")


def _contexts(mesh: Mesh, rng: random.Random, n: int, co_cpu: tuple[float, ...] = (0.0, 0.5)) -> list[DecisionContext]:
    """``n`` requests of two networks under a few conditions (the weak Wi-Fi ones split the cloud
    families by link bin)."""
    out = []
    for _ in range(n):
        model = rng.choice(list(FEATS))
        f = FEATS[model]
        cond = RuntimeConditions(
            co_cpu=rng.choice(co_cpu), co_mem=0.3, rssi_wifi_dbm=rng.choice([-55.0, -85.0]), rssi_p2p_dbm=-50.0
        )
        cands = tuple(Candidate(t, 70.0) for t in mesh.targets(f))
        out.append(DecisionContext(model, f, cond, state_index(f, cond), cands, 0.05, None))
    return out


async def test_prior_learner_through_redis_is_bit_identical_to_the_in_memory_table(
    store: QStore, mesh: Mesh, rs: EmbeddedRedis
) -> None:
    """The same decisions and outcomes against a QTable and against Redis give the same float32
    residuals, the same saturating visit counts and the same correction statistics (doubles)."""
    params = PriorParams(epsilon=0.3)
    mem, red = PriorPolicy(QTable(), mesh, params), PriorPolicy(store, mesh, params)
    rng, rng_m, rng_r = random.Random(4), random.Random(5), random.Random(5)
    for cx in _contexts(mesh, rng, 400):
        d = mem.decide(cx, rng_m)
        assert red.decide(cx, rng_r) == d  # the same cache content decides the same
        true = costmodel.estimate(mesh, cx.features, d.target, cx.conditions)
        f = rng.lognormvariate(0.0, 0.1)
        out = Outcome(true.latency_s * 1.2 * f, true.energy_j * 0.9 * f, 70.0)
        u = mem.make_update(cx, d, out, 0.0)
        assert u == red.make_update(cx, d, out, 0.0)
        mem.source.learn(u)
        store.learn(u)
    assert await store.flush(20)
    assert await store.wait_synced()
    table = mem.source
    assert isinstance(table, QTable)
    assert strip(await store.export())["states"] == strip(table.export(store.device))["states"]  # exact
    assert any(n == VISITS_MAX for s in table.n for n in table.n[s].values())  # saturation was exercised
    # the corrections Redis holds (and the cache took from the channel) are the in-memory ones, exactly
    assert store.corrections.stats == table.corrections.stats
    c = redis.Redis.from_url(rs.url)
    stats, versions = decode_corrections(c.hgetall(store.keys.corr))
    c.close()
    assert stats == table.corrections.stats and all(v > 0 for v in versions.values())


CHILD = r"""
import asyncio, json, sys
from services.decider.qstore import QStore
from services.core.policies.qlearning import CorrectionObs, QUpdate

async def main(url, device, n, states):
    st = QStore(url, device, workers=2, batch_max=32)
    await st.start()
    for i in range(n):
        s = states[i % len(states)]
        st.submit(QUpdate(state=s, action="edge/gpu/fp16@3", reward=0.25, next_state=s, next_actions=(),
                          init=0.0, next_inits=(), learning_rate=0.5, discount=0.0,
                          correction=CorrectionObs("edge/gpu/fp16", 0.25, -0.5, 0.02, "m")))
        if i % 20 == 0:
            await asyncio.sleep(0)
    ok = await st.flush(60)
    print(json.dumps({"ok": ok, "applied": st.applied_total, "dropped": st.dropped_total}))
    await st.stop()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(x) for x in sys.argv[4].split(",")]))
"""


def test_two_processes_lose_no_update_of_rows_or_corrections(rs: EmbeddedRedis) -> None:
    """Two decider processes, 2 x 300 updates carrying corrections: every row count and the
    corrections' observation count are exact (the packed read-modify-write is atomic)."""
    device, n = dev(), 300
    states = list(range(500, 560))  # 5 updates per state per process: counts stay below VISITS_MAX
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, rs.url, device, str(n), ",".join(map(str, states))],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        r = json.loads(out.strip().splitlines()[-1])
        assert r["ok"] and r["applied"] == n and r["dropped"] == 0

    async def check() -> None:
        st = QStore(rs.url, device)
        await st.start()
        try:
            data = (await st.export()).model_dump()
            q = 0.0
            for _ in range(10):
                q = f32(q + 0.5 * (0.25 - q))  # Algorithm 1 with discount 0, stored as float32
            for s in states:
                assert data["states"][str(s)]["edge/gpu/fp16@3"] == {"q": q, "n": 10}
            fam = st.corrections.stats["edge/gpu/fp16"]
            assert fam.n == 2 * n and fam.m_lat == 0.25 and fam.m_energy == -0.5  # constant observations
            assert st.corrections.stats["m#edge/gpu/fp16"].n == 2 * n
        finally:
            await st.stop()

    asyncio.run(check())


async def test_new_actions_grow_every_record_and_keep_the_values(store: QStore, rs: EmbeddedRedis) -> None:
    """A runner that offers a new target: the records grow (one script) and nothing learnt moves."""
    first = ("edge/cpu/fp32@0", "edge/dsp/int8", "cloud/gpu/fp32")
    for i in range(30):
        store.submit(
            QUpdate(
                state=i * 37 % 3072,
                action=first[i % 3],
                reward=-float(i),
                next_state=i,
                next_actions=first,
                init=0.5,
                next_inits=(0.1, 0.2, 0.3),
                learning_rate=0.9,
                discount=0.1,
            )
        )
    assert await store.flush(10)
    before = strip(await store.export())
    more = tuple(f"edge/gpu/fp16@{k}" for k in range(7))
    store.submit(QUpdate(5, more[-1], -3.0, 5, more, 0.0, tuple(0.0 for _ in more), 1.0, 0.0))
    assert await store.flush(10)
    after = strip(await store.export())
    expected = json.loads(json.dumps(before["states"]))
    expected.setdefault("5", {})[more[-1]] = {"q": -3.0, "n": 1}
    assert after["states"] == expected
    c = redis.Redis.from_url(rs.url)
    cap = int(c.get(store.keys.cap) or 0)
    assert cap >= len(first) + len(more) and cap % 2 == 0
    lengths = {c.strlen(store.keys.rows(g)) for g in range(N_GROUPS) if c.exists(store.keys.rows(g))}
    c.close()
    assert lengths == {GROUP * stride(cap)}  # every group string is exactly 64 records wide


async def test_reset_clears_corrections_and_import_keeps_them(store: QStore, mesh: Mesh, rs: EmbeddedRedis) -> None:
    pol = PriorPolicy(store, mesh, PriorParams(epsilon=0.0))
    for cx in _contexts(mesh, random.Random(1), 20):
        d = pol.decide(cx, random.Random(0))
        true = costmodel.estimate(mesh, cx.features, d.target, cx.conditions)
        pol.learn(cx, d, Outcome(true.latency_s, true.energy_j, 70.0), 0.0)
    assert await store.flush(10)
    assert await store.wait_synced()
    data = await store.export()
    held = dict(store.corrections.stats)
    assert held
    await store.import_(data.model_dump(), mode="replace")
    assert strip(await store.export()) == strip(data)
    assert store.corrections.stats == held  # not part of the export format: an import keeps them
    await store.reset()
    assert not store.corrections.stats and strip(await store.export())["states"] == {}
    c = redis.Redis.from_url(rs.url)
    assert not c.exists(store.keys.corr)
    c.close()


async def test_another_process_corrections_reach_the_cache(rs: EmbeddedRedis) -> None:
    device = dev()
    a, b = QStore(rs.url, device, sync_interval_s=0.1), QStore(rs.url, device, sync_interval_s=0.1)
    await a.start()
    await b.start()
    try:
        u = QUpdate(7, "edge/cpu/int8@3", 0.1, 7, (), 0.0, (), 1.0, 0.0, CorrectionObs("edge/cpu/int8", 0.3, 0.2))
        b.learn(u)
        assert await b.flush(5)
        assert await a.wait_synced()
        deadline = asyncio.get_running_loop().time() + 2.0
        while "edge/cpu/int8" not in a.corrections.stats and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110  # polls what the background tasks do, bounded
            await asyncio.sleep(0.01)
        assert a.corrections.stats["edge/cpu/int8"] == b.corrections.stats["edge/cpu/int8"]
        assert a.corrections.stats["edge/cpu/int8"].m_lat == 0.3
        epoch = a.corrections.epoch
        # a restarted process loads them with the table
        c = QStore(rs.url, device)
        await c.start()
        assert c.corrections.stats == a.corrections.stats
        await c.stop()
        assert a.corrections.epoch == epoch
    finally:
        await a.stop()
        await b.stop()
