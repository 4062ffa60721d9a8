"""``autoscale models ...``: build and inspect the Table III zoo (mounted by the lead's CLI).

autoscale models build [NAMES...] [--dir DIR] [--precisions fp32,int8,fp16]
autoscale models list  [--dir DIR]
autoscale models sample digits [--index N] [--top-k K]   a /infer body with a real held-out image
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.common import zoo
from services.core.schemas import Precision

app = typer.Typer(help="Zoo models of the paper's Table III: build, convert, inspect.", no_args_is_help=True)
console = Console()


def _default_dir() -> Path:
    from services.common.settings import get_settings

    return get_settings().model_cache


def _parse_precisions(value: str) -> list[Precision]:
    try:
        out = [Precision(p.strip().lower()) for p in value.split(",") if p.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{exc}; choose from {', '.join(p.value for p in Precision)}") from exc
    return out or [Precision.fp32]


def _check_names(names: list[str] | None) -> list[str]:
    names = names or list(zoo.ZOO_NAMES)
    unknown = [n for n in names if n not in zoo.ZOO]
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(zoo.BUILTIN_NAMES)}")
    return names


def _table(rows: list[dict[str, object]], precs: list[Precision] | None, cache: Path | None) -> Table:
    title = "AutoScale zoo (Table III)" + (f" in {cache}" if cache else "")
    t = Table(title=title)
    t.add_column("model", no_wrap=True)
    t.add_column("CONV/FC/RC", justify="right", no_wrap=True)
    t.add_column("III", justify="center")
    t.add_column("MACs", justify="right", no_wrap=True)
    t.add_column("published", justify="right", no_wrap=True)
    t.add_column("diff", justify="right", no_wrap=True)
    t.add_column("params", justify="right", no_wrap=True)
    for p in precs or []:
        t.add_column(f"{p} size", justify="right", no_wrap=True)
    if precs:
        t.add_column("path (relative to the cache)", overflow="fold")
    for r in rows:
        cells = [str(r[k]) for k in ("model", "counts", "match", "macs", "published", "diff", "params")]
        if precs:
            cells += [str(r[f"size_{p}"]) for p in precs] + [str(r["path"])]
        t.add_row(*cells)
    return t


def _row(name: str) -> dict[str, object]:
    f = zoo.zoo_features(name)
    s = zoo.spec(name)
    ok = (f.conv, f.fc, f.rc) == s.table3
    return {
        "model": name,
        "counts": f"{f.conv}/{f.fc}/{f.rc}",
        "match": "[green]✓[/]" if ok else f"[red]✗ {s.table3}[/]",
        "macs": f"{f.macs / 1e6:,.0f} M",
        "published": f"{s.published_macs / 1e6:,.0f} M",
        "diff": f"{100 * (f.macs / s.published_macs - 1):+.1f} %",
        "params": f"{f.params / 1e6:.2f} M",
    }


@app.command()
def build(
    names: list[str] | None = typer.Argument(None, help="zoo models to build (default: all ten)"),
    dir: Path | None = typer.Option(None, "--dir", help="model cache directory (default: settings.model_cache)"),
    precisions: str = typer.Option("fp32", "--precisions", help="comma-separated: fp32,int8,fp16"),
) -> None:
    """Generate zoo models (and INT8/FP16 variants) into the cache and print their features."""
    from services.common.precision import make_variant

    names = _check_names(names)
    precs = _parse_precisions(precisions)
    cache = dir if dir is not None else _default_dir()
    rows: list[dict[str, object]] = []
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("building", total=len(names) * len(precs))
        for name in names:
            fp32: Path | None = None
            row = _row(name)
            paths = []
            for p in precs:
                progress.update(task, description=f"{name} {p}")
                t0 = time.perf_counter()
                fp32 = fp32 or zoo.build(name, cache)
                path = make_variant(fp32, p, cache)
                row[f"size_{p}"] = f"{path.stat().st_size / 1e6:.1f} MB"
                paths.append(str(path.relative_to(cache)) if path.is_relative_to(cache) else str(path))
                progress.advance(task)
                console.log(f"{name} {p}: {time.perf_counter() - t0:.1f} s")
            row["path"] = "\n".join(paths)
            rows.append(row)
    console.print(_table(rows, precs, cache))


@app.command("list")
def list_models(
    names: list[str] | None = typer.Argument(None, help="zoo models (default: all ten)"),
) -> None:
    """Print the zoo's Table I features without building any weights."""
    console.print(_table([_row(n) for n in _check_names(names)], None, None))


@app.command()
def sample(
    name: str = typer.Argument("digits", help="a trained built-in (one with a held-out labelled set)"),
    index: int = typer.Option(0, "--index", min=0, help="which held-out sample"),
    top_k: int = typer.Option(3, "--top-k", min=0, max=100, help="classes to ask for"),
    tensor: bool = typer.Option(False, "--tensor", help="ask for the output tensor instead of its top-k summary"),
) -> None:
    """Print a POST /infer body holding one real held-out sample; its label goes to stderr.

    The body asks for the output's summary (top-k classes) so the answer reads at a glance;
    ``--tensor`` asks for the raw output tensor, the API's default."""
    import json

    from services.common.tensors import encode

    if name not in zoo.ZOO:
        raise typer.BadParameter(f"unknown model {name!r}; known: {', '.join(zoo.BUILTIN_NAMES)}", param_hint="NAME")
    labelled = zoo.labelled_set(name)
    if labelled is None:
        trained = [n for n in zoo.BUILTIN_NAMES if zoo.spec(n).labelled_set]
        raise typer.BadParameter(f"{name} has random weights; models with real samples: {', '.join(trained)}")
    x, y = labelled
    if index >= len(x):
        raise typer.BadParameter(f"the held-out set has {len(x)} samples (0-{len(x) - 1})", param_hint="--index")
    body: dict[str, object] = {"model": name, "input": encode(x[index : index + 1]).model_dump()}
    if not tensor:
        body |= {"output_format": "summary", "top_k": top_k}
    typer.echo(json.dumps(body))
    Console(stderr=True).print(f"held-out sample {index} of {name}: label {int(y[index])}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()
