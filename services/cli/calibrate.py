"""``autoscale calibrate``: measure this device and write its profile (services.calibration)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.calibration.models import CONDITIONS, QUICK_MODELS, CalibrationReport, Condition, ProfileKind
from services.common.corunners import install_signal_handlers
from services.common.settings import Settings
from services.core.errors import ConfigFileError
from services.core.schemas import Precision

if TYPE_CHECKING:
    from services.calibration.run import CalibrateOptions

# The measuring and fitting stack (ONNX, ONNX Runtime, scipy, matplotlib) is imported when a command runs, not
# when `autoscale` starts: `autoscale up` should not pay seconds for a command it does not run.

console = Console(stderr=True)


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _ints(value: str | None, what: str) -> list[int] | None:
    try:
        return [int(v) for v in _csv(value)] or None
    except ValueError:
        console.print(f"[red]--{what} must be comma-separated integers, got {value!r}[/red]")
        raise typer.Exit(2) from None


def options_from(
    settings: Settings,
    *,
    models: str | None,
    quick: bool,
    out: Path | None,
    name: str | None,
    kind: ProfileKind,
    cpus: str | None,
    threads: int | None,
    precisions: str,
    conditions: str,
    time_limit: float | None,
    core_w: float | None,
) -> CalibrateOptions:
    """Checked options (exit 2 naming the bad one)."""
    from services.calibration.run import CalibrateOptions
    from services.common.zoo import ZOO_NAMES

    chosen = _csv(models) or list(QUICK_MODELS if quick else ZOO_NAMES)
    unknown = [m for m in chosen if m not in ZOO_NAMES]
    if unknown:
        console.print(f"[red]--models: unknown {unknown}; the zoo has {', '.join(ZOO_NAMES)}[/red]")
        raise typer.Exit(2)
    try:
        precs = [Precision(p) for p in _csv(precisions)]
        conds: list[Condition] = [c for c in CONDITIONS if c in _csv(conditions)]
    except ValueError as exc:
        console.print(f"[red]--precisions: {exc}[/red]")
        raise typer.Exit(2) from None
    if not conds or len(conds) != len(_csv(conditions)):
        console.print(f"[red]--conditions must be among {', '.join(CONDITIONS)}, got {conditions!r}[/red]")
        raise typer.Exit(2)
    opts = CalibrateOptions(
        model_cache=settings.model_cache,
        out_dir=out or settings.data_dir / "calibration",
        models=chosen,
        kind=kind,
        precisions=precs,
        fit_threads=threads or settings.ort_threads,
        conditions=conds,
        profiles_dir=settings.profiles_dir,
        core_w=core_w,
        command="autoscale " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "autoscale calibrate",
    )
    if name:
        if not re.fullmatch(r"[a-z0-9_]+", name):
            console.print(f"[red]--name must match [a-z0-9_]+, got {name!r}[/red]")
            raise typer.Exit(2)
        opts.name = name
    chosen_cpus = _ints(cpus, "cpus")
    if chosen_cpus:
        opts.cpus = chosen_cpus
    if quick:
        opts.quick()
    if time_limit is not None:
        opts.time_limit_s = time_limit
    return opts


def run_with_progress(opts: CalibrateOptions) -> CalibrationReport:
    """``calibrate`` behind rich progress bars (one per stage)."""
    from services.calibration.run import Progress as Callbacks
    from services.calibration.run import calibrate

    columns = (TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task: list[TaskID] = []
        label: list[str] = [""]

        def stage(name: str, total: int) -> None:
            if task:
                bar.update(task[-1], description=label[0], completed=bar.tasks[-1].total)
            label[0] = name
            task.append(bar.add_task(name, total=total))

        def step(desc: str) -> None:
            bar.update(task[-1], description=f"{label[0]}: {desc}", advance=1)

        report = calibrate(opts, Callbacks(stage=stage, step=step))
        bar.update(task[-1], description=label[0])
    return report


def print_summary(report: CalibrationReport) -> None:
    from services.calibration.report import serve_counter

    table = Table(title=f"fit quality: MAPE {report.mape_pct:.1f} % (predicted vs measured latency)")
    table.add_column("network")
    table.add_column("MAPE %", justify="right")
    table.add_column("cells", justify="right")
    for net in report.networks:
        table.add_row(net.model, f"{net.mape_pct:.1f}", str(len(net.cells)))
    console.print(table)
    for note in report.notes:
        console.print(f"  note: {note}")
    out = Path(report.profile_path)
    console.print(
        f"\nprofile  {out}\nreport   {out.with_suffix('.report.md')}\n\nServe this device as itself:\n"
        f"  AUTOSCALE_PROFILES_DIR={out.parent} AUTOSCALE_EDGE_DEVICE={report.name} "
        f"AUTOSCALE_MEASURE_ON_HOST=true AUTOSCALE_ORT_THREADS={report.plan.fit_threads}{serve_counter(report)} "
        "autoscale up",
        soft_wrap=True,
        highlight=False,
    )


def calibrate_command(
    models: Annotated[str | None, typer.Option(help="comma-separated zoo networks (default: all; --quick: 3)")] = None,
    quick: Annotated[bool, typer.Option(help="3 small networks, fewer repetitions, one round: about a minute")] = False,
    out: Annotated[Path | None, typer.Option(help="output directory (default DATA_DIR/calibration)")] = None,
    name: Annotated[str | None, typer.Option(help="profile name, [a-z0-9_]+ (default calibrated_<host>)")] = None,
    kind: Annotated[
        str, typer.Option(help="phone (gets mi8pro's radio and base power, marked assumed) | tablet | server")
    ] = "phone",
    cpus: Annotated[str | None, typer.Option(help="comma-separated CPUs to measure on (default: all usable)")] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="threads the profile describes (default AUTOSCALE_ORT_THREADS)")
    ] = None,
    precisions: Annotated[str, typer.Option(help="comma-separated precisions")] = "fp32,int8",
    conditions: Annotated[str, typer.Option(help="co-runners to measure under: none, cpu, mem")] = "none,cpu,mem",
    time_limit: Annotated[float | None, typer.Option(min=1, help="seconds of measuring at most")] = None,
    core_w: Annotated[
        float | None, typer.Option(min=0.01, help="assumed busy W per core where no power sensor exists")
    ] = None,
) -> None:
    """Measure this device with the real engine (latency per network, precision, thread count, frequency and
    co-runner; power where a sensor exists), fit its profile and write it with a fit report."""
    from services.cli.main import load_settings

    if kind not in ("phone", "tablet", "server"):
        console.print(f"[red]--kind must be phone, tablet or server, got {kind!r}[/red]")
        raise typer.Exit(2)
    install_signal_handlers()
    opts = options_from(
        load_settings(),
        models=models,
        quick=quick,
        out=out,
        name=name,
        kind=kind,  # type: ignore[arg-type]
        cpus=cpus,
        threads=threads,
        precisions=precisions,
        conditions=conditions,
        time_limit=time_limit,
        core_w=core_w,
    )
    try:
        report = run_with_progress(opts)
    except (ConfigFileError, ValueError) as exc:
        console.print(f"[red]calibration failed:[/red] {exc}")
        raise typer.Exit(1) from None
    print_summary(report)
