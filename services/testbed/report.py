"""Write the testbed's results directory: records.jsonl, results.json (``TestbedResults``), report.md, PNGs."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from services.testbed import analysis, figures
from services.testbed.models import Record, TestbedPlan, TestbedResults

RESULTS = "results.json"
RECORDS = "records.jsonl"
REPORT = "report.md"


@dataclass
class RunInfo:
    command: str
    started: str
    duration_s: float
    load_avg_start: tuple[float, float, float] | None
    load_avg_end: tuple[float, float, float] | None
    truncated: bool
    profile: str
    calibration_mape_pct: float | None
    corunners_left: list[int]


def provenance(plan: TestbedPlan, records: list[Record], info: RunInfo) -> tuple[list[str], list[str]]:
    """What was measured on this host, and what was modelled or emulated (and from what)."""
    energy_measured = any(r.energy_source == "measured" for r in records if r.runner == "edge")
    mape = f", fit MAPE {info.calibration_mape_pct:.1f} %" if info.calibration_mape_pct is not None else ""
    measured = [
        f"latency of every target: the runners' own execution time (edge on CPUs {plan.edge_cpus}, peer and cloud "
        f"on CPUs {plan.other_cpus}), with whatever else ran on the host",
        "co-runner CPU and memory load: the telemetry service (psutil) while real co-runner processes ran on the "
        "edge CPUs (CPU burners, a memory-bandwidth streamer)",
        f"the edge profile's latency parameters: calibrated on the edge CPUs before the run ({info.profile}{mape})",
    ]
    modelled = [
        "the phone's energy of edge targets: "
        + (
            "measured by the host's energy counter"
            if energy_measured
            else "the calibrated profile's busy power (assumed: no power sensor here) x the measured latency"
        ),
        "the phone's energy of peer and cloud targets: eq. 4 with the edge profile's radio (copied from the Mi8Pro "
        "profile) at the emulated RSSI",
        "link transfer times: emulated (the runner sleeps the profile's transfer time at the current RSSI); the "
        "input tensor's bytes really cross HTTP on loopback, the outputs come back as summaries",
        "signal strength: emulated from the scenario timeline (S1, S4 weak Wi-Fi, S5 weak Wi-Fi Direct, D3 Gaussian)",
        "Opt: the calibrated profile's cost model at the observed conditions (the profile's Opt, not a measured "
        "oracle)",
    ]
    return measured, modelled


def write_results(plan: TestbedPlan, records: list[Record], info: RunInfo, out: Path) -> Path:
    """Analyse the records, draw the figures, write everything; returns the results.json path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / RECORDS).write_text("".join(r.model_dump_json() + "\n" for r in records))
    window = max(2 * len(plan.workloads), 4)
    summaries = analysis.policy_summaries(records)
    windows = analysis.learning_curves(records, window)
    trans = analysis.transitions(records, plan)
    rows, slowdown = analysis.interference(records)
    figs = []
    if windows:
        figs += [figures.learning(windows, out), figures.timeline(records, plan, out, window)]
    if summaries:
        figs.append(figures.policies(summaries, out))
    if rows:
        figs.append(figures.interference(rows, out))
    measured, modelled = provenance(plan, records, info)
    results = TestbedResults(
        command=info.command,
        started=info.started,
        duration_s=info.duration_s,
        host=socket.gethostname(),
        load_avg_start=info.load_avg_start,
        load_avg_end=info.load_avg_end,
        truncated=info.truncated,
        plan=plan,
        profile=info.profile,
        calibration_mape_pct=info.calibration_mape_pct,
        requests=len(records),
        failed=sum(not r.ok for r in records),
        policies=summaries,
        learning=windows,
        transitions=trans,
        interference=rows,
        observed=analysis.observed_load(records),
        edge_slowdown=slowdown,
        checks=analysis.checks(summaries, trans, slowdown, plan, info.corunners_left, records),
        figures=figs,
        measured=measured,
        modelled=modelled,
        corunners_left=info.corunners_left,
    )
    path = out / RESULTS
    path.write_text(results.model_dump_json(indent=1))
    (out / REPORT).write_text(markdown(results))
    return path


def _share(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _yes(passed: bool | None) -> str:
    return "n/a" if passed is None else ("**yes**" if passed else "**no**")


def markdown(r: TestbedResults) -> str:
    """Long because it is one linear document: header, checks, policies, reactions, interference, figures."""
    p = r.plan
    load = lambda la: "–" if la is None else f"{la[0]:.2f}"  # noqa: E731
    lines = [
        f"# Testbed: {p.preset}",
        "",
        f"- command: `{r.command}`",
        f"- started {r.started}, {r.duration_s:.0f} s, host {r.host}; load average {load(r.load_avg_start)} at the "
        f"start, {load(r.load_avg_end)} at the end (a shared host: other work ran alongside)"
        + ("; **stopped by the time limit**" if r.truncated else ""),
        f"- {r.requests} requests ({r.failed} failed) to {', '.join(p.policies)}, interleaved request by request: "
        f"{p.train_passes} training pass(es) (AutoScale exploring from an empty Q-table), then the comparison pass "
        "(AutoScale exploiting, still learning)",
        "- networks: "
        + ", ".join(f"{w.model} (QoS {w.qos_ms:.0f} ms, accuracy >= {w.accuracy_min or 0:g} %)" for w in p.workloads),
        f"- timeline per pass: {' → '.join(f'{ph.name} [{ph.scenario}, co-runner {ph.corunner}]' for ph in p.phases)}",
        f"- CPUs: edge runner + co-runners {p.edge_cpus}; peer, cloud, decider, telemetry, Redis, load generator "
        f"{p.other_cpus}",
        "",
        "**Measured here:** " + "; ".join(r.measured) + ".",
        "",
        "**Modelled or emulated:** " + "; ".join(r.modelled) + ".",
        "",
        "## Checks",
        "",
        "| check | passed | value | how |",
        "|---|---|---|---|",
        *[f"| {c.name} | {_yes(c.passed)} | {c.value} | {c.detail} |" for c in r.checks],
        "",
        "## Policies (comparison pass)",
        "",
        "| policy | n | energy mJ / inference | PPW inf/J | PPW vs Edge CPU FP32 | QoS violations % | "
        "accuracy violations % | median latency ms | where |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(r.policies, key=lambda s: s.energy_mj_mean):
        where = ", ".join(f"{t} {v * 100:.0f} %" for t, v in sorted(s.share.items(), key=lambda kv: -kv[1]))
        rel = "–" if s.ppw_vs_edge_cpu_fp32 is None else f"{s.ppw_vs_edge_cpu_fp32:.2f}x"
        lines.append(
            f"| {s.policy} | {s.n} | {s.energy_mj_mean:.1f} | {_share(s.ppw_inf_per_j)} | {rel} | "
            f"{s.qos_violation_pct:.1f} | {s.accuracy_violation_pct:.1f} | {s.target_latency_ms_median:.1f} | {where} |"
        )
    lines += [
        "",
        "## AutoScale and the co-runners",
        "",
        "| pass | co-runner | event | phase | AutoScale had there | measured best moved | requests until moved | "
        "s | edge share before → after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in r.transitions:
        moved = "–" if t.requests_until_move is None else str(t.requests_until_move)
        secs = "–" if t.seconds_until_move is None else f"{t.seconds_until_move:.1f}"
        lines.append(
            f"| {t.pass_index} ({t.stage}) | {t.corunner} | {t.event} | {t.phase} | {', '.join(t.networks) or '–'} | "
            f"{', '.join(t.expected) or '–'} | {moved} | {secs} | {_share(t.edge_share_before)} → "
            f"{_share(t.edge_share_after)} |"
        )
    lines += [
        "",
        "What the decider observed (Table I's co-runner inputs, measured by telemetry; median per phase of the "
        "comparison pass): "
        + "; ".join(f"{ph}: co_cpu {v['co_cpu']:.2f}, co_mem {v['co_mem']:.2f}" for ph, v in r.observed.items())
        + ". Bins: none 0, small < 0.25, medium < 0.75, large >= 0.75: a co-runner the load already hides "
        "leaves the state unchanged, and AutoScale can only average over it.",
    ]
    lines += [
        "",
        "## Measured edge latency with and without co-runners",
        "",
        "Median slowdown: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.edge_slowdown.items()) + ".",
        "",
        "| target | network | co-runner | n | median ms | p10 ms | p90 ms |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {x.target_id} | {x.model} | {x.corunner} | {x.n} | {x.median_ms:.2f} | {x.p10_ms:.2f} | "
            f"{x.p90_ms:.2f} |"
            for x in r.interference
        ],
        "",
        "## Figures",
        "",
    ]
    for f in r.figures:
        lines += [f"![{f.file}]({f.file})", "", f"*{f.caption}*", ""]
    return "\n".join(lines)
