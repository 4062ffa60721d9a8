"""What partitioned execution costs: decisions with split actions, and a plan's extra hop.

    .venv/bin/python -m bench.bench_partition [--rounds 30] [--no-mesh]

* **Decision cost** (against the paper's 7.3 us): AutoScale deciding from a trained, cached Q row
  over the Mi8Pro's 66 actions, and over the same plus MobileNet v3's split actions
  (``services.core.policies.splits``, one per remote location), greedy and with the decider's
  default exploration; the decider's per-request lookup of the extended candidates; NeuroSurgeon's
  per-request split and MOSAIC's (memoised) decision. Round-robin batches, in-process.
* **A plan's hop** (``--no-mesh`` skips it): through a test mesh on loopback, ``/infer`` on MobileNet v1
  run whole on the phone's CPU vs pinned as a two-part plan (phone CPU up to a cut, cloud GPU after
  it), interleaved; the decider's wall time (``latency_ms``) and the bytes that crossed.

Writes bench/partition.json and bench/partition.md. Every figure is *measured* on this machine;
ratios are within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_decision import ACTIONS, COST_MJ, PAPER_DECISION_US, interleaved_us, per_call_us
from services.common.accuracy import expected_accuracy
from services.common.config_files import load_profile
from services.common.settings import Settings
from services.common.zoo import zoo_cut_points, zoo_features
from services.core.costmodel import Mesh
from services.core.policies import make_policy
from services.core.policies.base import Candidate, DecisionContext
from services.core.policies.prior import PriorParams, PriorPolicy
from services.core.policies.qlearning import QLearningPolicy, QParams, QTable
from services.core.policies.splits import SplitActions
from services.core.schemas import Precision, RuntimeConditions, Target
from services.core.state import state_index

ROOT = Path(__file__).resolve().parents[1]
MODEL = "mobilenet_v3"


def _mesh() -> Mesh:
    return Mesh(load_profile("mi8pro"), load_profile("galaxy_tab_s6"), load_profile("cloud_p100"))


def _ctx(cands: tuple[Candidate, ...], state: int, cond: RuntimeConditions) -> DecisionContext:
    f = zoo_features(MODEL)
    return DecisionContext(MODEL, f, cond, state, cands, 0.05, None, cuts=zoo_cut_points(MODEL))


def decisions(calls: int) -> dict[str, Any]:
    """Per-call decision costs, with and without split actions (module docstring)."""
    mesh = _mesh()
    f, cuts = zoo_features(MODEL), zoo_cut_points(MODEL)
    acc = {p: expected_accuracy(MODEL, p) for p in Precision}
    whole = tuple(
        Candidate(Target.parse(a), float(e.top1)) for a in ACTIONS if (e := acc[Target.parse(a).precision]) is not None
    )
    splits = SplitActions(mesh, per_location=1)
    extended = splits.extend(MODEL, f, cuts, whole, 0.05)
    cond = RuntimeConditions(co_cpu=0.1, co_mem=0.3, rssi_wifi_dbm=-60, rssi_p2p_dbm=-55)
    state = state_index(f, cond)
    table = QTable()
    rng = random.Random(0)
    # a trained row: every action (the split actions too) valued and visited
    row = {c.action_id: -COST_MJ.get(c.action_id, 50.0) * rng.uniform(0.9, 1.1) for c in extended}
    table.set_row(state, row, {c.action_id: rng.randrange(1, 50) for c in extended})
    greedy = QLearningPolicy(table, QParams(epsilon=0.0))
    default = QLearningPolicy(table, QParams.from_settings(Settings(_env_file=None)))
    prior = PriorPolicy(QTable(), mesh, PriorParams(epsilon=0.0))  # the default learner, greedy
    ctx_w, ctx_s = _ctx(whole, state, cond), _ctx(extended, state, cond)
    ns = make_policy("neurosurgeon", mesh=mesh)
    mo = make_policy("mosaic", mesh=mesh)
    ns.decide(ctx_w, rng)  # fits its regressions once

    async def nothing() -> None:
        return None

    # Round-robin batches (bench_decision's): a noisy neighbour slows every row alike.
    timings = asyncio.run(
        interleaved_us(
            {
                "decide_greedy_66": lambda: greedy.decide(ctx_w, rng),
                "decide_greedy_splits": lambda: greedy.decide(ctx_s, rng),
                "decide_default_66": lambda: default.decide(ctx_w, rng),
                "decide_default_splits": lambda: default.decide(ctx_s, rng),
                "decide_prior_66": lambda: prior.decide(ctx_w, rng),
                "decide_prior_splits": lambda: prior.decide(ctx_s, rng),
                "extend_candidates": lambda: splits.extend(MODEL, f, cuts, whole, 0.05),
                "mosaic_decide": lambda: mo.decide(ctx_w, rng),
            },
            calls,
            nothing,
            rounds=60,
        )
    )
    timings["neurosurgeon_decide"] = per_call_us(lambda: ns.decide(ctx_w, rng), calls // 20)
    t0 = time.perf_counter()
    fresh = SplitActions(mesh, per_location=1).extend(MODEL, f, cuts, whole, 0.05)
    select_ms = (time.perf_counter() - t0) * 1e3
    return {
        "actions": len(whole),
        "split_actions": [c.action_id for c in fresh[len(whole) :]],
        "selection_ms": select_ms,
        "timings": timings,
    }


def plan_hop(rounds: int) -> dict[str, Any]:
    """``/infer`` whole vs as a pinned two-part plan, interleaved, through a test mesh."""
    import httpx

    from services.cli.launcher import Mesh as Launcher
    from tests.conftest import mesh_settings

    with tempfile.TemporaryDirectory() as tmp:
        m = Launcher(mesh_settings(Path(tmp), zoo=["mobilenet_v1"], preload_models=["mobilenet_v1"])).start(600)
        try:
            url = m.url("decider")
            cut = zoo_cut_points("mobilenet_v1")[2]
            whole = {"model": "mobilenet_v1", "synthetic": True, "policy": "edge-cpu-fp32", "output_format": "summary"}
            plan = {
                "model": "mobilenet_v1",
                "synthetic": True,
                "output_format": "summary",
                "plan": [{"target": "edge/cpu/fp32@22", "end": cut.name}, {"target": "cloud/gpu/fp32"}],
            }
            out: dict[str, list[float]] = {"whole": [], "plan": []}
            crossed = 0
            with httpx.Client(timeout=120, trust_env=False) as c:
                for body in (whole, plan, whole, plan):  # warm-up: sessions and parts loaded
                    c.post(f"{url}/infer", json=body).raise_for_status()
                for _ in range(rounds):
                    for name, body in (("whole", whole), ("plan", plan)):
                        r = c.post(f"{url}/infer", json=body)
                        r.raise_for_status()
                        out[name].append(r.json()["latency_ms"])
                        if name == "plan":
                            crossed = r.json()["plan"]["parts"][1]["input_bytes"]
        finally:
            m.stop()
    med = {k: statistics.median(v) for k, v in out.items()}
    return {
        "rounds": rounds,
        "cut": cut.name,
        "boundary_bytes": crossed,
        "latency_ms_p50": med,
        "plan_over_whole": med["plan"] / med["whole"],
        "plan_extra_ms": med["plan"] - med["whole"],
    }


def write(res: dict[str, Any], out_dir: Path) -> None:
    (out_dir / "partition.json").write_text(json.dumps(res, indent=2))
    d = res["decisions"]
    t = d["timings"]
    lines = [
        "# Partitioned execution: decision cost and a plan's hop",
        "",
        f"Machine: {res['machine']}. Python {res['python']}. Every figure *measured* here, in one run "
        "(`python -m bench.bench_partition`).",
        "",
        f"## Decisions ({MODEL}, Mi8Pro: {d['actions']} actions; split actions: {', '.join(d['split_actions'])})",
        "",
        "| what | median (us) | best batch (us) | median vs the paper's 7.3 us |",
        "|---|---:|---:|---:|",
    ]
    rows = (
        ("AutoScale greedy, 66 actions", "decide_greedy_66", True),
        (f"AutoScale greedy, 66 + {len(d['split_actions'])} split actions", "decide_greedy_splits", True),
        ("AutoScale decider default (epsilon 0.1 + UCB), 66 actions", "decide_default_66", True),
        (f"same, 66 + {len(d['split_actions'])} split actions", "decide_default_splits", True),
        ("the default (prior) learner, greedy, 66 actions", "decide_prior_66", True),
        (f"same, 66 + {len(d['split_actions'])} split actions (each priced part by part)", "decide_prior_splits", True),
        ("the decider's lookup of the extended candidates (memoised)", "extend_candidates", False),
        ("NeuroSurgeon: predict every split under the current bandwidth, pick", "neurosurgeon_decide", True),
        ("MOSAIC (memoised per network and offer)", "mosaic_decide", True),
    )
    for label, key, vs in rows:
        m = t[key]
        paper = f"{m['median_us'] / PAPER_DECISION_US:.2f}x" if vs else "-"
        lines.append(f"| {label} | {m['median_us']:.2f} | {m['min_us']:.2f} | {paper} |")
    lines += [
        "",
        f"Choosing the split actions of a network (once per network, offer and QoS): {d['selection_ms']:.0f} ms.",
    ]
    h = res.get("plan_hop")
    if h:
        lines += [
            "",
            "## A plan's extra hop (MobileNet v1, test mesh on loopback)",
            "",
            f"`/infer` whole on the phone's CPU vs a pinned plan (phone CPU up to `{h['cut']}`, then the cloud GPU; "
            f"{h['boundary_bytes']} bytes relayed), interleaved, {h['rounds']} rounds; the decider's wall time:",
            "",
            "| | p50 latency_ms (this host) |",
            "|---|---:|",
            f"| whole | {h['latency_ms_p50']['whole']:.1f} |",
            f"| two-part plan | {h['latency_ms_p50']['plan']:.1f} |",
            f"| plan / whole | {h['plan_over_whole']:.2f}x (+{h['plan_extra_ms']:.1f} ms) |",
        ]
    (out_dir / "partition.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=60_000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--no-mesh", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench")
    args = ap.parse_args()
    res: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared)",
        "python": platform.python_version(),
        "decisions": decisions(args.calls),
    }
    if not args.no_mesh:
        res["plan_hop"] = plan_hop(args.rounds)
    res["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write(res, args.out)
    print((args.out / "partition.md").read_text())


if __name__ == "__main__":
    main()
