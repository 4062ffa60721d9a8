"""The decider's runner call, client by client: CPU time per ``POST /run`` in the calling process.

Starts the bench mesh (``bench_front.start_mesh``) and posts the dispatch the decider sends for
``tiny-cnn`` to the edge runner through httpx over aiohttp (``make_client``), aiohttp alone and
``PostClient``, one at a time and 8 at once. Writes ``bench/client.md``. Run from the repository
root: ``python -m bench.bench_client``.
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from bench.bench_front import machine_facts, start_mesh
from services.common.http import PostClient, make_client
from services.core.schemas import RunRequest, Target

ROOT = Path(__file__).resolve().parents[1]
N = 3000


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _measure(call: Callable[[], Awaitable[None]], conc: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call, after a warm-up."""
    for _ in range(200):
        await call()

    async def worker() -> None:
        for _ in range(N // conc):
            await call()

    c0, t0 = _cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return (_cpu_s() - c0) / N * 1e6, (time.perf_counter() - t0) / N * 1e6


async def _clients(url: str, body: bytes) -> dict[str, Callable[[], Awaitable[None]]]:
    hx = make_client(url)
    session = aiohttp.ClientSession(url)
    post = PostClient(url)
    headers = {"content-type": "application/json"}

    async def via_httpx() -> None:
        assert (await hx.post("/run", content=body, headers=headers)).status_code == 200

    async def via_aiohttp() -> None:
        async with session.post("/run", data=body, headers=headers) as r:
            await r.read()
            assert r.status == 200

    async def via_post_client() -> None:
        assert (await post.post("/run", body)).status == 200

    return {"httpx over aiohttp": via_httpx, "aiohttp": via_aiohttp, "PostClient": via_post_client}


async def _run(url: str) -> list[str]:
    target = Target.parse("edge/cpu/fp32@0")
    body = RunRequest(model="tiny-cnn", target=target, synthetic=True, deadline_ms=1000).model_dump_json().encode()
    clients = await _clients(url, body)
    rows = []
    for name, call in clients.items():
        (c1, w1), (c8, w8) = await _measure(call, 1), await _measure(call, 8)
        rows.append(f"| {name} | {c1:.0f} / {w1:.0f} | {c8:.0f} / {w8:.0f} |")
    return rows


def main() -> None:
    facts = machine_facts()
    with tempfile.TemporaryDirectory() as tmp:
        mesh, _ = start_mesh(Path(tmp) / "mesh")
        try:
            rows = asyncio.run(_run(mesh.url("edge")))
        finally:
            mesh.stop()
    load = ", ".join(f"{x:.2f}" for x in facts["load_average"])
    text = "\n".join(
        [
            "# The decider's runner call, client by client",
            "",
            f"`python -m bench.bench_client` on {time.strftime('%Y-%m-%d %H:%M')}: {facts['cpu_model']}, "
            f"{facts['cpus_usable']} CPUs, load average {load} at the start. {N} `POST /run` of `tiny-cnn` "
            "(synthetic input, output tensors) to the edge runner per row; CPU time (user + system) of the "
            "calling process and wall time, µs per call.",
            "",
            "| client | one at a time: CPU / wall µs | 8 at once: CPU / wall µs |",
            "|---|---:|---:|",
            *rows,
            "",
        ]
    )
    (ROOT / "bench" / "client.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
