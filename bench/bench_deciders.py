"""Several deciders on one Redis (`make bench-deciders`): `/infer` throughput of one decider process
against two, behind the same runners.

The mesh starts as `make run` does (`autoscale up`'s launcher; the runners register in Redis); a
second decider process then starts with the same settings on another port: it finds the runners
in the registry and shares the Q-table (atomic Lua updates, row caches kept in step over pub/sub).
In interleaved rounds, the same total load (``--concurrency`` connections, the default policy on a
tiny model, so that the HTTP path and the Q updates rather than the network are measured) goes to
the first decider alone, then split evenly between the two. At the end every answered request must
have reached the Q-table exactly once: its visit count grows by the number of answers.

Writes bench/deciders.json and bench/deciders.md. Loopback only; every loop is bounded in count and
time. Run from the repository root: ``python -m bench.bench_deciders``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.bench_front import meter_for
from bench.loadgen import CpuMeter, load, pct, request_bytes
from services.cli.launcher import Mesh, service_command
from services.common.redis_embed import free_port
from services.common.settings import Settings
from tests.conftest import mesh_settings
from tests.test_models_api import tiny_cnn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench"
BODY = {"model": "tiny-cnn", "synthetic": True}


def second_decider(mesh: Mesh, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Another decider process with the mesh's settings, on its own port."""
    port = free_port()
    env = dict(os.environ) | mesh.settings.child_env() | {"REDIS_URL": mesh.redis_url}
    env |= {"AUTOSCALE_DECIDER_PORT": str(port), "AUTOSCALE_SERVICE": "decider2"}
    with log.open("ab") as out:  # the very command the launcher runs a decider with
        proc = subprocess.Popen(
            service_command("decider", "127.0.0.1", port),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the second decider exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2, trust_env=False).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("the second decider was not ready within 300 s")


async def split_load(ports: list[int], concurrency: int, total: int, max_s: float) -> dict[str, Any]:
    """``total`` requests over ``concurrency`` connections, split evenly between the deciders on
    ``ports``, at once (``bench.loadgen``'s asyncio-streams client: light enough that the deciders,
    not the client, are what the shared CPUs spend most on)."""
    request = request_bytes("/infer", json.dumps(BODY).encode())
    n = len(ports)
    parts = await asyncio.gather(*(load(p, request, concurrency // n, total // n, max_s) for p in ports))
    wall = max(p.seconds for p in parts)
    lat = sorted(x for p in parts for x in p.latencies) or [float("nan")]
    done = sum(p.requests for p in parts)
    return {
        "requests": done,
        "errors": sum(p.errors for p in parts),
        "first_error": next((p.first_error for p in parts if p.first_error), ""),
        "seconds": wall,
        "req_per_s": done / wall if wall else 0.0,
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
    }


def measured(meter: CpuMeter, ports: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """One round on ``ports`` with the CPU each process group spent per answered request (µs)."""
    before = meter.read()
    r = asyncio.run(split_load(ports, args.concurrency, args.requests, args.max_s))
    cpu = CpuMeter.per_request(before, meter.read(), int(r["requests"]))
    return r | {"cpu_us": {k: round(v, 1) for k, v in cpu.items()}, "cpu_total_us": round(sum(cpu.values()), 1)}


def visits(url: str) -> dict[str, int]:
    """The Q-table's write counter once this decider holds no update back (bounded wait)."""
    deadline = time.monotonic() + 60
    while True:
        stats = httpx.get(f"{url}/qtable/stats", timeout=30, trust_env=False).json()
        if stats["queue_depth"] == 0 or time.monotonic() > deadline:
            return {"version": int(stats["version"]), "queue_depth": int(stats["queue_depth"])}
        time.sleep(0.2)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    d = Settings.model_fields  # production refresh intervals, as in `make run`
    s = mesh_settings(
        work,
        zoo=["mobilenet_v1"],
        epsilon=0.0,
        log_level="warning",
        telemetry_refresh_s=d["telemetry_refresh_s"].default,
        runner_refresh_s=d["runner_refresh_s"].default,
    )
    shutil.rmtree(s.model_cache / "user", ignore_errors=True)
    mesh = Mesh(s).start(timeout_s=600)
    proc = None
    try:
        first = mesh.url("decider")
        httpx.post(
            f"{first}/models",
            params={"name": "tiny-cnn", "accuracy": 70},
            content=tiny_cnn(),
            timeout=60,
            trust_env=False,
        ).raise_for_status()
        proc, port2 = second_decider(mesh, Path(mesh.logs) / "decider2.log")
        second = f"http://127.0.0.1:{port2}"
        ports = [mesh.settings.port("decider"), port2]
        for port in ports:  # warm-up: sessions, connections, each decider's Q rows
            asyncio.run(split_load([port], 8, 100, 30))
        visits(second)  # its warm-up updates delivered too
        before = visits(first)
        meter = meter_for(mesh, decider=[mesh.services["decider"].proc.pid, proc.pid])  # both deciders
        one: list[dict[str, Any]] = []
        two: list[dict[str, Any]] = []
        for _ in range(args.rounds):
            one.append(measured(meter, ports[:1], args))
            two.append(measured(meter, ports, args))
        after = [visits(first), visits(second)]
        answered = sum(r["requests"] for r in one + two)
        return {
            "one": one,
            "two": two,
            "one_req_per_s": statistics.median(r["req_per_s"] for r in one),
            "two_req_per_s": statistics.median(r["req_per_s"] for r in two),
            "one_cpu_us": statistics.median(r["cpu_total_us"] for r in one),
            "two_cpu_us": statistics.median(r["cpu_total_us"] for r in two),
            "errors": sum(r["errors"] for r in one + two),
            "answered": answered,
            "updates_added": after[0]["version"] - before["version"],
            "updates_agree": after[0]["version"] == after[1]["version"],
        }
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        mesh.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=32, help="connections in all (split between the deciders)")
    ap.add_argument("--requests", type=int, default=2000, help="requests per round and configuration")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-s", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = run(args, Path(tmp))
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {platform.processor() or ''}",
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "command": "make bench-deciders",
        "args": vars(args),
        **res,
        "two_over_one": res["two_req_per_s"] / res["one_req_per_s"],
    }
    (OUT / "deciders.json").write_text(json.dumps(report, indent=2))

    def cell(r: dict[str, Any]) -> str:
        return (
            f"{r['req_per_s']:.0f} (p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms) | "
            f"{r['cpu_total_us']:.0f} (deciders {r['cpu_us']['decider']:.0f}, client {r['cpu_us']['client']:.0f})"
        )

    rows = [f"| {i + 1} | {cell(a)} | {cell(b)} |" for i, (a, b) in enumerate(zip(res["one"], res["two"], strict=True))]
    md = [
        "# Several deciders on one Redis",
        "",
        f"`make bench-deciders` on {report['date']}, {report['cpus']} CPUs (shared; load average "
        f"{report['load_avg'][0]:.1f} at the end), loopback. `/infer` on a tiny model, default policy (Q-learning, "
        f"epsilon 0), {args.concurrency} connections in all from one asyncio-streams client, {args.requests} "
        "requests per round and configuration, rounds interleaved. CPU: user + system µs per answered request "
        "of every process (deciders, runners, telemetry, Redis, the client); other tenants of the host inflate "
        "it too, so compare within a run.",
        "",
        "| round | one decider: req/s | CPU µs / request | two deciders (half the connections each): req/s "
        "| CPU µs / request |",
        "|---|---|---|---|---|",
        *rows,
        f"| **median** | **{report['one_req_per_s']:.0f}** | **{report['one_cpu_us']:.0f}** | "
        f"**{report['two_req_per_s']:.0f}** (**{report['two_over_one']:.2f}x**) | **{report['two_cpu_us']:.0f}** |",
        "",
        f"Failed requests: {report['errors']}. Q-table updates added: {report['updates_added']} for "
        f"{report['answered']} answers (every update applied once); both deciders read the same table: "
        f"{report['updates_agree']}.",
        "",
    ]
    (OUT / "deciders.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
