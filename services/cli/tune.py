"""CLI for the engines: ``autoscale tune MODEL`` (MetaSchedule tuning for the TVM engine).

``tune`` is a plain typer command function (the main CLI mounts it with ``app.command("tune")``);
``app`` is a standalone Typer holding it and ``engines`` for ``python -m services.cli.tune``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.core.schemas import Precision

console = Console(stderr=True)


def resolve_model(model: str, precision: Precision = Precision.fp32, cache_dir: Path | None = None) -> Path:
    """An .onnx path as is, or a zoo name built (and converted to ``precision``) in the model cache."""
    p = Path(model)
    if p.suffix == ".onnx" or p.exists():
        if not p.is_file():
            raise typer.BadParameter(f"no such file: {p}", param_hint="MODEL")
        if precision is not Precision.fp32:
            raise typer.BadParameter("--precision applies to zoo names; pass the variant's .onnx instead")
        return p
    from services.common.settings import get_settings
    from services.common.zoo import ZOO_NAMES, build

    if model not in ZOO_NAMES:
        raise typer.BadParameter(f"{model!r} is neither a file nor a zoo model ({', '.join(ZOO_NAMES)})")
    cache = cache_dir or get_settings().model_cache
    path = build(model, cache)
    if precision is not Precision.fp32:
        from services.common.precision import make_variant

        path = make_variant(path, precision, cache)
    return path


def tune(
    model: Annotated[str, typer.Argument(help="zoo model name (e.g. mobilenet_v1) or path to an .onnx file")],
    target: Annotated[str, typer.Option(help="llvm (host CPU) or cuda")] = "llvm",
    trials: Annotated[int, typer.Option(min=1, help="global MetaSchedule trial budget")] = 200,
    out: Annotated[
        Path | None, typer.Option(help="tuning root; default $AUTOSCALE_TVM_TUNING or <tvm cache>/tuning")
    ] = None,
    precision: Annotated[Precision, typer.Option(help="zoo variant to tune")] = Precision.fp32,
    threads: Annotated[int, typer.Option(min=1, help="CPU cores the tuned code will use")] = 2,
    per_task: Annotated[int | None, typer.Option(help="max trials per kernel (default: even split)")] = None,
    strategy: Annotated[str, typer.Option(help="evolutionary | replay-trace | replay-func")] = "evolutionary",
    verbose: Annotated[bool, typer.Option(help="show MetaSchedule's progress tables")] = False,
) -> None:
    """Tune MODEL with TVM MetaSchedule; the TVM engine then compiles it with the records."""
    from services.common.engines import EngineError
    from services.common.engines.tune import tune as run_tuning

    path = resolve_model(model, precision)
    console.print(f"tuning [bold]{path.name}[/bold] for {target}, {trials} trials (Ctrl-C stops)...")
    try:
        db = run_tuning(
            path, target, trials, out, threads=threads, max_trials_per_task=per_task, strategy=strategy, verbose=verbose
        )
    except EngineError as e:
        console.print(f"[red]tuning failed:[/red] {e}")
        raise typer.Exit(1) from e
    meta = (db / "meta.json").read_text()
    console.print(f"[green]done[/green]: database in {db}")
    typer.echo(meta)


def engines() -> None:
    """List the engines, their versions and the devices they detect on this host."""
    from services.common.engines import available_engines, engine_names

    have = available_engines()
    table = Table("engine", "version", "devices")
    for name in engine_names():
        e = have.get(name)
        table.add_row(name, e.version if e else "[red]not installed[/red]", ", ".join(e.devices()) if e else "")
    Console().print(table)


app = typer.Typer(help="Inference engines: TVM tuning and engine info.", no_args_is_help=True)
app.command("tune")(tune)
app.command("engines")(engines)

if __name__ == "__main__":
    app()
