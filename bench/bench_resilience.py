"""Resilience benchmark (`make bench-resilience`): what faults cost, measured through a running mesh.

1. Redis away for 30 s under load (``kill -9``, started again 30 s later on the same port and data
   dir): requests served meanwhile, the most Q updates held, and Q updates lost -- Redis's visit
   counts against the requests answered (every answer from a fresh state is one update).
2. ``kill -9`` of Redis started again at once (AOF ``everysec``), a few trials, with the decider's
   replay window (the default) and without it (the AOF alone): updates lost, as a count and as
   seconds of updates.
3. A runner killed (SIGKILL) and one hung (SIGSTOP, SIGCONT later) under 2,000 requests at
   concurrency 16 with the default deadlines: failed requests and latency against the deadline.

Writes bench/resilience.json and bench/resilience.md. Loopback only; every loop is bounded in count
and time. Run it from the repository root as a module, ``python -m bench.bench_resilience``: it
borrows the test suite's mesh settings and load generator, so ``tests`` must be importable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from services.cli.launcher import Mesh
from services.common.http import make_client
from services.common.settings import Settings
from tests.conftest import mesh_settings
from tests.test_fault_injection import BODY, Result, drive

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench"


def _stats(mesh: Mesh) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{mesh.url('decider')}/qtable/stats", timeout=60, trust_env=False).json()
    return body


def _flushed(mesh: Mesh, timeout_s: float = 120.0) -> dict[str, Any]:
    """/qtable/stats once every held update is delivered."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            st = _stats(mesh)
            if st["queue_depth"] == 0:
                return st
        except (httpx.HTTPError, ValueError):
            pass  # Redis still coming back
        if time.monotonic() > deadline:
            raise TimeoutError(f"updates still held after {timeout_s:.0f} s")
        time.sleep(0.5)


async def load_for(
    url: str, seconds: float, concurrency: int, events: list[tuple[float, Callable[[], None]]]
) -> tuple[list[Result], int]:
    """Requests for ``seconds``; ``events`` run at their offsets. Returns the results and the most
    updates the decider held meanwhile (polled from /readyz)."""
    results: list[Result] = []
    held = 0
    t0 = time.monotonic()
    async with make_client(url, timeout_s=60.0, max_connections=concurrency + 1) as client:

        async def worker() -> None:
            while time.monotonic() - t0 < seconds:
                t = time.monotonic()
                resp = await client.post("/infer", json=BODY)
                r = Result(resp.status_code, time.monotonic() - t)
                if resp.status_code == 200:
                    r.stale = resp.json()["state"]["stale"]
                results.append(r)

        async def timeline() -> None:
            nonlocal held
            pending = sorted(events, key=lambda e: e[0])
            while time.monotonic() - t0 < seconds:
                while pending and time.monotonic() - t0 >= pending[0][0]:
                    pending.pop(0)[1]()
                try:
                    ready = (await client.get("/readyz", timeout=5.0)).json()
                    held = max(held, ready["qtable"]["pending_updates"])
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                await asyncio.sleep(0.25)
            for _, fn in pending:
                fn()

        await asyncio.wait_for(asyncio.gather(timeline(), *(worker() for _ in range(concurrency))), seconds + 120)
    return results, held


def learning_phase(mesh: Mesh, seconds: float, events: list[tuple[float, Callable[[], None]]]) -> dict[str, Any]:
    """Load with Redis faults; lost = answers learned from (fresh state) - updates that reached Redis."""
    before = _flushed(mesh)
    results, held = asyncio.run(load_for(mesh.url("decider"), seconds, 8, events))
    after = _flushed(mesh)
    learned = sum(1 for r in results if r.status == 200 and not r.stale)
    delta = after["version"] - before["version"]  # one step per update (visit counts saturate)
    rate = learned / seconds
    return {
        "requests": len(results),
        "failed": sum(1 for r in results if r.status != 200),
        "learned": learned,
        "reached_redis": delta,
        "lost": learned - delta,
        "lost_s": (learned - delta) / rate if rate else 0.0,
        "updates_per_s": rate,
        "max_held": held,
        "replayed": after["replayed_total"] - before["replayed_total"],
        "dropped": after["dropped_total"] - before["dropped_total"],
    }


def redis_kill(mesh: Mesh) -> Callable[[], None]:
    def kill() -> None:
        assert mesh.redis is not None and mesh.redis.proc is not None
        mesh.redis.proc.kill()
        mesh.redis.proc.wait(10)

    return kill


def redis_start(mesh: Mesh) -> Callable[[], None]:
    def start() -> None:
        assert mesh.redis is not None
        mesh.redis.start()

    return start


def kill_trials(mesh: Mesh, trials: int) -> list[dict[str, Any]]:
    return [learning_phase(mesh, 6.0, [(2.0, redis_kill(mesh)), (2.0, redis_start(mesh))]) for _ in range(trials)]


def runner_phase(mesh: Mesh, fault: str, n: int) -> dict[str, Any]:
    """``n`` requests at concurrency 16; at the 300th the busiest runner is killed or stopped
    (SIGCONT 800 answers later; a killed one is started again 2 s later, as supervision would)."""
    hit: list[str] = []

    def inject(results: list[Result]) -> None:
        counts: dict[str, int] = {}
        for r in results:
            counts[r.runner] = counts.get(r.runner, 0) + 1
        hit.append(max(counts, key=counts.__getitem__))
        os.kill(mesh.services[hit[0]].proc.pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)

    def recover(_: list[Result]) -> None:
        if fault == "stop":
            os.kill(mesh.services[hit[0]].proc.pid, signal.SIGCONT)
        else:
            mesh.restart(hit[0])

    try:
        results = asyncio.run(drive(mesh.url("decider"), n, 16, {300: inject, 1100: recover}, timeout_s=900))
    finally:
        if fault == "stop" and hit:
            os.kill(mesh.services[hit[0]].proc.pid, signal.SIGCONT)
    ok = [r for r in results if r.status == 200]
    lat = sorted(r.latency_s for r in results)
    deadline = max((r.deadline_s for r in ok), default=0.0)
    return {
        "fault": fault,
        "runner": hit[0] if hit else "",
        "requests": len(results),
        "failed": len(results) - len(ok),
        "over_deadline": sum(1 for r in ok if r.latency_s > r.deadline_s),
        "deadline_s": deadline,
        "p50_ms": statistics.median(lat) * 1e3,
        "p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1e3,
        "max_ms": lat[-1] * 1e3,
    }


def run(work: Path, args: argparse.Namespace, replay: bool) -> dict[str, Any]:
    d = Settings.model_fields
    s = mesh_settings(
        work / ("replay" if replay else "aof-only"),
        zoo=["mobilenet_v1"],
        log_level="warning",
        telemetry_refresh_s=d["telemetry_refresh_s"].default,
        runner_refresh_s=d["runner_refresh_s"].default,
        qtable_replay_window_s=d["qtable_replay_window_s"].default if replay else 0.0,
        # the product's deadlines, not the test mesh's generous ones: what is promised
        deadline_min_ms=d["deadline_min_ms"].default,
        deadline_max_ms=d["deadline_max_ms"].default,
    )
    # Unsupervised: this benchmark decides when Redis and the runners come back.
    mesh = Mesh(s, supervise=False).start(timeout_s=600)
    try:
        out: dict[str, Any] = {"replay_window_s": s.qtable_replay_window_s}
        if replay:
            out["outage"] = learning_phase(
                mesh, args.outage_s + 10.0, [(5.0, redis_kill(mesh)), (5.0 + args.outage_s, redis_start(mesh))]
            )
        out["kill"] = kill_trials(mesh, args.trials)
        if replay and not args.skip_runners:
            out["runners"] = [runner_phase(mesh, fault, args.requests) for fault in ("stop", "kill")]
        return out
    finally:
        mesh.stop()


def markdown(report: dict[str, Any]) -> str:
    a, b = report["replay"], report["aof_only"]
    o = a["outage"]
    kills_a = sum(t["lost"] for t in a["kill"])
    kills_b = sum(t["lost"] for t in b["kill"])
    n_a = sum(t["learned"] for t in a["kill"])
    n_b = sum(t["learned"] for t in b["kill"])
    md = [
        "# Resilience benchmark",
        "",
        f"`{report['command']}` on {report['date']}, {report['cpus']} CPUs (shared), loopback.",
        "",
        "| fault (under load, 8 connections) | requests (failed) | Q updates learned | reached Redis | lost | "
        "most held |",
        "|---|---|---|---|---|---|",
        f"| Redis killed, back after {report['args']['outage_s']:.0f} s | {o['requests']} ({o['failed']}) | "
        f"{o['learned']} | {o['reached_redis']} | **{o['lost']}** | {o['max_held']} |",
        f"| Redis `kill -9`, restarted at once (AOF everysec), {len(a['kill'])} trials, replay window "
        f"{a['replay_window_s']:g} s | {sum(t['requests'] for t in a['kill'])} "
        f"({sum(t['failed'] for t in a['kill'])}) | {n_a} | {n_a - kills_a} | **{kills_a}** | "
        f"{max(t['max_held'] for t in a['kill'])} |",
        f"| same, no replay window (the AOF alone) | {sum(t['requests'] for t in b['kill'])} "
        f"({sum(t['failed'] for t in b['kill'])}) | {n_b} | {n_b - kills_b} | **{kills_b}** "
        f"({kills_b / max(1e-9, statistics.mean(t['updates_per_s'] for t in b['kill'])):.2f} s of updates) | "
        f"{max(t['max_held'] for t in b['kill'])} |",
        "",
    ]
    if a.get("runners"):
        md += [
            f"| runner fault ({report['args']['requests']} requests, concurrency 16, default deadline) | runner | "
            "failed | answered after the deadline | deadline | p50 | p99 | max |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in a["runners"]:
            what = "SIGSTOP (SIGCONT 800 answers later)" if r["fault"] == "stop" else "SIGKILL (restarted 800 later)"
            md.append(
                f"| {what} | {r['runner']} | **{r['failed']}** | **{r['over_deadline']}** | {r['deadline_s']:.1f} s | "
                f"{r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['max_ms']:.0f} ms |"
            )
        md.append("")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outage-s", type=float, default=30.0, help="how long Redis stays away")
    ap.add_argument("--trials", type=int, default=3, help="kill -9 trials per configuration")
    ap.add_argument("--requests", type=int, default=2000, help="requests per runner fault")
    ap.add_argument("--skip-runners", action="store_true", help="Redis faults only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        replay = run(Path(tmp), args, replay=True)
        aof_only = run(Path(tmp), args, replay=False)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {platform.processor() or ''}",
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "command": "make bench-resilience",
        "args": vars(args),
        "replay": replay,
        "aof_only": aof_only,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "resilience.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (OUT / "resilience.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
