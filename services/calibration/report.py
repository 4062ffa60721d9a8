"""The calibration's fit report: fit.json (``CalibrationReport``), report.md and fit.png."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt

from services.calibration.models import CalibrationReport

FIT_FIGURE = "fit.png"
MARKERS = {"fp32": "o", "int8": "s", "fp16": "^"}
COLORS = {"none": "#1976d2", "cpu": "#d32f2f", "mem": "#f57c00"}


def write_report(report: CalibrationReport, out_dir: Path) -> None:
    stem = report.name
    (out_dir / f"{stem}.fit.json").write_text(report.model_dump_json(indent=1))
    figure = fit_figure(report, out_dir / f"{stem}.{FIT_FIGURE}")
    (out_dir / f"{stem}.report.md").write_text(markdown(report, figure))


def fit_figure(report: CalibrationReport, path: Path) -> str:
    """Predicted vs measured latency of every fitted cell (log-log, y = x dashed)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    lo, hi = float("inf"), 0.0
    for net in report.networks:
        for c in net.cells:
            ax.scatter(
                c.measured_ms,
                c.predicted_ms,
                marker=MARKERS.get(c.precision.value, "o"),
                color=COLORS[c.condition],
                s=22,
                alpha=0.8,
            )
            lo, hi = min(lo, c.measured_ms, c.predicted_ms), max(hi, c.measured_ms, c.predicted_ms)
    if hi > 0:
        ax.plot([lo * 0.8, hi * 1.25], [lo * 0.8, hi * 1.25], "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured latency, ms (median per cell)")
    ax.set_ylabel("predicted by the fitted profile, ms")
    for cond, color in COLORS.items():
        ax.scatter([], [], color=color, label=f"co-runner: {cond}")
    for prec, marker in MARKERS.items():
        ax.scatter([], [], color="grey", marker=marker, label=prec)
    ax.legend(fontsize=7)
    ax.set_title(
        f"{report.name}: MAPE {report.mape_pct:.1f} %\nmeasured on {report.host.hostname} ({report.host.engine}, "
        f"{report.plan.fit_threads} thread(s)); predicted = cost model (eqs. 1-4) of the fitted profile",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def serve_counter(r: CalibrationReport) -> str:
    """The energy-counter setting that makes a served run's energy measured, where this host has one."""
    return f" AUTOSCALE_ENERGY_COUNTER={r.host.power.counter}" if r.host.power.counter else ""


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}g}"


def markdown(r: CalibrationReport, figure: str) -> str:
    """Long because it is one linear document: header, fit quality, parameters, thread scaling, co-load, notes."""
    p, h = r.plan, r.host
    lines = [
        f"# Calibration of `{r.name}` ({r.kind})",
        "",
        f"- command: `{r.command}`",
        f"- started: {r.started}, took {r.duration_s:.0f} s{' (stopped by the time limit)' if r.truncated else ''}",
        f"- host: {h.hostname}, {h.cpu_model}, {h.logical_cpus} logical CPUs, calibrated on CPUs {h.cpus}; "
        f"{h.platform}",
        f"- engine: {h.engine}; cpufreq: {h.cpufreq.detail}; power: {h.power.detail}",
        f"- plan: {len(p.models)} networks x {', '.join(q.value for q in p.precisions)} x threads {p.threads} x "
        f"co-runners {p.conditions}; {p.warmup} warm-up runs discarded, {p.reps} timed per cell, {p.rounds} round(s); "
        f"profile fitted at {p.fit_threads} thread(s); {len(r.cells)} cells measured",
        f"- profile: `{r.profile_path}`",
        "",
        "Everything below is **measured** on this host except where a parameter says `assumed`; the predicted",
        "latencies come from the fitted profile through the cost model (`services/core/costmodel.py`).",
        "",
        f"## Fit quality: MAPE {r.mape_pct:.1f} % over every fitted cell",
        "",
        f"![predicted vs measured]({figure})",
        "",
        "| network | MAPE % | precision | co-runner | step | measured ms | predicted ms | error % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for net in r.networks:
        for i, c in enumerate(net.cells):
            head = f"{net.model} | {net.mape_pct:.1f}" if i == 0 else " | "
            lines.append(
                f"| {head} | {c.precision.value} | {c.condition} | {c.step} | {c.measured_ms:.2f} | "
                f"{c.predicted_ms:.2f} | {c.error_pct:+.1f} |"
            )
    lines += ["", "## Parameters", "", "| parameter | value | source | std. error % | why |", "|---|---|---|---|---|"]
    for prm in r.params:
        value = ", ".join(_fmt(v, 4) for v in prm.values) if prm.values else _fmt(prm.value, 4)
        lines.append(f"| `{prm.name}` | {value} | {prm.source} | {_fmt(prm.rel_err_pct, 2)} | {prm.why} |")
    lines += [
        "",
        "## Measured latency per thread count (no co-runner, top step)",
        "",
        "| network | precision | threads | median ms | p10 ms | p90 ms |",
        "|---|---|---|---|---|---|",
    ]
    for t in sorted(r.threads, key=lambda t: (t.model, t.precision.value, t.threads)):
        lines.append(
            f"| {t.model} | {t.precision.value} | {t.threads} | {t.median_ms:.2f} | {t.p10_ms:.2f} | {t.p90_ms:.2f} |"
        )
    lines += [
        "",
        "## Co-runner load measured during the cells (telemetry's psutil method)",
        "",
        "| co-runner | co_cpu (median) | co_mem (median) |",
        "|---|---|---|",
    ]
    for cond, load in r.co_load.items():
        lines.append(f"| {cond} | {load['co_cpu']:.3f} | {load['co_mem']:.3f} |")
    lines += ["", "## Notes", "", *[f"- {n}" for n in r.notes]]
    lines += [
        "",
        "## Serve this device as itself",
        "",
        "```bash",
        f"AUTOSCALE_PROFILES_DIR={Path(r.profile_path).parent} AUTOSCALE_EDGE_DEVICE={r.name} \\",
        f"  AUTOSCALE_MEASURE_ON_HOST=true AUTOSCALE_ORT_THREADS={p.fit_threads}{serve_counter(r)} autoscale up",
        "```",
        "",
    ]
    return "\n".join(lines)
