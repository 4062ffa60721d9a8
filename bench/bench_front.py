"""Front-door benchmark (`make bench`): the decider's `/infer` and Open Inference Protocol infer, side by side.

One run, one report (``bench/results/<timestamp>.json`` and ``.md``), every ratio measured within it:

1. ``/infer`` throughput at concurrency 1, 16 and 64 against a bare FastAPI app returning fixed JSON
   (``bench/bare_app.py``, same uvicorn, same flags, the same one-write httptools protocol as the mesh's
   services, ``services.common.server``), in interleaved rounds (target >= 0.35x), with the mesh's
   floor beside it: the same two hops with no work at either end (``bench/floor_app.py``), which
   splits the gap into what the second hop costs and what the work costs;
2. decider-added latency at concurrency 16, p50 and p99 (targets <= 1.5 ms and <= 5 ms): per request,
   the decider's ``Server-Timing`` ``decider`` duration (from the body received to the answer ready,
   minus the runner's round trip);
3. V2 with binary tensors and with JSON tensors against native ``/infer``, one request at a time,
   same input, same target;
4. full output tensors against summaries (``output_format: "summary"``), same way;

with machine facts (CPU model, cores, load average, Python, package versions). Loopback only; every
loop is bounded in count and time. Run from the repository root: ``python -m bench.bench_front``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench.loadgen import HOST, Conn, CpuMeter, Load, load, pct, request_bytes
from services.cli.launcher import HTTP_PROTOCOL, Mesh
from services.common.redis_embed import free_port, free_ports
from services.common.settings import Settings
from tests.conftest import mesh_settings
from tests.test_models_api import tiny_cnn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
MODELS = ["mobilenet_v1", "mobilebert", "ssd_mobilenet_v1"]
PACKAGES = ["fastapi", "starlette", "uvicorn", "httptools", "pydantic", "pydantic-core", "onnxruntime", "numpy",
            "uvloop", "aiohttp", "httpx", "redis", "hiredis", "tritonclient"]  # fmt: skip
FIXED_TARGET = "edge-cpu-fp32"  # encodings are compared on one target


# ---------------------------------------------------------------------------------------- measurements


def throughput(
    decider: int, bare: int, floor: int, bodies: dict[str, bytes], meter: CpuMeter, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Long because it interleaves four measurements per round (the bare app, the floor, then each body):
    /infer and the floor against the bare app at each concurrency, the ratio taken within each round; the CPU
    each process group spent per request; the decider-added latency from the ``Server-Timing`` of every
    /infer answer."""
    rows = []
    measured = {"floor": (floor, next(iter(bodies.values())))} | {k: (decider, v) for k, v in bodies.items()}
    for conc in (1, 16, 64):
        runs: dict[str, list[Load]] = {k: [] for k in ("bare", *measured)}
        ratios: dict[str, list[float]] = {k: [] for k in measured}
        cpu: dict[str, dict[str, float]] = {k: dict.fromkeys(meter.groups, 0.0) for k in runs}
        for _ in range(args.rounds):
            for label, (port, body) in {"bare": (bare, b"{}"), **measured}.items():
                before = meter.read()
                run = asyncio.run(load(port, request_bytes("/infer", body), conc, args.max_requests, args.seconds))
                for k, v in CpuMeter.per_request(before, meter.read(), run.requests).items():
                    cpu[label][k] += v / args.rounds
                runs[label].append(run)
            b = runs["bare"][-1]
            for label in measured:
                i = runs[label][-1]
                ratios[label].append((i.requests / i.seconds) / (b.requests / b.seconds))
        merged = {k: _merge(v) for k, v in runs.items()}
        for label in measured:
            d = sorted(merged[label].decider_ms) or [float("nan")]
            rows.append(
                {
                    "concurrency": conc,
                    "body": label,
                    "infer": merged[label].summary(),
                    "bare": merged["bare"].summary(),
                    "ratio": statistics.median(ratios[label]),
                    "ratio_min": min(ratios[label]),
                    "ratio_max": max(ratios[label]),
                    "decider_added_p50_ms": pct(d, 50),
                    "decider_added_p99_ms": pct(d, 99),
                    "decider_added_samples": len(d),
                    "cpu_us_per_request": {k: round(v, 1) for k, v in cpu[label].items()},
                    "bare_cpu_us_per_request": {k: round(v, 1) for k, v in cpu["bare"].items()},
                    "cpu_ratio": sum(cpu["bare"].values()) / max(sum(cpu[label].values()), 1e-9),
                }
            )
            print(f"c={conc} {label}: /infer / bare = {rows[-1]['ratio']:.3f}", file=sys.stderr)
    return rows


def _merge(loads: list[Load]) -> Load:
    out = Load()
    for x in loads:
        out.requests += x.requests
        out.errors += x.errors
        out.seconds += x.seconds
        out.latencies += x.latencies
        out.decider_ms += x.decider_ms
        out.first_error = out.first_error or x.first_error
    return out


async def _sequential(port: int, variants: dict[str, bytes], rounds: int, per: int) -> dict[str, Any]:
    """Each variant ``per`` times in turn, for ``rounds`` rounds, on its own keep-alive connection;
    the ratio of each to the first variant is taken within each round (the shared machine drifts)."""
    conns = {k: await Conn.open(port) for k in variants}
    samples: dict[str, list[float]] = {k: [] for k in variants}
    sizes: dict[str, int] = {}
    ratios: dict[str, list[float]] = {k: [] for k in variants}
    base = next(iter(variants))
    for _ in range(rounds):
        medians = {}
        for name, req in variants.items():
            cur = []
            for _ in range(per):
                t0 = time.perf_counter()
                status, _, body = await conns[name].send(req)
                cur.append(time.perf_counter() - t0)
                if status != 200:
                    raise RuntimeError(f"{name}: HTTP {status} {body[:300]!r}")
                sizes[name] = len(body)
            medians[name] = statistics.median(cur)
            samples[name] += cur
        for name in variants:
            ratios[name].append(medians[name] / medians[base])
    for c in conns.values():
        c.close()
    return {
        name: {
            "median_ms": statistics.median(samples[name]) * 1e3,
            "over_first": statistics.median(ratios[name]),
            "response_bytes": sizes[name],
            "samples": len(samples[name]),
        }
        for name in variants
    }


def encodings(decider: int, args: argparse.Namespace) -> dict[str, Any]:
    """Native /infer vs V2 binary vs V2 JSON, same input, same target, one request at a time."""
    rng = np.random.default_rng(0)
    cases: dict[str, tuple[str, np.ndarray]] = {
        "mobilenet_v1": ("input", rng.standard_normal((1, 3, 224, 224)).astype(np.float32)),
        "mobilebert": ("input_ids", rng.integers(0, 1000, (1, 128)).astype(np.int64)),
    }
    out = {}
    for model, (name, x) in cases.items():
        dtype = {"float32": "FP32", "int64": "INT64"}[x.dtype.name]
        native = {"model": model, "policy": FIXED_TARGET, "input": _tensor(x)}
        params = {"policy": FIXED_TARGET, "binary_data_output": True}
        head = json.dumps(
            {
                "inputs": [{"name": name, "shape": list(x.shape), "datatype": dtype,
                            "parameters": {"binary_data_size": x.nbytes}}],
                "parameters": params,
            }
        ).encode()  # fmt: skip
        as_json = {
            "inputs": [{"name": name, "shape": list(x.shape), "datatype": dtype, "data": x.ravel().tolist()}],
            "parameters": {"policy": FIXED_TARGET},
        }
        variants = {
            "native": request_bytes("/infer", json.dumps(native).encode()),
            "v2_binary": request_bytes(
                f"/v2/models/{model}/infer",
                head + x.tobytes(),
                "application/octet-stream",
                Inference_Header_Content_Length=str(len(head)),
            ),
            "v2_json": request_bytes(f"/v2/models/{model}/infer", json.dumps(as_json).encode()),
        }
        out[model] = asyncio.run(_sequential(decider, variants, args.rounds * 2, args.per))
        print(f"{model}: V2 binary / native = {out[model]['v2_binary']['over_first']:.3f}", file=sys.stderr)
    return out


def outputs(decider: int, args: argparse.Namespace) -> dict[str, Any]:
    """Full output tensors vs summaries, synthetic input, same target, one request at a time."""
    out = {}
    for model in MODELS:
        base = {"model": model, "synthetic": True, "policy": FIXED_TARGET}
        variants = {
            "summary": request_bytes("/infer", json.dumps({**base, "output_format": "summary"}).encode()),
            "tensor": request_bytes("/infer", json.dumps(base).encode()),
        }
        out[model] = asyncio.run(_sequential(decider, variants, args.rounds * 2, args.per))
        print(f"{model}: tensors / summaries = {out[model]['tensor']['over_first']:.3f}", file=sys.stderr)
    return out


def _tensor(x: np.ndarray) -> dict[str, object]:
    return {"dtype": x.dtype.name, "shape": list(x.shape), "data_b64": base64.b64encode(x.tobytes()).decode()}


# ---------------------------------------------------------------------------------------- setup


def machine_facts() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    versions: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = None
    return {
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def start_app(
    app: str, port: int, log: Path, path: str = "/infer", factory: bool = False, **env: str
) -> subprocess.Popen[bytes]:
    """``app`` (``module:attribute``; with ``factory``, a function that makes it) under uvicorn with the
    mesh's flags and HTTP protocol, once ``POST path`` answers 200; ``env`` adds to its environment."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", *(["--factory"] if factory else []), app, "--host", HOST, "--port", str(port),
         "--no-access-log", "--log-level", "warning", "--http", HTTP_PROTOCOL],
        cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=os.environ | env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"http://{HOST}:{port}{path}", trust_env=False).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{app} did not start: {log.read_text()[-2000:]}")


def start_bare(port: int, log: Path) -> subprocess.Popen[bytes]:
    return start_app("bench.bare_app:app", port, log)


def start_floor(log: Path) -> tuple[int, list[subprocess.Popen[bytes]]]:
    """The floor's back, then its front (``bench/floor_app.py``): the front's port and both processes (back, front)."""
    front, back = free_ports(2)
    procs = [start_app("bench.floor_app:back", back, log, "/run", factory=True)]
    try:
        url = f"http://{HOST}:{back}"
        procs.append(start_app("bench.floor_app:front", front, log, factory=True, FLOOR_BACK_URL=url))
    except BaseException:
        procs[0].kill()
        raise
    return front, procs


def meter_for(mesh: Mesh, **groups: list[int]) -> CpuMeter:
    """This process (the client) and the mesh's, by kind; ``groups`` (process ids) add to or replace them."""
    svc = {k: v.proc.pid for k, v in mesh.services.items()}
    redis = [mesh.redis.proc.pid] if mesh.redis is not None and mesh.redis.proc is not None else []
    pids = {
        "client": [os.getpid()],
        "decider": [svc["decider"]],
        "runners": [svc[r] for r in ("edge", "peer", "cloud")],
        "telemetry": [svc["telemetry"]],
        "redis": redis,
    }
    return CpuMeter({k: [psutil.Process(p) for p in v] for k, v in (pids | groups).items()})


def start_mesh(work: Path, models: list[str] = MODELS) -> tuple[Mesh, Settings]:
    """The mesh with ``models`` from the zoo (loaded at start) and the tiny CNN uploaded, each served once."""
    d = Settings.model_fields
    s = mesh_settings(
        work,
        zoo=models,
        preload_models=models,
        log_level="warning",
        telemetry_refresh_s=d["telemetry_refresh_s"].default,  # production intervals, as under `make run`
        runner_refresh_s=d["runner_refresh_s"].default,
    )
    shutil.rmtree(s.model_cache / "user", ignore_errors=True)  # uploads of an earlier run
    mesh = Mesh(s).start(timeout_s=900)
    dec = mesh.url("decider")
    httpx.post(
        f"{dec}/models", params={"name": "tiny-cnn", "accuracy": 70}, content=tiny_cnn(), timeout=60, trust_env=False
    ).raise_for_status()
    body = {"model": "tiny-cnn", "synthetic": True}
    deadline = time.monotonic() + 60
    while httpx.post(f"{dec}/infer", json=body, timeout=60, trust_env=False).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("the decider never offered tiny-cnn")
        time.sleep(0.5)
    for model in models:  # first runs load sessions on every target the fixed policy uses
        for fmt in ("tensor", "summary"):
            payload = {"model": model, "synthetic": True, "policy": FIXED_TARGET, "output_format": fmt}
            httpx.post(f"{dec}/infer", json=payload, timeout=300, trust_env=False).raise_for_status()
    return mesh, s


# ---------------------------------------------------------------------------------------- report


def _target_line(ok: bool) -> str:
    return "met" if ok else "**not met**"


def markdown(r: dict[str, Any]) -> str:
    """Long because it is the report's one template: every table of the markdown file in one place."""
    m = r["machine"]
    c16 = next(row for row in r["throughput"] if row["concurrency"] == 16 and row["body"] == "autoscale")
    lines = [
        "# Front-door benchmark",
        "",
        f"`{r['command']}` on {r['date']}: {m['cpu_model']}, {m['cpus_usable']} of {m['cpus']} CPUs usable, "
        f"load average {', '.join(f'{x:.2f}' for x in m['load_average'])} at the start and "
        f"{', '.join(f'{x:.2f}' for x in r['load_average_end'])} at the end, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
        + ". Everything (client, decider, three runners, telemetry, Redis, the bare app, the floor) shares these "
        "CPUs on loopback; the client is asyncio streams in one process. All figures are *measured*; the latency and "
        "energy *inside* the answers are the mesh's modelled ones and are not used here.",
        "",
        f"## `/infer` throughput against a bare FastAPI app ({r['args']['rounds']} interleaved rounds of "
        f"{r['args']['seconds']:g} s each)",
        "",
        "`/infer` bodies: "
        + "; ".join(f"{k}: `{v}`" for k, v in r["infer_bodies"].items())
        + " (the default policy learns: a Q update, Redis write and invalidation per request; the fixed one does "
        "not). Output tensors. Bare app: `bench/bare_app.py`, `POST /infer` returning fixed JSON, same uvicorn, "
        "event loop (uvicorn's `--loop auto`: uvloop where installed) "
        f"and flags as the mesh's services (`--http {HTTP_PROTOCOL}`: a response's head and body in one socket "
        "write; it serves the bare app 0-7 % faster than uvicorn's stock protocol). Floor: `bench/floor_app.py`, "
        "`/infer`'s two hops with no work at either end (a front app that posts the body to a back app answering "
        "fixed JSON, both built and served as the decider and the runners are, the hop made with the decider's "
        "own dispatch client), in the same rounds.",
        "",
        "| concurrency | policy | `/infer` req/s | p50 / p99 ms | bare req/s | p50 / p99 ms | "
        "**`/infer` / bare** (range) | target |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in r["throughput"]:
        i, b = row["infer"], row["bare"]
        floor = row["body"] == "floor"
        lines.append(
            f"| {row['concurrency']} | {'floor (two hops, no work)' if floor else row['body']} | "
            f"{i['req_per_s']:.0f} | {i['p50_ms']:.2f} / {i['p99_ms']:.2f} | "
            f"{b['req_per_s']:.0f} | {b['p50_ms']:.2f} / {b['p99_ms']:.2f} | **{row['ratio']:.3f}x** "
            f"({row['ratio_min']:.3f}-{row['ratio_max']:.3f}) | "
            + ("reference |" if floor else f">= 0.35: {_target_line(row['ratio'] >= 0.35)} |")
        )
    lines += [
        "",
        "Where the gap lies: the floor against the bare app is what `/infer`'s second hop costs; `/infer` against "
        "the floor (the ratio of the two ratios above, each taken within its rounds) is what its work costs: "
        "validation, the decision, the inference, the answer's assessment, metrics and (default policy) learning.",
        "",
        "| concurrency | floor / bare | " + " | ".join(f"{k} / floor" for k in r["infer_bodies"]) + " |",
        "|---:|---:|" + "---:|" * len(r["infer_bodies"]),
    ]
    for conc in sorted({row["concurrency"] for row in r["throughput"]}):
        by = {row["body"]: row["ratio"] for row in r["throughput"] if row["concurrency"] == conc}
        lines.append(
            f"| {conc} | {by['floor']:.3f}x | "
            + " | ".join(f"{by[k] / by['floor']:.3f}x" for k in r["infer_bodies"])
            + " |"
        )
    lines += [
        "",
        "The same runs in CPU time (user + system, every process of the mesh, the bare app and the client; "
        "µs per request): unlike the rates above, it does not count the time other tenants held the CPUs, "
        "but their load still inflates it (shared caches and cores), so compare within a run.",
        "",
        "| concurrency | policy | client | decider | runners | telemetry | Redis | floor front + back | **total** | "
        "bare app + client | **CPU ratio bare / `/infer`** |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["throughput"]:
        c, b = row["cpu_us_per_request"], row["bare_cpu_us_per_request"]
        lines.append(
            f"| {row['concurrency']} | {row['body']} | {c['client']:.0f} | {c['decider']:.0f} | {c['runners']:.0f} | "
            f"{c['telemetry']:.0f} | {c['redis']:.0f} | {c['floor_front']:.0f} + {c['floor_back']:.0f} | "
            f"**{sum(c.values()):.0f}** | "
            f"{b['bare'] + b['client']:.0f} | **{row['cpu_ratio']:.3f}x** |"
        )
    lines += [
        "",
        "## Decider-added latency at concurrency 16 (default policy)",
        "",
        "Per request, the decider's `Server-Timing: decider;dur=` (from its handler receiving the body to the "
        "answer ready, minus the runner's round trip; uvicorn's HTTP parsing is outside it and inside the "
        f"throughput figure), over {c16['decider_added_samples']} requests:",
        "",
        "| figure | value | target |",
        "|---|---:|---|",
        f"| p50 | **{c16['decider_added_p50_ms']:.3f} ms** | <= 1.5 ms: "
        f"{_target_line(c16['decider_added_p50_ms'] <= 1.5)} |",
        f"| p99 | **{c16['decider_added_p99_ms']:.3f} ms** | <= 5 ms: "
        f"{_target_line(c16['decider_added_p99_ms'] <= 5)} |",
        "",
        "## Open Inference Protocol against native `/infer` (one request at a time, same input and target)",
        "",
        "| model | native ms | V2 binary ms | **V2 binary / native** | V2 JSON ms | **V2 JSON / native** | "
        "response bytes native / binary / JSON |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for model, v in r["encodings"].items():
        n, b, j = v["native"], v["v2_binary"], v["v2_json"]
        lines.append(
            f"| {model} | {n['median_ms']:.2f} | {b['median_ms']:.2f} | **{b['over_first']:.3f}x** | "
            f"{j['median_ms']:.2f} | **{j['over_first']:.3f}x** | "
            f"{n['response_bytes']:,} / {b['response_bytes']:,} / {j['response_bytes']:,} |"
        )
    lines += [
        "",
        "## Full output tensors against summaries (`/infer`, synthetic input, one request at a time)",
        "",
        "| model | summaries ms | tensors ms | **tensors / summaries** | response bytes summaries / tensors |",
        "|---|---:|---:|---:|---|",
    ]
    for model, v in r["outputs"].items():
        s, t = v["summary"], v["tensor"]
        lines.append(
            f"| {model} | {s['median_ms']:.2f} | {t['median_ms']:.2f} | **{t['over_first']:.3f}x** | "
            f"{s['response_bytes']:,} / {t['response_bytes']:,} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per figure")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of one throughput run")
    ap.add_argument("--max-requests", type=int, default=20_000, help="cap of one throughput run")
    ap.add_argument("--per", type=int, default=8, help="requests per variant per round (sequential figures)")
    args = ap.parse_args()
    facts = machine_facts()
    bodies = {  # the default policy (AutoScale, learning on) and a fixed one (no Q-table write)
        "autoscale": {"model": "tiny-cnn", "synthetic": True},
        FIXED_TARGET: {"model": "tiny-cnn", "synthetic": True, "policy": FIXED_TARGET},
    }
    with tempfile.TemporaryDirectory() as tmp:
        mesh, _ = start_mesh(Path(tmp) / "mesh")
        bare_port = free_port()
        apps: list[subprocess.Popen[bytes]] = []
        try:
            apps.append(start_bare(bare_port, Path(tmp) / "bare.log"))
            floor_port, floor = start_floor(Path(tmp) / "floor.log")
            apps += floor
            decider = mesh.settings.port("decider")
            meter = meter_for(mesh, bare=[apps[0].pid], floor_back=[floor[0].pid], floor_front=[floor[1].pid])
            encoded = {k: json.dumps(v).encode() for k, v in bodies.items()}
            warm = ((bare_port, b"{}"), (floor_port, b"{}"), *((decider, b) for b in encoded.values()))
            for port, body in warm:
                # warm-up: connections, caches, every action AutoScale tries once
                asyncio.run(load(port, request_bytes("/infer", body), 16, 5000, 3.0))
            report = {
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": "make bench",
                "args": vars(args),
                "machine": facts,
                "infer_bodies": {k: json.dumps(v) for k, v in bodies.items()},
                "throughput": throughput(decider, bare_port, floor_port, encoded, meter, args),
                "encodings": encodings(decider, args),
                "outputs": outputs(decider, args),
                "load_average_end": os.getloadavg(),
            }
        finally:
            for app in apps:
                app.terminate()
                app.wait(10)
            mesh.stop()
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (OUT / f"{stamp}.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (OUT / f"{stamp}.md").write_text(md)
    print(md)
    print(f"wrote {OUT / stamp}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
