"""Hot-path timings that tests must not assert (`make bench-paths`): measured here, in one run.

1. The cost model's scalar path (``costmodel.estimate``, one target): microseconds per call.
2. Telemetry ``GET /state`` while one source hangs forever and another keeps failing (the tests'
   faulty sources): milliseconds per request, from memory, never waiting on a source.
3. The bearer-token check every scoped route runs (``Authenticator.authorize``, three tokens).
4. A Q update written by one decider reaching another's cache (pub/sub invalidation, the periodic
   version check far out of the picture): milliseconds from the write to the reader's cache.

Writes bench/paths.json and bench/paths.md. Loopback only; every loop is bounded in count.
Run from the repository root: ``python -m bench.bench_paths``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from services.common.auth import Authenticator, Scope, TokenEntry
from services.common.config_files import load_profile
from services.core import costmodel
from services.core.schemas import ModelFeatures, RuntimeConditions, Target

OUT = Path(__file__).resolve().parent
MNV1 = ModelFeatures(conv=14, fc=1, rc=0, macs=569_000_000, input_bytes=602_112, output_bytes=4_004)


def per_call_us(fn: Callable[[], object], calls: int = 2000, repeats: int = 7) -> dict[str, float]:
    """Median and best of ``repeats`` batches of ``calls`` calls, in microseconds per call."""
    batches = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        batches.append((time.perf_counter() - t0) / calls * 1e6)
    return {"median_us": statistics.median(batches), "best_us": min(batches)}


def state_latency(requests: int = 300) -> dict[str, float]:
    from tests.test_telemetry import run_telemetry

    with tempfile.TemporaryDirectory(prefix="bench-paths-") as tmp:
        extra = "test_telemetry:faulty_sources"
        with run_telemetry(Path(tmp), AUTOSCALE_TELEMETRY_EXTRA_SOURCES=extra) as client:
            time.sleep(2.0)  # the hanging source is stuck in its read by now
            samples = []
            for _ in range(requests):
                t0 = time.perf_counter()
                client.get("/state").raise_for_status()
                samples.append(time.perf_counter() - t0)
    q = statistics.quantiles(samples, n=100, method="inclusive")  # never beyond the max
    return {"p50_ms": statistics.median(samples) * 1e3, "p99_ms": q[98] * 1e3, "max_ms": max(samples) * 1e3}


def cache_delivery(updates: int = 200) -> dict[str, float]:
    """Two stores on one embedded Redis: B learns, A's cache sees the new value (polled every 0.5 ms)."""
    import asyncio

    from services.common.redis_embed import EmbeddedRedis
    from services.core.policies.base import Candidate, Decision, DecisionContext, Outcome
    from services.core.policies.qlearning import QLearningPolicy, QParams
    from services.decider.qstore import QStore

    cand = Candidate(Target.parse("edge/cpu/fp32@2"), 70.0)
    ctx = DecisionContext("m", MNV1, RuntimeConditions(), 10, (cand,), 0.05, None)

    async def measure(url: str) -> list[float]:
        a, b = QStore(url, "bench", sync_interval_s=3600.0), QStore(url, "bench", sync_interval_s=3600.0)
        await a.start()
        await b.start()
        writer = QLearningPolicy(b, QParams(epsilon=0.0))
        samples: list[float] = []
        for i in range(updates):
            reward = -100.0 - i  # a new value every time
            writer.learn(ctx, Decision(cand.target), Outcome(0.01, 0.1, 70.0), reward)
            t0, before = time.perf_counter(), a.row(10).get(cand.target.id)
            while a.row(10).get(cand.target.id) == before and time.perf_counter() - t0 < 5.0:  # noqa: ASYNC110  # polls the cache a background task updates, bounded
                await asyncio.sleep(0.0005)
            samples.append(time.perf_counter() - t0)
        await a.stop()
        await b.stop()
        return samples

    with tempfile.TemporaryDirectory(prefix="bench-paths-redis-") as tmp:
        rs = EmbeddedRedis(Path(tmp)).start()
        try:
            samples = asyncio.run(measure(rs.url))
        finally:
            rs.stop()
    q = statistics.quantiles(samples, n=100, method="inclusive")  # never beyond the max
    return {"p50_ms": statistics.median(samples) * 1e3, "p99_ms": q[98] * 1e3, "max_ms": max(samples) * 1e3}


def run() -> dict[str, Any]:
    mesh = costmodel.Mesh(load_profile("mi8pro"), load_profile("galaxy_tab_s6"), load_profile("cloud_p100"))
    target, idle = Target.parse("cloud/gpu/fp32"), RuntimeConditions()
    auth = Authenticator(
        TokenEntry(name=s.value, token=SecretStr(f"{s.value}-token-0123456789abcdef"), scopes=[s]) for s in Scope
    )
    header = "Bearer mesh-token-0123456789abcdef"
    return {
        "costmodel_estimate": per_call_us(lambda: costmodel.estimate(mesh, MNV1, target, idle)),
        "auth_check": per_call_us(lambda: auth.authorize(header, Scope.mesh, local_loopback=True)),
        "state_with_hung_source": state_latency(),
        "cache_delivery": cache_delivery(),
    }


def markdown(r: dict[str, Any]) -> str:
    cm, au, st, cd = r["costmodel_estimate"], r["auth_check"], r["state_with_hung_source"], r["cache_delivery"]
    return "\n".join(
        [
            "# Hot paths the tests do not time",
            "",
            "`python -m bench.bench_paths` (2,000 calls x 7 batches per micro figure; 300 sequential `/state`).",
            "",
            "| path | median | best / p99 |",
            "|---|---|---|",
            f"| cost model scalar estimate (`costmodel.estimate`, one target) | {cm['median_us']:.1f} µs "
            f"| {cm['best_us']:.1f} µs best batch |",
            f"| bearer-token check, three tokens (`Authenticator.authorize`) | {au['median_us']:.1f} µs "
            f"| {au['best_us']:.1f} µs best batch |",
            f"| telemetry `GET /state` while a source hangs forever | {st['p50_ms']:.2f} ms "
            f"| {st['p99_ms']:.2f} ms p99 (max {st['max_ms']:.1f} ms) |",
            f"| a Q update from another decider reaching this one's cache (pub/sub) | {cd['p50_ms']:.2f} ms "
            f"| {cd['p99_ms']:.2f} ms p99 (max {cd['max_ms']:.1f} ms) |",
            "",
        ]
    )


def main() -> None:
    report = run()
    (OUT / "paths.json").write_text(json.dumps(report, indent=2))
    (OUT / "paths.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
