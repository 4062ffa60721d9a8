"""The hot handlers in process (`make bench-handlers`): CPU per request of each service's fast route.

The decider's ``/infer`` (default and fixed policy) and the edge runner's ``/run`` are called through
their apps' fast chains (``services.common.asgi.FastChain``: what the mesh's HTTP protocol hands a fast
route's request to) by ``--concurrency`` tasks in this one process, so this process's CPU time per
request is the handler's work with no HTTP parsing or socket at its front. The decider's runner call
is real (the mesh's edge runner, over loopback), so its figure includes its dispatch client; its
background tasks (telemetry and runner probes, Q-table sync) run here too. ONNX Runtime's own run of
the same model is timed beside them. ``--profile`` adds each path's top functions by ``cProfile``'s
own time (cProfile inflates small calls: read the shares, not the µs). Writes
``bench/handlers.json`` and ``.md``; every loop is bounded in count. Run from the repository root:
``python -m bench.bench_handlers``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.bench_front import FIXED_TARGET, machine_facts, start_mesh
from bench.loadgen import asgi_post
from services.common.asgi import FastChain
from services.common.settings import Settings
from services.core.schemas import RunRequest, Target
from services.decider.app import create_app as create_decider
from services.edge_runner.app import create_app as create_edge_runner
from services.runner.app import RunnerState, session_key

OUT = Path(__file__).resolve().parent
MODEL = "tiny-cnn"


async def drive(app: Any, path: str, body: bytes, concurrency: int, requests: int) -> dict[int, int]:
    """``requests`` calls of the app's fast chain by ``concurrency`` tasks; the statuses answered."""
    chain = FastChain.of(app)
    assert chain is not None and chain.matches("POST", path), f"{path} is not a fast route"
    statuses: dict[int, int] = {}

    async def worker(n: int) -> None:
        for _ in range(n):
            status = await asgi_post(chain.app, path, body, app=app)
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    return statuses


def top(profile: cProfile.Profile, n: int) -> list[dict[str, Any]]:
    """The ``n`` functions with the most own time, with their share of the profile's total."""
    stats = pstats.Stats(profile, stream=io.StringIO())
    total = sum(v[2] for v in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:n]  # type: ignore[attr-defined]
    return [
        {"function": f"{Path(file).name}:{line}({name})", "calls": v[1], "own_share": v[2] / total}
        for (file, line, name), v in rows
    ]


async def measure(
    paths: dict[str, Callable[[int], Awaitable[dict[int, int]]]], args: argparse.Namespace
) -> dict[str, Any]:
    """Each path ``args.rounds`` times, interleaved; CPU µs per request of each round, and a profile."""
    cpu: dict[str, list[float]] = {k: [] for k in paths}
    profiles: dict[str, list[dict[str, Any]]] = {}
    for run in paths.values():  # warm-up: sessions, caches, every action AutoScale tries once
        await run(2000)
    for _ in range(args.rounds):
        for name, run in paths.items():
            t0 = time.process_time()
            statuses = await run(args.requests)
            cpu[name].append((time.process_time() - t0) / args.requests * 1e6)
            if set(statuses) != {200}:
                raise RuntimeError(f"{name}: answers {statuses}")
            await asyncio.sleep(0.2)  # each answer's after-work (metrics, the Q update) is done
    if args.profile:
        for name, run in paths.items():
            profile = cProfile.Profile()
            profile.enable()
            await run(args.requests)
            profile.disable()
            profiles[name] = top(profile, args.profile)
    return {"cpu_us": cpu, "profiles": profiles}


def ort_run_us(state: RunnerState, target: Target, runs: int) -> float:
    """CPU µs of ONNX Runtime's own run of the model, as the runner's session holds it."""
    info = state.infos()[MODEL]
    session = state.sessions[session_key(info, target)]
    feeds = state.synthetic_feeds(info)
    for _ in range(200):
        session.run(feeds)
    t0 = time.process_time()
    for _ in range(runs):
        session.run(feeds)
    return (time.process_time() - t0) / runs * 1e6


async def run(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    decider_url = f"http://127.0.0.1:{settings.port('decider')}"
    fixed = {"model": MODEL, "synthetic": True, "policy": FIXED_TARGET}
    async with httpx.AsyncClient(trust_env=False, timeout=60) as client:  # the fixed policy's target
        answer = (await client.post(f"{decider_url}/infer", json=fixed)).raise_for_status().json()
    target = Target.model_validate(answer["target"])
    run_body = RunRequest(model=MODEL, target=target, synthetic=True, deadline_ms=60_000).model_dump_json().encode()
    # In process: the decider on the mesh's Redis and runners; the edge runner in static mode (not
    # registered, so that the mesh's decider never dispatches to it).
    decider = create_decider(settings)
    runner = create_edge_runner(with_fields(settings, redis_url="", runner_registry=False))
    bodies = {"autoscale": {"model": MODEL, "synthetic": True}, FIXED_TARGET: fixed}
    async with decider.router.lifespan_context(decider), runner.router.lifespan_context(runner):
        paths: dict[str, Callable[[int], Awaitable[dict[int, int]]]] = {
            "runner /run": partial(drive, runner, "/run", run_body, args.concurrency),
            **{
                f"decider /infer, {k}": partial(drive, decider, "/infer", json.dumps(v).encode(), args.concurrency)
                for k, v in bodies.items()
            },
        }
        out = await measure(paths, args)
        out["ort_run_us"] = ort_run_us(runner.state.runner, target, args.requests)
    out["target"] = target.id
    return out


def with_fields(settings: Settings, **fields: Any) -> Settings:
    """``settings`` with some fields changed, validated again (a secret stays a ``SecretStr``)."""
    return Settings.model_validate(settings.model_dump() | fields)


def event_loop_run(main: Awaitable[Any]) -> Any:
    """On uvloop where installed, as the services run (uvicorn's ``--loop auto``)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)  # type: ignore[arg-type]
    return uvloop.run(main)  # type: ignore[arg-type]


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Hot handlers in process",
        "",
        f"`{r['command']}` on {r['date']}: {m['cpu_model']}, {m['cpus_usable']} of {m['cpus']} CPUs usable, "
        f"load average {', '.join(f'{x:.2f}' for x in m['load_average'])}, Python {m['python']}. Each service's fast "
        f"route called through its app's fast chain by {r['args']['concurrency']} tasks in one process (no HTTP "
        f"parsing or socket at its front), {r['args']['requests']} requests a round, {r['args']['rounds']} rounds; "
        f"model `{MODEL}` (synthetic input, output tensors), fixed target `{r['target']}`. CPU time of the process "
        "per request (user + system, *measured*; other tenants' load inflates it, so compare within a run).",
        "",
        "| path | CPU µs a request (median) | rounds |",
        "|---|---:|---|",
    ]
    for name, values in r["cpu_us"].items():
        lines.append(f"| {name} | **{statistics.median(values):.0f}** | {', '.join(f'{v:.0f}' for v in values)} |")
    lines += [
        f"| ONNX Runtime's own run of the model (`session.run`, same session) | **{r['ort_run_us']:.0f}** | |",
        "",
        "The decider's figures include its call to the mesh's edge runner (its dispatch client's share; the runner's "
        "work is in the other process) and its background tasks.",
        "",
    ]
    for name, rows in r["profiles"].items():
        lines += [f"## `cProfile`, {name}: top functions by own time", "", "| function | calls | own share |",
                  "|---|---:|---:|"]  # fmt: skip
        lines += [f"| `{x['function']}` | {x['calls']} | {x['own_share'] * 100:.1f} % |" for x in rows]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--requests", type=int, default=6000, help="requests per path per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="add each path's top N functions (cProfile)")
    args = ap.parse_args()
    facts = machine_facts()
    with tempfile.TemporaryDirectory() as tmp:
        mesh, settings = start_mesh(Path(tmp) / "mesh", models=["mobilenet_v1"])
        try:
            result = event_loop_run(run(with_fields(settings, redis_url=mesh.redis_url), args))
        finally:
            mesh.stop()
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "make bench-handlers",
        "args": vars(args),
        "machine": facts,
        **result,
    }
    (OUT / "handlers.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (OUT / "handlers.md").write_text(md)
    print(md)
    print(f"wrote {OUT / 'handlers.json'} and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
