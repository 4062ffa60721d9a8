"""Limits benchmark (`make bench-limits`): does ``/infer`` keep its latency while the mesh is fed
oversized and bomb inputs? Ratios measured in one run.

A token-protected mesh (the tests' settings) serves a sequential stream of synthetic MobileNet v1
``/infer`` requests. Each round has a quiet window and one window per attack, in which a second
client repeats that attack as fast as it is answered: 50 MB of JSON declared to ``/infer``, a
300 MB chunked upload, an ``.npz`` whose ``x`` expands to 256 MiB, an ``.npz`` header claiming
8 GiB. A control window has that client send ordinary ``/infer`` requests instead: what any second
client costs on two shared cores. The figure per attack is the median over rounds of (p50 and p95
``/infer`` latency under attack / in the quiet window of the same round), plus what the refused
uploads cost the decider: the bytes it let in before answering 413 and its resident memory.

Writes bench/limits.json and bench/limits.md. Loopback only; every loop is bounded in count and
time. Run from the repository root: ``python -m bench.bench_limits``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from services.cli.launcher import Mesh
from tests.conftest import bearer, secure_mesh_settings
from tests.test_limits import MiB, _npz_member, raw_request, zeros
from tests.test_models_api import tiny_cnn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench"
ZERO = b"\0" * MiB


def _attacks(decider: str, sent: dict[str, list[int]]) -> dict[str, Callable[[httpx.Client], int]]:
    """Each attack once; returns the status the mesh answered (``sent`` collects bytes let in before a 413)."""
    bomb = _npz_member("x", (64 * MiB,), "float32", (ZERO for _ in range(256)))
    lie = _npz_member("x", (2**31,), "float32", [ZERO[:64]])
    json_headers = bearer("client") | {"content-type": "application/json"}

    def declared_json(_: httpx.Client) -> int:
        return raw_request(decider, "POST", "/infer", json_headers, zeros(50 * MiB), length=50 * MiB).status

    def chunked_upload(_: httpx.Client) -> int:
        answer = raw_request(decider, "POST", "/models?name=big&accuracy=50", bearer("admin"), zeros(300 * MiB))
        sent["chunked_upload"].append(answer.sent)
        return answer.status

    def npz(body: bytes) -> Callable[[httpx.Client], int]:
        def post(c: httpx.Client) -> int:
            return c.post(f"{decider}/models/npz-target/accuracy", content=body, headers=bearer("admin")).status_code

        return post

    def control(c: httpx.Client) -> int:  # an ordinary second client, for scale: what sharing the CPU costs
        body = {"model": "mobilenet_v1", "synthetic": True}
        return c.post(f"{decider}/infer", json=body, headers=bearer("client")).status_code

    return {
        "control: a second /infer client": control,
        "50 MB JSON declared to /infer": declared_json,
        "300 MB chunked upload": chunked_upload,
        ".npz bomb (256 MiB expanded)": npz(bomb),
        ".npz header claiming 8 GiB": npz(lie),
    }


def _window(decider: str, seconds: float, attack: Callable[[httpx.Client], int] | None) -> dict[str, Any]:
    """Sequential /infer latencies for ``seconds`` (at most 2,000), with ``attack`` repeated meanwhile."""
    stop = threading.Event()
    answered: list[int] = []

    def attacker() -> None:
        with httpx.Client(timeout=120, trust_env=False) as c:
            while not stop.is_set() and len(answered) < 20_000:
                answered.append(attack(c) if attack else 0)

    thread = threading.Thread(target=attacker, daemon=True) if attack else None
    latencies: list[float] = []
    failures = 0
    with httpx.Client(timeout=60, trust_env=False, headers=bearer("client")) as c:
        if thread:
            thread.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(latencies) < 2000:
            t0 = time.perf_counter()
            ok = c.post(f"{decider}/infer", json={"model": "mobilenet_v1", "synthetic": True}).status_code == 200
            latencies.append(time.perf_counter() - t0)
            failures += not ok
    stop.set()
    if thread:
        thread.join(timeout=180)
    q = statistics.quantiles(latencies, n=20)
    return {
        "p50_ms": statistics.median(latencies) * 1e3,
        "p95_ms": q[18] * 1e3,
        "requests": len(latencies),
        "failed": failures,
        "attack_answers": sorted(set(answered)),
        "attacks": len(answered),
    }


def run(rounds: int, window_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as tmp:
        mesh = Mesh(secure_mesh_settings(Path(tmp))).start(timeout_s=600)
        try:
            decider = mesh.url("decider")
            with httpx.Client(timeout=120, trust_env=False) as c:
                up = c.post(
                    f"{decider}/models",
                    params={"name": "npz-target", "accuracy": 50},
                    content=tiny_cnn(),
                    headers=bearer("admin"),
                )
                up.raise_for_status()
                for _ in range(20):  # warm-up
                    c.post(
                        f"{decider}/infer", json={"model": "mobilenet_v1", "synthetic": True}, headers=bearer("client")
                    )
            proc = psutil.Process(mesh.services["decider"].proc.pid)
            rss_before = proc.memory_info().rss
            sent: dict[str, list[int]] = {"chunked_upload": []}
            attacks = _attacks(decider, sent)
            per_round: list[dict[str, Any]] = []
            for _ in range(rounds):
                quiet = _window(decider, window_s, None)
                per_round.append(
                    {"quiet": quiet} | {name: _window(decider, window_s, a) for name, a in attacks.items()}
                )
            rss_after = proc.memory_info().rss
        finally:
            mesh.stop()
    summary = {
        name: {
            "p50_ratio": statistics.median(r[name]["p50_ms"] / r["quiet"]["p50_ms"] for r in per_round),
            "p95_ratio": statistics.median(r[name]["p95_ms"] / r["quiet"]["p95_ms"] for r in per_round),
            "attack_answers": sorted({s for r in per_round for s in r[name]["attack_answers"]}),
            "attacks": sum(r[name]["attacks"] for r in per_round),
            "infer_failed": sum(r[name]["failed"] for r in per_round),
        }
        for name in attacks
    }
    return {
        "machine": {"python": platform.python_version(), "cpus": psutil.cpu_count()},
        "rounds": rounds,
        "window_s": window_s,
        "quiet_p50_ms": statistics.median(r["quiet"]["p50_ms"] for r in per_round),
        "summary": summary,
        "chunked_upload_bytes_let_in_max": max(sent["chunked_upload"], default=0),
        "decider_rss_mb": {"before": rss_before / MiB, "after": rss_after / MiB},
        "per_round": per_round,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# /infer under oversized and bomb inputs",
        "",
        f"`python -m bench.bench_limits --rounds {report['rounds']} --window {report['window_s']:g}`: a sequential",
        "synthetic MobileNet v1 `/infer` stream, quiet vs while a second client repeats one attack; ratios within",
        f"each round, median over rounds. Quiet p50: {report['quiet_p50_ms']:.1f} ms.",
        "",
        "| attack (repeated during the window) | answered | attacks "
        "| /infer p50 / quiet | /infer p95 / quiet | /infer failed |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in report["summary"].items():
        answers = ", ".join(str(a) for a in s["attack_answers"])
        lines.append(
            f"| {name} | {answers} | {s['attacks']} | {s['p50_ratio']:.2f}x | {s['p95_ratio']:.2f}x "
            f"| {s['infer_failed']} |"
        )
    rss = report["decider_rss_mb"]
    lines += [
        "",
        f"The 300 MB chunked upload was let in for at most {report['chunked_upload_bytes_let_in_max'] / MiB:.1f} MiB "
        f"(the limit is 4 MiB; the rest is socket buffers) before the 413; the decider's resident memory was "
        f"{rss['before']:.0f} MB before the attacks and {rss['after']:.0f} MB after.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=4.0, help="seconds per window")
    args = ap.parse_args()
    report = run(args.rounds, args.window)
    (OUT / "limits.json").write_text(json.dumps(report, indent=2))
    (OUT / "limits.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
