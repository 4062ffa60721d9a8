"""Tracing benchmark (`make bench-tracing`): what request ids, trace context and spans cost a request.

Three copies of one minimal FastAPI app (a POST route that validates a small body and answers a
response model, the shape of every mesh route) are called through raw ASGI, in one run:

* ``bare``: no tracing code at all;
* ``ids``: ``install_tracing`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` unset, the mesh's default
  (request-id middleware, trace context in a context variable, response headers);
* ``otel``: with an endpoint: OpenTelemetry's FastAPI instrumentation, a server span and one
  child span per request, exported in batches to a loopback OTLP receiver (the tests' one).

``bare`` and ``ids`` run in interleaved rounds; ``otel`` runs after them, alone. Each round is
timed in this process's CPU time, not wall time: on a shared machine other jobs' load does not
count, and the OpenTelemetry exporter thread's work does.

A minimal route is the worst case for a ratio: a real ``/infer`` costs ~1-10 ms more, so the
same microseconds weigh far less. Also times ``span()`` and ``outgoing_headers()`` when tracing
is off. Writes bench/tracing.json and bench/tracing.md. Bounded: fixed rounds and calls.
Run from the repository root: ``python -m bench.bench_tracing``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
import timeit
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from bench.loadgen import asgi_post
from services.common import tracing
from services.common.settings import Settings
from tests.otlp_receiver import OtlpReceiver

OUT = Path(__file__).resolve().parent
BODY = json.dumps({"model": "digits", "synthetic": True, "top_k": 3}).encode()


class Req(BaseModel):
    model: str
    synthetic: bool = False
    top_k: int = 5


class Resp(BaseModel):
    model: str
    top_k: int


def _app(kind: str, endpoint: str) -> FastAPI:
    app = FastAPI()

    @app.post("/infer", response_model=Resp)
    async def infer(req: Req) -> Resp:
        with tracing.span("decide"):
            return Resp(model=req.model, top_k=req.top_k)

    if kind != "bare":
        tracing.install_tracing(app, "bench", Settings(otel_endpoint=endpoint if kind == "otel" else ""))
    return app


async def _call(app: Any) -> None:
    status = await asgi_post(app, "/infer", BODY)
    if status != 200:
        raise RuntimeError(f"bench app answered {status}")


async def _round(app: Any, calls: int) -> float:
    """CPU seconds per call: this process's CPU time (every thread: the exporter's too), not wall
    time, so that other developers' jobs on the shared cores do not count."""
    t0 = time.process_time()
    for _ in range(calls):
        await _call(app)
    return (time.process_time() - t0) / calls


async def _interleaved(apps: dict[str, Any], rounds: int, calls: int) -> dict[str, list[float]]:
    for app in apps.values():
        await _round(app, 50)  # warm-up (lazy middleware stack, imports)
    samples: dict[str, list[float]] = {k: [] for k in apps}
    for _ in range(rounds):
        for kind, app in apps.items():  # interleaved: the shared machine's noise hits each alike
            samples[kind].append(await _round(app, calls))
    return samples


async def _noop(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def measure(rounds: int, calls: int) -> dict[str, Any]:
    """Phase 1: bare vs ids, interleaved (no exporter thread running); phase 2: otel alone."""
    samples = await _interleaved({"bare": _app("bare", ""), "ids": _app("ids", "")}, rounds, calls)
    middleware = await _interleaved(
        {"noop": _noop, "middleware": tracing.RequestContextMiddleware(_noop)}, rounds, calls
    )
    receiver = OtlpReceiver().start()
    try:
        # Alone: CPU time would charge the exporter thread's work to whatever app ran meanwhile.
        otel = await _interleaved({"otel": _app("otel", receiver.endpoint)}, rounds, calls)
        tracing._tracing.provider.force_flush()
        exported = len(receiver.spans)
    finally:
        receiver.stop()
    tracing._tracing.tracer = None  # off again for the no-op figures
    med = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    med["otel"] = statistics.median(otel["otel"]) * 1e6
    # timeit's rule: the least-disturbed round is what the code costs on a shared machine.
    best = {k: min(v) * 1e6 for k, v in samples.items()}
    best["otel"] = min(otel["otel"]) * 1e6
    mw = {k: min(v) * 1e6 for k, v in middleware.items()}
    n = 200_000
    span_ns = min(timeit.repeat(lambda: tracing.span("x").__enter__(), number=n, repeat=5)) / n * 1e9
    with tracing.request_context(tracing.RequestContext("r", "0" * 31 + "1", "0" * 15 + "1", None)):
        headers_ns = min(timeit.repeat(tracing.outgoing_headers, number=n, repeat=5)) / n * 1e9
    return {
        "rounds": rounds,
        "calls_per_round": calls,
        "median_us": med,
        "best_round_us": best,
        "ids_vs_bare": med["ids"] / med["bare"],
        "otel_vs_bare": med["otel"] / med["bare"],
        "ids_vs_bare_best": best["ids"] / best["bare"],
        "otel_vs_bare_best": best["otel"] / best["bare"],
        "ids_added_us": med["ids"] - med["bare"],
        "otel_added_us": med["otel"] - med["bare"],
        "middleware_alone_us": mw["middleware"] - mw["noop"],
        "span_off_ns": span_ns,
        "outgoing_headers_off_ns": headers_ns,
        "spans_exported": exported,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def markdown(r: dict[str, Any]) -> str:
    m, b = r["median_us"], r["best_round_us"]
    return "\n".join(
        [
            "# Tracing overhead (`python -m bench.bench_tracing`)",
            "",
            f"Minimal FastAPI route called through raw ASGI, {r['rounds']} rounds of "
            f"{r['calls_per_round']} calls per variant, process CPU time per call (measured, one run, shared 2-core "
            "machine): median round and best round (the least-disturbed one), against the bare app.",
            "",
            "| variant | median per call | bare | ratio | best round | bare | ratio |",
            "|---|---|---|---|---|---|---|",
            f"| request id + trace context, OTLP endpoint unset (default) | {m['ids']:.1f} µs | {m['bare']:.1f} µs | "
            f"{r['ids_vs_bare']:.2f}x | {b['ids']:.1f} µs | {b['bare']:.1f} µs | {r['ids_vs_bare_best']:.2f}x |",
            f"| OpenTelemetry on: server span + 1 child span, batch export over OTLP/HTTP (its exporter thread's CPU "
            f"included; run after phase 1) | {m['otel']:.1f} µs | {m['bare']:.1f} µs | {r['otel_vs_bare']:.2f}x | "
            f"{b['otel']:.1f} µs | {b['bare']:.1f} µs | {r['otel_vs_bare_best']:.2f}x |",
            "",
            f"The request-context middleware alone, around a no-op ASGI app (best round): "
            f"{r['middleware_alone_us']:.1f} µs per request. With tracing off, `span()` costs "
            f"{r['span_off_ns']:.0f} ns and `outgoing_headers()` {r['outgoing_headers_off_ns']:.0f} ns. "
            "Spans received by the loopback "
            f"collector: {r['spans_exported']}.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    result = asyncio.run(measure(args.rounds, args.calls))
    (OUT / "tracing.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / "tracing.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
