"""Mesh benchmark (`make bench-mesh`): the HTTP path's overheads, as ratios measured in one run.

1. Runner `/run` vs raw ONNX Runtime in-process, same model file, same threads (target <= 1.15
   for MobileNet v1).
2. Decider `/infer` vs runner `/run` directly (what the decision, dispatch and reward add).
3. `/infer` throughput at 32 connections with the decider's inter-service client on httpx's own
   async transport vs the aiohttp transport (encode/httpx#3215), on a tiny model so that the
   HTTP stack, not the network, is what is measured.

Writes bench/mesh.json and bench/mesh.md. Loopback only; every loop is bounded in count and time.
Run it from the repository root as a module, ``python -m bench.bench_mesh`` (``make bench-mesh``): it borrows
the test suite's mesh settings and tiny model, so ``tests`` must be importable.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import platform
import shutil
import socket
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

from services.cli.launcher import Mesh
from services.common.engines import get_engine
from services.common.model_store import ModelStore
from services.common.settings import Settings
from services.common.tensors import synthetic
from services.common.zoo import ZOO_NAMES
from services.core.schemas import Precision
from tests.conftest import mesh_settings
from tests.test_models_api import tiny_cnn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench"


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


class SocketClient:
    """The least a keep-alive HTTP/1.1 POST needs, on a bare socket (TCP_NODELAY).

    Only for the /run latency figure: next to http.client (whose header parsing, run right after
    the inference has evicted the caches, costs ~0.3 ms here), it isolates what the *service*
    adds. Expects what uvicorn sends: a Content-Length body, no chunking."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 80), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = u.netloc.encode()

    def post(self, path: str, body: bytes) -> dict[str, Any]:
        self.sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host, len(body), body)
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"POST {path}: connection closed")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += self.sock.recv(65536)
        if not lines[0].startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"POST {path}: {lines[0]!r} {rest[:300]!r}")
        return json.loads(rest)

    def close(self) -> None:
        self.sock.close()


def _connect(url: str) -> http.client.HTTPConnection:
    u = urlsplit(url)
    return http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=60)


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> dict[str, Any]:
    conn.request("POST", path, body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"POST {path}: {resp.status} {data[:300]!r}")
    return json.loads(data)


def latencies(
    store: ModelStore,
    model: str,
    threads: int,
    runner: str,
    run_body: dict[str, object],
    decider: str,
    infer_body: dict[str, object],
    n: int,
    rounds: int = 15,
) -> dict[str, float]:
    """Raw ORT in this process, the runner's /run and the decider's /infer, in interleaved rounds
    over keep-alive stdlib connections (what is measured is the services, not a client library).

    The machine's speed drifts on a shared host, so each ratio is taken within a round (medians
    of a few calls made seconds apart) and the figure is the median over rounds."""
    loaded = get_engine("onnxruntime").load(store.path(model, Precision.fp32), threads=threads)
    feeds = {s.name: synthetic(s) for s in store.info(model).inputs}
    run_conn = _connect(runner)
    infer_conn = _connect(decider)
    run_sock = SocketClient(runner)
    rb, ib = json.dumps(run_body).encode(), json.dumps(infer_body).encode()
    for _ in range(5):  # warm-up: sessions, connections, caches
        loaded.run(feeds)
        _post(run_conn, "/run", rb)
        run_sock.post("/run", rb)
        _post(infer_conn, "/infer", ib)
    series: dict[str, list[float]] = {"raw": [], "run": [], "run_sock": [], "host": [], "infer": []}
    ratios: dict[str, list[float]] = {
        "run_over_raw": [],
        "run_socket_over_raw": [],
        "host_exec_over_raw": [],
        "infer_over_run": [],
    }
    per = max(1, n // rounds)

    def timed(fn: Any) -> tuple[float, Any]:
        t0 = time.perf_counter()
        r = fn()
        return time.perf_counter() - t0, r

    for _ in range(rounds):
        cur: dict[str, list[float]] = {k: [] for k in series}
        for _ in range(per):
            cur["raw"].append(timed(lambda: loaded.run(feeds))[0])
        for _ in range(per):
            dt, r = timed(lambda: _post(run_conn, "/run", rb))
            cur["run"].append(dt)
            cur["host"].append(float(r["host_exec_s"]))
        for _ in range(per):
            cur["run_sock"].append(timed(lambda: run_sock.post("/run", rb))[0])
        for _ in range(per):
            cur["infer"].append(timed(lambda: _post(infer_conn, "/infer", ib))[0])
        m = {k: statistics.median(v) for k, v in cur.items()}
        for k, v in cur.items():
            series[k] += v
        ratios["run_over_raw"].append(m["run"] / m["raw"])
        ratios["run_socket_over_raw"].append(m["run_sock"] / m["raw"])
        ratios["host_exec_over_raw"].append(m["host"] / m["raw"])
        ratios["infer_over_run"].append(m["infer"] / m["run"])
    run_conn.close()
    infer_conn.close()
    run_sock.close()
    out: dict[str, float] = {
        "raw_ort_ms": _median_ms(series["raw"]),
        "runner_run_ms": _median_ms(series["run"]),
        "runner_run_socket_ms": _median_ms(series["run_sock"]),
        "runner_host_exec_ms": _median_ms(series["host"]),
        "decider_infer_ms": _median_ms(series["infer"]),
        "samples_each": per * rounds,
        "rounds": rounds,
    }
    for k, v in ratios.items():
        v.sort()
        out[k] = statistics.median(v)
        out[f"{k}_min"], out[f"{k}_max"] = v[0], v[-1]
    return out


async def _throughput(
    url: str, body: dict[str, object], concurrency: int, total: int, max_s: float
) -> dict[str, float]:
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
    return {
        "requests": done,
        "errors": errors,
        "seconds": wall,
        "req_per_s": done / wall,
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99) - 1 if len(lat) > 1 else 0] * 1e3,
    }


def per_model(
    store: ModelStore,
    threads: int,
    runner: str,
    cpu: dict[str, object],
    models: list[str],
    rounds: int = 4,
    per: int = 5,
    budget_s: float = 25.0,
) -> list[dict[str, object]]:
    """Every zoo model: raw ORT vs the runner's /run (bare-socket client), per-round ratios.
    Heavy models get fewer samples: each model is bounded by ``budget_s``."""
    out = []
    client = SocketClient(runner)
    try:
        for model in models:
            loaded = get_engine("onnxruntime").load(store.path(model, Precision.fp32), threads=threads)
            feeds = {sp.name: synthetic(sp) for sp in store.info(model).inputs}
            body = json.dumps({"model": model, "synthetic": True, "target": cpu}).encode()
            for _ in range(2):  # warm-up (the runner loads the session on first use)
                loaded.run(feeds)
                client.post("/run", body)
            t_start = time.monotonic()
            raw_all: list[float] = []
            run_all: list[float] = []
            ratios: list[float] = []
            for _ in range(rounds):
                raw, run = [], []
                for _ in range(per):
                    t0 = time.perf_counter()
                    loaded.run(feeds)
                    raw.append(time.perf_counter() - t0)
                for _ in range(per):
                    t0 = time.perf_counter()
                    client.post("/run", body)
                    run.append(time.perf_counter() - t0)
                raw_all += raw
                run_all += run
                ratios.append(statistics.median(run) / statistics.median(raw))
                if time.monotonic() - t_start > budget_s:
                    break
            del loaded
            out.append(
                {
                    "model": model,
                    "raw_ort_ms": _median_ms(raw_all),
                    "runner_run_ms": _median_ms(run_all),
                    "run_over_raw": statistics.median(ratios),
                    "samples_each": len(raw_all),
                }
            )
            console_line = f"{model}: raw {out[-1]['raw_ort_ms']:.1f} ms, /run {out[-1]['runner_run_ms']:.1f} ms"
            print(console_line, file=sys.stderr)
    finally:
        client.close()
    return out


def run_mesh(transport: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    # Production refresh intervals (the test suite polls faster), so background polling is as in `make run`.
    d = Settings.model_fields
    zoo = list(ZOO_NAMES) if transport == "aiohttp" and not args.quick else ["mobilenet_v1"]
    s = mesh_settings(
        work / transport,
        http_transport=transport,
        zoo=zoo,
        epsilon=0.0,
        log_level="warning",
        max_upload_bytes=64 * 1024 * 1024,
        telemetry_refresh_s=d["telemetry_refresh_s"].default,
        runner_refresh_s=d["runner_refresh_s"].default,
    )
    shutil.rmtree(s.model_cache / "user", ignore_errors=True)  # uploads of an earlier run
    mesh = Mesh(s).start(timeout_s=600)
    try:
        dec = mesh.url("decider")
        up = httpx.post(
            f"{dec}/models",
            params={"name": "tiny-cnn", "accuracy": 70},
            content=tiny_cnn(),
            timeout=60,
            trust_env=False,
        )
        up.raise_for_status()
        time.sleep(2 * s.runner_refresh_s)
        result: dict[str, Any] = {"transport": transport}
        if transport == "aiohttp":
            store = ModelStore(s.model_cache, zoo)
            targets = httpx.get(f"{mesh.url('edge')}/targets", trust_env=False).json()
            cpu = next(
                t["target"] for t in targets if t["target"]["processor"] == "cpu" and t["target"]["precision"] == "fp32"
            )
            run_body = {"model": "mobilenet_v1", "synthetic": True, "target": cpu}
            infer_body = {"model": "mobilenet_v1", "synthetic": True, "policy": "edge-cpu-fp32"}
            result |= latencies(
                store, "mobilenet_v1", s.ort_threads, mesh.url("edge"), run_body, dec, infer_body, args.n
            )
            result["per_model"] = per_model(store, s.ort_threads, mesh.url("edge"), cpu, zoo)
        body = {"model": "tiny-cnn", "synthetic": True, "policy": "edge-cpu-fp32"}
        asyncio.run(_throughput(f"{dec}/infer", body, 8, 100, 20))  # warm-up
        result["throughput"] = asyncio.run(
            _throughput(f"{dec}/infer", body, args.concurrency, args.requests, args.max_s)
        )
        return result
    finally:
        mesh.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=120, help="sequential samples per latency figure")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--max-s", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="MobileNet v1 only (no per-model table over the zoo)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fast = run_mesh("aiohttp", Path(tmp), args)
        slow = run_mesh("httpx", Path(tmp), args)
    tp_fast, tp_slow = fast["throughput"], slow["throughput"]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {platform.processor() or ''}",
        "cpus": __import__("os").cpu_count(),
        "command": "make bench-mesh",
        "args": vars(args),
        "aiohttp": fast,
        "httpx": slow,
        "aiohttp_over_httpx_throughput": tp_fast["req_per_s"] / tp_slow["req_per_s"],
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "mesh.json").write_text(json.dumps(report, indent=2))
    md = [
        "# Mesh benchmark",
        "",
        f"`make bench-mesh` on {report['date']}, {report['cpus']} CPUs, loopback. "
        f"Latencies: medians of {fast['samples_each']} requests each, raw / `/run` / `/infer` in interleaved rounds.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| raw ONNX Runtime in-process, MobileNet v1 (median) | {fast['raw_ort_ms']:.2f} ms |",
        f"| runner `/run` (median; http.client / bare-socket client) | {fast['runner_run_ms']:.2f} ms / "
        f"{fast['runner_run_socket_ms']:.2f} ms |",
        f"| **runner `/run` / raw ORT**, http.client (target <= 1.15; median of {fast['rounds']} rounds, range) | "
        f"**{fast['run_over_raw']:.3f}** ({fast['run_over_raw_min']:.3f}-{fast['run_over_raw_max']:.3f}) |",
        f"| **runner `/run` / raw ORT**, bare-socket client (the service's own overhead) | "
        f"**{fast['run_socket_over_raw']:.3f}** ({fast['run_socket_over_raw_min']:.3f}-"
        f"{fast['run_socket_over_raw_max']:.3f}) |",
        f"| the runner's own execution time (`host_exec_s`) / raw ORT | {fast['host_exec_over_raw']:.3f} |",
        f"| decider `/infer` (median) | {fast['decider_infer_ms']:.2f} ms |",
        f"| **decider `/infer` / runner `/run`** | **{fast['infer_over_run']:.3f}** "
        f"({fast['infer_over_run_min']:.3f}-{fast['infer_over_run_max']:.3f}) |",
        f"| `/infer` req/s at {args.concurrency} conns, tiny model, aiohttp transport | {tp_fast['req_per_s']:.0f} "
        f"(p50 {tp_fast['p50_ms']:.1f} ms, p99 {tp_fast['p99_ms']:.1f} ms) |",
        f"| same, httpx's default transport | {tp_slow['req_per_s']:.0f} "
        f"(p50 {tp_slow['p50_ms']:.1f} ms, p99 {tp_slow['p99_ms']:.1f} ms) |",
        f"| **aiohttp / httpx transport throughput** | **{report['aiohttp_over_httpx_throughput']:.2f}x** |",
        "",
    ]
    if fast.get("per_model"):
        md += [
            "## Every zoo model: runner `/run` (bare-socket client) vs raw ONNX Runtime, fp32, same threads",
            "",
            "| model | raw ORT (ms) | runner `/run` (ms) | `/run` / raw (median of rounds) | samples |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in fast["per_model"]:
            md.append(
                f"| {r['model']} | {r['raw_ort_ms']:.2f} | {r['runner_run_ms']:.2f} | {r['run_over_raw']:.3f} | "
                f"{r['samples_each']} |"
            )
        md.append("")
    (OUT / "mesh.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
