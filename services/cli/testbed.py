"""``autoscale testbed``: calibrate the edge CPU, start the real mesh pinned around it, drive the timeline, report.

Layout on this host (``split_cpus``): the edge runner and the co-runners share the first half of the CPUs
(one core on a 2-core machine), so the co-runners really slow the edge targets; the peer and cloud runners,
the decider, telemetry, Redis and this process (the load generator) share the rest, so the remote targets
are not slowed by them. The edge runner serves this host as the phone (``AUTOSCALE_MEASURE_ON_HOST``, the
calibrated profile); the peer and cloud runners are this host's other CPUs behind emulated links
(``AUTOSCALE_EMULATE_LINK_DELAY``: the input really crosses HTTP, and the runner sleeps the transfer time the
profile's radio gives at the scenario's RSSI).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import psutil
import typer
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.cli.launcher import Mesh
from services.common.corunners import install_signal_handlers
from services.common.settings import Settings
from services.testbed.models import Preset, Record, TestbedPlan

# The engines, the calibration and the plotting stack are imported when the command runs (see cli/calibrate.py).

console = Console(stderr=True)
EDGE_PROFILE = "testbed_edge"


def _calibrate_edge(settings: Settings, plan: TestbedPlan, out: Path, bar: Progress) -> tuple[Path, float]:
    """Calibrate the edge CPUs exactly as the edge runner will use them (pinned, its thread count, its
    co-runners), on the plan's networks; returns the profile and the fit's MAPE."""
    from services.calibration.run import CalibrateOptions, calibrate
    from services.calibration.run import Progress as Callbacks

    opts = CalibrateOptions(
        model_cache=settings.model_cache,
        out_dir=out,
        models=[w.model for w in plan.workloads],
        name=EDGE_PROFILE,
        cpus=plan.edge_cpus,
        fit_threads=len(plan.edge_cpus),
        profiles_dir=settings.profiles_dir,
        command="autoscale testbed (edge calibration)",
    )
    if plan.preset != "full":
        opts.quick()
    task = bar.add_task("calibrating the edge CPUs", total=None)

    def stage(name: str, total: int) -> None:
        bar.update(task, description=f"calibration: {name}", total=total, completed=0)

    report = calibrate(opts, Callbacks(stage=stage, step=lambda d: bar.update(task, advance=1)))
    bar.update(task, description=f"calibration: MAPE {report.mape_pct:.1f} %")
    return Path(report.profile_path), report.mape_pct


def mesh_for(settings: Settings, plan: TestbedPlan, out: Path, profiles: Path, edge: str) -> Mesh:
    """The mesh ``autoscale up`` starts, with the testbed's profiles, measurement, links and CPU layout."""
    models = [w.model for w in plan.workloads]
    shutil.rmtree(out / "var" / "redis", ignore_errors=True)  # AutoScale starts from an empty Q-table
    s = Settings(
        data_dir=out / "var",
        models_dir=settings.model_cache.resolve(),
        zoo=models,
        preload_models=models,
        edge_device=edge,
        peer_device=f"{edge}_peer",
        cloud_device=f"{edge}_cloud",
        profiles_dir=profiles.resolve(),
        measure_on_host=True,
        emulate_link_delay=True,
        ort_threads=len(plan.edge_cpus),
        seed=plan.seed,
        scenario="S1",
        telemetry_refresh_s=0.2,
        runner_refresh_s=1.0,
        redis_url=SecretStr(""),
    )
    remote_threads = str(max(1, len(plan.other_cpus) // 2))
    other = set(plan.other_cpus)
    return Mesh(
        s,
        cpus={"edge": set(plan.edge_cpus)} | dict.fromkeys(("peer", "cloud", "decider", "telemetry", "redis"), other),
        role_env={r: {"AUTOSCALE_ORT_THREADS": remote_threads} for r in ("peer", "cloud")},
    )


def run_testbed(settings: Settings, plan: TestbedPlan, out: Path, profile: Path | None, command: str) -> Path:
    """Calibrate (unless given a profile), start the mesh, drive the plan, stop everything, write the results."""
    from services.calibration.hardware import load_average
    from services.testbed.loadgen import LoadGen
    from services.testbed.profiles import derive_remote_profiles
    from services.testbed.report import RunInfo, write_results

    started, t0, load_start = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic(), load_average()
    out.mkdir(parents=True, exist_ok=True)
    profiles = out / "profiles"
    columns = (TextColumn("{task.description:<60}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        if profile is None:
            profile, mape = _calibrate_edge(settings, plan, profiles, bar)
        else:
            mape = None
        edge = derive_remote_profiles(profile, profiles)
        mesh = mesh_for(settings, plan, out, profiles, edge)
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, set(plan.other_cpus))
        task = bar.add_task("starting the mesh", total=None)
        gen = LoadGen(plan, mesh.url("decider"), mesh.url("telemetry"), settings.admin_token.get_secret_value())
        try:
            mesh.start(timeout_s=600, on_event=lambda m: bar.update(task, description=f"mesh: {m}"[:60]))
            bar.console.print(
                f"mesh up: decider {mesh.url('decider')} (metrics at /metrics; Prometheus: "
                "deploy/prometheus/prometheus.yml, Grafana: deploy/grafana), telemetry "
                f"{mesh.url('telemetry')}/state, logs {out / 'var' / 'logs'}",
                highlight=False,
                soft_wrap=True,
            )
            bar.update(task, description="requests", total=plan.requests(), completed=0)

            def advance(r: Record) -> None:
                what = f"{r.stage} {r.pass_index} · {r.phase} · {r.policy}"
                bar.update(task, advance=1, description=what[:60])

            gen.on_record = advance
            gen.run()
        finally:
            mesh.stop()
    left = [pid for pid in gen.corunner_pids if psutil.pid_exists(pid) and _alive(pid)]
    info = RunInfo(
        command=command,
        started=started,
        duration_s=time.monotonic() - t0,
        load_avg_start=load_start,
        load_avg_end=load_average(),
        truncated=gen.truncated,
        profile=str(profile),
        calibration_mape_pct=mape,
        corunners_left=left,
    )
    return write_results(plan, gen.records, info, out)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def command(
    quick: Annotated[bool, typer.Option(help="small networks, short timeline: a couple of minutes (CI)")] = False,
    full: Annotated[bool, typer.Option(help="more networks, passes and policies: the README's figures")] = False,
    out: Annotated[Path | None, typer.Option(help="results directory (default results/testbed-<preset>)")] = None,
    profile: Annotated[
        Path | None, typer.Option(help="an edge profile from `autoscale calibrate --cpus ...` (default: calibrate)")
    ] = None,
    models: Annotated[str | None, typer.Option(help="comma-separated zoo networks (default: the preset's)")] = None,
    train_passes: Annotated[int | None, typer.Option(min=0, help="AutoScale-only passes before the comparison")] = None,
    time_limit: Annotated[float | None, typer.Option(min=10, help="seconds of requests at most")] = None,
    seed: Annotated[int, typer.Option(help="the decider's seed")] = 7,
) -> None:
    """The real mesh on this machine learning from measured outcomes under real co-runners and an emulated
    signal timeline; AutoScale against the baselines; results.json, report.md and figures in OUT."""
    from services.calibration.hardware import usable_cpus
    from services.cli.main import load_settings
    from services.common.zoo import ZOO_NAMES
    from services.testbed.timeline import plan_for, split_cpus

    if quick and full:
        console.print("[red]--quick and --full exclude each other[/red]")
        raise typer.Exit(2)
    preset: Preset = "quick" if quick else "full" if full else "default"
    chosen = [m.strip() for m in (models or "").split(",") if m.strip()] or None
    unknown = [m for m in chosen or [] if m not in ZOO_NAMES]
    if unknown:
        console.print(f"[red]--models: unknown {unknown}; the zoo has {', '.join(ZOO_NAMES)}[/red]")
        raise typer.Exit(2)
    if profile is not None and not profile.is_file():
        console.print(f"[red]--profile: no such file {profile}[/red]")
        raise typer.Exit(2)
    settings = load_settings()
    edge_cpus, other_cpus = split_cpus(usable_cpus())
    if edge_cpus == other_cpus:
        console.print("[yellow]one CPU only: the co-runners will slow the remote runners too[/yellow]")
    plan = plan_for(
        preset,
        edge_cpus=edge_cpus,
        other_cpus=other_cpus,
        seed=seed,
        models=chosen,
        train_passes=train_passes,
        time_limit_s=time_limit,
    )
    install_signal_handlers()
    command = "autoscale " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "autoscale testbed"
    results = run_testbed(settings, plan, out or Path("results") / f"testbed-{preset}", profile, command)
    console.print(f"\nresults  {results}\nreport   {results.parent / 'report.md'}", highlight=False)
