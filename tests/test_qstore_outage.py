"""No lost learning: the Q-table store against a real redis-server that dies, hangs and restarts.

While Redis is away the writer holds updates in its bounded buffer and retries until it is back;
when Redis comes back without updates it had acknowledged (AOF ``everysec`` loses the last
second or two on ``kill -9``), the writer replays them from its window. Every loop is bounded.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest

from services.common.redis_embed import EmbeddedRedis
from services.core.policies.qlearning import QUpdate, initial_q
from services.decider.qstore import QStore

ACTION = "edge/cpu/fp32@0"


def dev() -> str:
    return "o" + uuid.uuid4().hex[:10]


def upd(state: int, reward: float = -1.0) -> QUpdate:
    return QUpdate(
        state=state,
        action=ACTION,
        reward=reward,
        next_state=state,
        next_actions=(),
        init=initial_q(0, state, ACTION),
        next_inits=(),
        learning_rate=0.5,
        discount=0.1,
    )


async def visits(store: QStore) -> dict[int, int]:
    """Visits of ACTION per state, as Redis holds them. The packed rows saturate a count at
    VISITS_MAX (14), so the tests below count updates over many states, a few each."""
    states = (await store.export()).states
    return {int(s): row[ACTION].n for s, row in states.items() if ACTION in row}


def kill(server: EmbeddedRedis) -> None:
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait(timeout=10)


async def wait_for(cond: object, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_updates_wait_out_an_outage_and_all_land(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "r").start()
    port = server.port
    s = QStore(server.url, dev(), retry_max_wait_s=0.2, sync_interval_s=0.2)
    await s.start()
    try:
        for i in range(50):
            s.submit(upd(1000 + i))
        assert await s.flush(20)
        kill(server)
        for i in range(300):
            s.submit(upd(2000 + i))
        await wait_for(lambda: not s.writer.reachable, "the writer to notice the outage")
        assert s.writer.queue_depth == 300 and s.dropped_total == 0
        assert s.row(1000)  # decisions still read the cached row
        await asyncio.sleep(1.0)  # an outage that outlasts several retries
        server.start()
        assert server.port == port  # clients reconnect where they were
        assert await s.flush(30), "held updates were not delivered after Redis came back"
        assert s.writer.reachable and s.dropped_total == 0 and s.lost_total == 0
        # 50 before the outage (their AOF tail replayed if the kill lost it) + 300 held.
        assert await visits(s) == dict.fromkeys([*range(1000, 1050), *range(2000, 2300)], 1)
    finally:
        await s.stop()
        server.stop()


@pytest.mark.parametrize("window_s", [5.0, 0.0])
async def test_acknowledged_updates_lost_in_a_restart_are_replayed_or_counted(tmp_path: Path, window_s: float) -> None:
    """Redis restarts without its last 10 acknowledged updates (the AOF cut back exactly, as a
    crash under ``everysec`` cuts it): the replay window puts them back; without one they are
    counted lost."""
    server = EmbeddedRedis(tmp_path / "r", appendfsync="always").start()
    s = QStore(server.url, dev(), retry_max_wait_s=0.2, sync_interval_s=0.2, replay_window_s=window_s)
    await s.start()
    try:
        for i in range(20):
            s.submit(upd(100 + i))
        assert await s.flush(20)
        aof = server.data_dir / "appendonly.aof"
        size = aof.stat().st_size
        for i in range(20, 30):
            s.submit(upd(100 + i))
        assert await s.flush(20)
        kill(server)
        os.truncate(aof, size)  # the restart will not know the last 10
        server.start()
        s.submit(upd(130))
        assert await s.flush(30)
        if window_s:
            assert (s.replayed_total, s.lost_total) == (10, 0)
            assert await visits(s) == dict.fromkeys(range(100, 131), 1)
        else:
            assert (s.replayed_total, s.lost_total) == (0, 10)
            assert await visits(s) == dict.fromkeys([*range(100, 120), 130], 1)
        assert s.dropped_total == 0
    finally:
        await s.stop()
        server.stop()


async def test_a_full_buffer_drops_the_oldest_updates_and_counts_them(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "r").start()
    s = QStore(server.url, dev(), queue_max=10, retry_max_wait_s=0.2, sync_interval_s=0.2)
    await s.start()
    try:
        kill(server)
        for state in range(25):  # no await in between: all of them meet a full buffer at once
            s.submit(upd(state))
        assert s.dropped_total == 15 and s.submitted_total == 25 and s.writer.queue_depth == 10
        server.start()
        assert await s.flush(30)
        assert await visits(s) == dict.fromkeys(range(15, 25), 1)  # the newest ten
    finally:
        await s.stop()
        server.stop()


async def test_a_hung_redis_times_out_and_nothing_is_applied_twice(tmp_path: Path) -> None:
    """SIGSTOP: calls time out (the client's socket timeout), are retried, and the ones Redis
    had in fact run before it froze are recognised as duplicates after SIGCONT."""
    import redis.asyncio as aioredis

    server = EmbeddedRedis(tmp_path / "r").start()
    r = aioredis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    s = QStore(r, dev(), retry_max_wait_s=0.2, sync_interval_s=0.2)
    await s.start()
    assert server.proc is not None
    try:
        os.kill(server.proc.pid, 19)  # SIGSTOP
        try:
            for i in range(40):
                s.submit(upd(300 + i))
            await wait_for(lambda: not s.writer.reachable, "the writer to time out")
        finally:
            os.kill(server.proc.pid, 18)  # SIGCONT
        assert await s.flush(30)
        assert await visits(s) == dict.fromkeys(range(300, 340), 1) and s.dropped_total == 0
    finally:
        await s.stop()
        await r.aclose()
        server.stop()


async def test_a_reset_is_not_mistaken_for_lost_updates(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "r").start()
    s = QStore(server.url, dev(), sync_interval_s=0.2)
    await s.start()
    try:
        for _ in range(10):
            s.submit(upd(2))
        assert await s.flush(20)
        await s.reset()
        for _ in range(5):
            s.submit(upd(2))
        assert await s.flush(20)
        assert await visits(s) == {2: 5} and s.replayed_total == 0 and s.lost_total == 0
    finally:
        await s.stop()
        server.stop()
