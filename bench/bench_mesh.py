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
import http.client
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.engines import get_engine  # noqa: E402
from services.common.model_store import ModelStore  # noqa: E402
from services.common.schemas import Precision  # noqa: E402
from services.common.settings import Settings  # noqa: E402
from services.common.tensors import synthetic  # noqa: E402
from services.launcher import Mesh  # noqa: E402
from tests.conftest import mesh_settings  # noqa: E402
from tests.test_models_api import tiny_cnn  # noqa: E402

OUT = ROOT / "bench"


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _connect(url: str) -> http.client.HTTPConnection:
    u = urlsplit(url)
    return http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=60)


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> dict[str, Any]:
    conn.request("POST", path, body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"POST {path}: {resp.status} {data[:300]!r}")
    return json.loads(data)  # type: ignore[no-any-return]


def latencies(store: ModelStore, model: str, threads: int, runner: str, run_body: dict[str, object], decider: str,
              infer_body: dict[str, object], n: int, rounds: int = 15) -> dict[str, float]:
    """Raw ORT in this process, the runner's /run and the decider's /infer, in interleaved rounds
    over keep-alive stdlib connections (what is measured is the services, not a client library).

    The machine's speed drifts on a shared host, so each ratio is taken within a round (medians
    of a few calls made seconds apart) and the figure is the median over rounds."""
    loaded = get_engine("onnxruntime").load(store.path(model, Precision.fp32), threads=threads)
    feeds = {s.name: synthetic(s) for s in store.info(model).inputs}
    run_conn = _connect(runner)
    infer_conn = _connect(decider)
    rb, ib = json.dumps(run_body).encode(), json.dumps(infer_body).encode()
    for _ in range(5):  # warm-up: sessions, connections, caches
        loaded.run(feeds)
        _post(run_conn, "/run", rb)
        _post(infer_conn, "/infer", ib)
    series: dict[str, list[float]] = {"raw": [], "run": [], "host": [], "infer": []}
    ratios: dict[str, list[float]] = {"run_over_raw": [], "host_exec_over_raw": [], "infer_over_run": []}
    per = max(1, n // rounds)
    for _ in range(rounds):
        raw, run, host, infer = [], [], [], []
        for _ in range(per):
            t0 = time.perf_counter()
            loaded.run(feeds)
            raw.append(time.perf_counter() - t0)
        for _ in range(per):
            t0 = time.perf_counter()
            r = _post(run_conn, "/run", rb)
            run.append(time.perf_counter() - t0)
            host.append(float(r["host_exec_s"]))
        for _ in range(per):
            t0 = time.perf_counter()
            _post(infer_conn, "/infer", ib)
            infer.append(time.perf_counter() - t0)
        for k, v in (("raw", raw), ("run", run), ("host", host), ("infer", infer)):
            series[k] += v
        m = {k: statistics.median(v) for k, v in (("raw", raw), ("run", run), ("host", host), ("infer", infer))}
        ratios["run_over_raw"].append(m["run"] / m["raw"])
        ratios["host_exec_over_raw"].append(m["host"] / m["raw"])
        ratios["infer_over_run"].append(m["infer"] / m["run"])
    run_conn.close()
    infer_conn.close()
    out: dict[str, float] = {
        "raw_ort_ms": _median_ms(series["raw"]), "runner_run_ms": _median_ms(series["run"]),
        "runner_host_exec_ms": _median_ms(series["host"]), "decider_infer_ms": _median_ms(series["infer"]),
        "samples_each": per * rounds, "rounds": rounds,
    }
    for k, v in ratios.items():
        v.sort()
        out[k] = statistics.median(v)
        out[f"{k}_min"], out[f"{k}_max"] = v[0], v[-1]
    return out


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
    # Production refresh intervals (the test suite polls faster), so background polling is as in `make run`.
    d = Settings.model_fields
    s = mesh_settings(work / transport, http_transport=transport, zoo=["mobilenet_v1"], epsilon=0.0,
                      log_level="warning", max_upload_bytes=64 * 1024 * 1024,
                      telemetry_refresh_s=d["telemetry_refresh_s"].default, runner_refresh_s=d["runner_refresh_s"].default)
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
            infer_body = {"model": "mobilenet_v1", "synthetic": True, "policy": "edge-cpu-fp32"}
            result |= latencies(store, "mobilenet_v1", s.ort_threads, mesh.url("edge"), run_body, dec, infer_body,
                                args.n)
        body = {"model": "tiny-cnn", "synthetic": True, "policy": "edge-cpu-fp32"}
        asyncio.run(_throughput(f"{dec}/infer", body, 8, 100, 20))  # warm-up
        result["throughput"] = asyncio.run(_throughput(f"{dec}/infer", body, args.concurrency, args.requests, args.max_s))
        return result
    finally:
        mesh.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=120, help="sequential samples per latency figure")
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
        "# Mesh benchmark", "", f"`make bench-mesh` on {report['date']}, {report['cpus']} CPUs, loopback. "
        f"Latencies: medians of {fast['samples_each']} requests each, raw / `/run` / `/infer` in interleaved rounds.", "",
        "| figure | value |", "|---|---|",
        f"| raw ONNX Runtime in-process, MobileNet v1 (median) | {fast['raw_ort_ms']:.2f} ms |",
        f"| runner `/run` (median) | {fast['runner_run_ms']:.2f} ms |",
        f"| **runner `/run` / raw ORT** (target <= 1.15; median of {fast['rounds']} rounds, range) | "
        f"**{fast['run_over_raw']:.3f}** ({fast['run_over_raw_min']:.3f}-{fast['run_over_raw_max']:.3f}) |",
        f"| the runner's own execution time (`host_exec_s`) / raw ORT | {fast['host_exec_over_raw']:.3f} |",
        f"| decider `/infer` (median) | {fast['decider_infer_ms']:.2f} ms |",
        f"| **decider `/infer` / runner `/run`** | **{fast['infer_over_run']:.3f}** "
        f"({fast['infer_over_run_min']:.3f}-{fast['infer_over_run_max']:.3f}) |",
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
