"""Mesh benchmark (`make bench-mesh`): the HTTP path's overheads, as ratios measured in one run.

1. Runner `/run` vs raw ONNX Runtime in-process, same model file, same threads (target <= 1.15
   for MobileNet v1).
2. Decider `/infer` vs runner `/run` directly (what the decision, dispatch and reward add).
3. `/infer` throughput at 32 connections with the decider's inter-service client on httpx's own
   async transport vs the aiohttp transport (encode/httpx#3215), on a tiny model so that the
   HTTP stack, not the network, is what is measured.

Writes bench/mesh.json and bench/mesh.md. Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.engines import get_engine  # noqa: E402
from services.common.model_store import ModelStore  # noqa: E402
from services.common.schemas import Precision  # noqa: E402
from services.common.tensors import synthetic  # noqa: E402
from services.launcher import Mesh  # noqa: E402
from tests.conftest import mesh_settings  # noqa: E402
from tests.test_models_api import tiny_cnn  # noqa: E402

OUT = ROOT / "bench"


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def raw_ort_ms(store: ModelStore, model: str, threads: int, n: int) -> float:
    loaded = get_engine("onnxruntime").load(store.path(model, Precision.fp32), threads=threads)
    info = store.info(model)
    feeds = {s.name: synthetic(s) for s in info.inputs}
    for _ in range(5):
        loaded.run(feeds)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        loaded.run(feeds)
        samples.append(time.perf_counter() - t0)
    return _median_ms(samples)


def sequential_ms(url: str, body: dict[str, object], n: int) -> float:
    samples = []
    with httpx.Client(timeout=60, trust_env=False) as c:
        for _ in range(5):
            c.post(url, json=body).raise_for_status()
        for _ in range(n):
            t0 = time.perf_counter()
            c.post(url, json=body).raise_for_status()
            samples.append(time.perf_counter() - t0)
    return _median_ms(samples)


async def _throughput(url: str, body: dict[str, object], concurrency: int, total: int, max_s: float) -> dict[str, float]:
    done = errors = 0
    latencies: list[float] = []
    deadline = time.monotonic() + max_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker() -> None:
            nonlocal done, errors
            while done + errors < total and time.monotonic() < deadline:
                t0 = time.perf_counter()
                async with session.post(url, json=body) as resp:
                    await resp.read()
                    if resp.status == 200:
                        done += 1
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = sorted(latencies) or [float("nan")]
    return {"requests": done, "errors": errors, "seconds": wall, "req_per_s": done / wall,
            "p50_ms": lat[len(lat) // 2] * 1e3, "p99_ms": lat[int(len(lat) * 0.99) - 1 if len(lat) > 1 else 0] * 1e3}


def run_mesh(transport: str, work: Path, args: argparse.Namespace) -> dict[str, object]:
    s = mesh_settings(work / transport, http_transport=transport, zoo=["mobilenet_v1"], epsilon=0.0,
                      log_level="warning", max_upload_bytes=64 * 1024 * 1024)
    shutil.rmtree(s.model_cache / "user", ignore_errors=True)  # uploads of an earlier run
    mesh = Mesh(s).start(timeout_s=600)
    try:
        dec = mesh.url("decider")
        up = httpx.post(f"{dec}/models", params={"name": "tiny-cnn", "accuracy": 70}, content=tiny_cnn(), timeout=60,
                        trust_env=False)
        up.raise_for_status()
        time.sleep(2 * s.runner_refresh_s)
        result: dict[str, object] = {"transport": transport}
        if transport == "aiohttp":
            store = ModelStore(s.model_cache, ["mobilenet_v1"])
            targets = httpx.get(f"{mesh.url('edge')}/targets", trust_env=False).json()
            cpu = next(t["target"] for t in targets if t["target"]["processor"] == "cpu"
                       and t["target"]["precision"] == "fp32")
            run_body = {"model": "mobilenet_v1", "synthetic": True, "target": cpu}
            raw = raw_ort_ms(store, "mobilenet_v1", s.ort_threads, args.n)
            run = sequential_ms(f"{mesh.url('edge')}/run", run_body, args.n)
            infer = sequential_ms(f"{dec}/infer", {"model": "mobilenet_v1", "synthetic": True, "policy": "edge-cpu-fp32"}, args.n)
            result |= {"raw_ort_ms": raw, "runner_run_ms": run, "decider_infer_ms": infer,
                       "run_over_raw": run / raw, "infer_over_run": infer / run}
        body = {"model": "tiny-cnn", "synthetic": True, "policy": "edge-cpu-fp32"}
        asyncio.run(_throughput(f"{dec}/infer", body, 8, 100, 20))  # warm-up
        result["throughput"] = asyncio.run(_throughput(f"{dec}/infer", body, args.concurrency, args.requests, args.max_s))
        return result
    finally:
        mesh.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="sequential samples per latency figure")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--max-s", type=float, default=30.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fast = run_mesh("aiohttp", Path(tmp), args)
        slow = run_mesh("httpx", Path(tmp), args)
    tp_fast, tp_slow = fast["throughput"], slow["throughput"]  # type: ignore[index]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": f"{platform.machine()}, {platform.processor() or ''}",
        "cpus": __import__("os").cpu_count(), "command": "make bench-mesh", "args": vars(args),
        "aiohttp": fast, "httpx": slow, "aiohttp_over_httpx_throughput": tp_fast["req_per_s"] / tp_slow["req_per_s"],  # type: ignore[index]
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "mesh.json").write_text(json.dumps(report, indent=2))
    md = [
        "# Mesh benchmark", "", f"`make bench-mesh` on {report['date']}, {report['cpus']} CPUs, loopback.", "",
        "| figure | value |", "|---|---|",
        f"| raw ONNX Runtime in-process, MobileNet v1 (median) | {fast['raw_ort_ms']:.2f} ms |",
        f"| runner `/run` (median) | {fast['runner_run_ms']:.2f} ms |",
        f"| **runner `/run` / raw ORT** (target <= 1.15) | **{fast['run_over_raw']:.3f}** |",
        f"| decider `/infer` (median) | {fast['decider_infer_ms']:.2f} ms |",
        f"| **decider `/infer` / runner `/run`** | **{fast['infer_over_run']:.3f}** |",
        f"| `/infer` req/s at {args.concurrency} conns, tiny model, aiohttp transport | {tp_fast['req_per_s']:.0f} (p50 {tp_fast['p50_ms']:.1f} ms, p99 {tp_fast['p99_ms']:.1f} ms) |",  # type: ignore[index]
        f"| same, httpx's default transport | {tp_slow['req_per_s']:.0f} (p50 {tp_slow['p50_ms']:.1f} ms, p99 {tp_slow['p99_ms']:.1f} ms) |",  # type: ignore[index]
        f"| **aiohttp / httpx transport throughput** | **{report['aiohttp_over_httpx_throughput']:.2f}x** |",
        "",
    ]
    (OUT / "mesh.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
