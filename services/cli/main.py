"""The `autoscale` command: start the mesh or one service, build models, tune, evaluate."""

from __future__ import annotations

import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console

from services.cli.calibrate import calibrate_command
from services.cli.evaluate import evaluate
from services.cli.launcher import HTTP_PROTOCOL, SERVICES, Mesh, check_config
from services.cli.models import app as models_app
from services.cli.qtable import app as qtable_app
from services.cli.testbed import command as testbed_command
from services.cli.tune import tune
from services.common import zoo
from services.common.settings import Settings

app = typer.Typer(help="AutoScale Mesh: energy- and QoS-aware DNN inference placement.", no_args_is_help=True)
app.add_typer(models_app, name="models", help="Build and inspect the model zoo.")
app.add_typer(qtable_app, name="qtable", help="Offline work on Q tables: train one from decision logs.")
app.command("tune", help="Tune a model with TVM MetaSchedule and store the tuning database.")(tune)
app.command("evaluate", help="Reproduce the paper's evaluation on the simulator.")(evaluate)
app.command("calibrate", help="Measure this device and write its profile with a fit report.")(calibrate_command)
app.command("testbed", help="The live mesh learning from measured outcomes under real co-runners.")(testbed_command)
console = Console(stderr=True)


def load_settings() -> Settings:
    """The settings from the environment; a bad value exits 2 naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        console.print(f"[red]bad configuration[/red] (AUTOSCALE_* environment variables):\n{exc}")
        raise typer.Exit(2) from exc


def _serve(role: str) -> None:
    s = load_settings()
    factory = dict(SERVICES)[role]
    uvicorn.run(
        factory,
        factory=True,
        host=s.host,
        port=s.port(role),
        http=HTTP_PROTOCOL,
        access_log=False,
        log_level=s.log_level,
    )


@app.command()
def decider() -> None:
    """Run the decider service (POST /infer) in the foreground."""
    _serve("decider")


@app.command()
def runner(role: Annotated[str, typer.Option(help="edge | peer | cloud")] = "edge") -> None:
    """Run one runner service in the foreground."""
    if role not in ("edge", "peer", "cloud"):
        console.print(f"[red]--role must be edge, peer or cloud, got {role!r}[/red]")
        raise typer.Exit(2)
    _serve(role)


@app.command()
def telemetry() -> None:
    """Run the telemetry service in the foreground."""
    _serve("telemetry")


def _prebuild(s: Settings) -> None:
    """Build and quantise the preloaded models once, before three runners want them at once."""
    from rich.progress import Progress

    from services.common.model_store import ModelStore
    from services.core.schemas import Precision

    store = ModelStore(s.model_cache, s.zoo or None)
    jobs = [(m, p) for m in s.preload_models if store.has(m) for p in Precision]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("building models", total=len(jobs))
        for name, precision in jobs:
            progress.update(task, description=f"building {name} {precision.value}")
            if precision in store.info(name).precisions:
                store.path(name, precision)
            progress.advance(task)


@app.command()
def up(
    prebuild: Annotated[bool, typer.Option(help="build the preloaded models before starting")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for every service to be ready")] = 600.0,
) -> None:
    """Start the whole mesh on this machine (Redis, telemetry, edge/peer/cloud runners, decider) and
    keep it up: a child that exits is restarted (with backoff, within AUTOSCALE_RESTART_LIMIT). Exits
    non-zero only when the decider cannot be kept up."""
    s = load_settings()
    problems = check_config(s)
    if problems:
        console.print("[red]bad configuration:[/red]\n  " + "\n  ".join(problems))
        raise typer.Exit(2)
    if prebuild:
        _prebuild(s)
    mesh = Mesh(s)
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if mesh.supervisor is not None:
            mesh.supervisor.halt()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        mesh.start(
            timeout_s=timeout,
            on_event=lambda m: console.print(f"  [green]✓[/green] {m}"),
            on_supervisor_event=lambda m: console.print(f"  [yellow]![/yellow] {m}", highlight=False),
        )
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]mesh failed to start:[/red] {exc}")
        raise typer.Exit(1) from exc
    url = mesh.url("decider")
    model = (s.preload_models or ["mobilenet_v1"])[0]
    # The variable, never the token: the line may end up in a terminal log.
    auth = ' -H "Authorization: Bearer $AUTOSCALE_CLIENT_TOKEN"' if s.client_token.get_secret_value() else ""
    sample = ""
    if zoo.labelled_set_available(model):
        sample = (
            f"A real held-out image (the command prints its label on stderr):\n"
            f"  {shlex.quote(sys.argv[0])} models sample {model} --index 0 | "
            f"curl -s -X POST {url}/infer -H 'Content-Type: application/json'{auth} -d @-\n\n"
        )
    # Plain lines, not a panel: the curl command must stay copy-pasteable at any terminal width.
    console.print(
        f"\n[bold]AutoScale Mesh is up.[/bold]\n"
        f"  decider    {url}   (OpenAPI: {url}/docs)\n"
        f"  metrics    {url}/metrics"
        + (f"  (supervisor: http://{s.host}:{s.supervisor_port}/metrics)" if s.supervisor_port else "")
        + "\n"
        f"  telemetry  {mesh.url('telemetry')}/state\n"
        f"  logs       {Path(s.data_dir).resolve() / 'logs'}\n\n"
        f"Send a request:\n"
        f"  curl -s -X POST {url}/infer -H 'Content-Type: application/json'{auth} "
        f'-d \'{{"model": "{model}", "synthetic": true}}\'\n\n'
        f"{sample}"
        f"Ctrl-C stops every process.",
        soft_wrap=True,
        highlight=False,
    )
    code = 0
    sup = mesh.supervisor
    try:
        # The supervisor restarts what exits; a runner or telemetry left down is a state the decider
        # handles (it says so in /readyz), a decider left down is the end.
        while not stopping:
            if sup is not None and sup.gave_up("decider"):
                console.print(f"[red]the decider keeps exiting; see {mesh.services['decider'].log_path}[/red]")
                code = 1
                break
            time.sleep(0.5)
    finally:
        console.print("stopping the mesh…")
        mesh.stop()
        console.print("stopped.")
    sys.exit(code)


if __name__ == "__main__":
    app()
