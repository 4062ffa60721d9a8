"""``autoscale qtable ...``: offline work on Q tables.

autoscale qtable replay LOG... [--device mi8pro] [--policy autoscale] [--out table.json | --redis [--merge]]

``replay`` trains a Q table from decision logs (``AUTOSCALE_DECISION_LOG``) with the decider's own
Q-learning update (``services.core.policies.qlearning.Replayer``) and the learner settings of this
environment (``AUTOSCALE_LEARNING_RATE``, ``_Q_INIT``, ``_LR_SCHEDULE``, ``_SEED``, ...: give it the
deployment's), then writes the table in the export format ``POST /qtable/import`` accepts, or
imports it into the Redis at ``REDIS_URL`` directly. Give rotated logs oldest first
(``decisions.jsonl.2 decisions.jsonl.1 decisions.jsonl``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from services.common.settings import Settings
from services.core.decision_log import DecisionRecord
from services.core.policies import make_policy
from services.core.policies.base import Policy
from services.core.policies.qlearning import QParams, QTable, Replayer, ReplaySummary

app = typer.Typer(help="Offline work on Q tables: train one from decision logs.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # messages name files: never wrapped mid-path
MAX_LINE_BYTES = 1 << 20  # a record is a few kB; a longer line is not one


class BadLine(Exception):
    """A line of a decision log that is not a version-1 record."""

    def __init__(self, path: Path, line_no: int, reason: str) -> None:
        super().__init__(f"{path}:{line_no}: {reason}")


def _reason(exc: ValidationError) -> str:
    err = exc.errors()[0]
    if err["type"] == "json_invalid":
        return f"not JSON ({err['msg']})"
    where = ".".join(str(p) for p in err["loc"]) or "line"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"


def read_records(path: Path, progress: Progress | None = None, skip_invalid: bool = False) -> Iterator[DecisionRecord]:
    """The records of one log in order; ``BadLine`` (file:line: what is wrong) at the first bad
    line, or, with ``skip_invalid``, a warning per bad line (the first five) and a count."""
    task = progress.add_task(path.name, total=path.stat().st_size) if progress is not None else None
    bad = 0
    with path.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            if task is not None and progress is not None:
                progress.advance(task, len(line))
            if not line.strip():
                continue
            try:
                if len(line) > MAX_LINE_BYTES:
                    raise BadLine(path, line_no, f"line longer than {MAX_LINE_BYTES} bytes")
                try:
                    yield DecisionRecord.model_validate_json(line)
                except ValidationError as exc:
                    raise BadLine(path, line_no, _reason(exc)) from None
            except BadLine as exc:
                if not skip_invalid:
                    raise
                bad += 1
                if bad <= 5:
                    console.print(f"[yellow]skipped[/yellow] {exc}", highlight=False)
    if bad:
        console.print(f"[yellow]{path}: {bad} invalid line(s) skipped[/yellow]", highlight=False)


def replay_logs(
    logs: list[Path],
    params: QParams,
    *,
    device: str | None = None,
    policies: list[str] | None = None,
    skip_invalid: bool = False,
    show_progress: bool = True,
    learner: Callable[[QTable], Policy] | None = None,
) -> tuple[Replayer, int]:
    """Feed every record of ``logs`` (in order) to a ``Replayer``; returns it and the lines read."""
    replayer = Replayer(params, device=device, policies=policies or None, learner=learner)
    lines = 0
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not show_progress,
    ) as progress:
        for path in logs:
            for record in read_records(path, progress, skip_invalid):
                replayer.feed(record)
                lines += 1
    return replayer, lines


def deployed_learner(s: Settings) -> Callable[[QTable], Policy] | None:
    """The decider's learner as these settings configure it, over a given table: the prior learner
    (with the configured device profiles) or None for the Q table alone."""
    if s.learner != "prior":
        return None
    from services.common.config_files import load_mesh

    mesh = load_mesh(s.edge_device, s.peer_device, s.cloud_device, s.profiles_dir)
    return lambda table: make_policy("autoscale", settings_or_params=s, store=table, mesh=mesh)


async def _import_to_redis(s: Settings, table: dict[str, Any], mode: str) -> str:
    from services.decider.qstore import QStore

    url = s.redis_url.get_secret_value()
    store = QStore(url, device=str(table["device"]), learning_rate=s.learning_rate, discount=s.discount, seed=s.seed)
    await store.start()
    try:
        result = await store.import_(table, mode=mode)
    finally:
        await store.stop()
    return (
        f"imported into Redis: {result.states} states, {result.entries} entries ({result.mode}), "
        f"version {result.version}"
    )


def _print_summary(summary: ReplaySummary, lines: int) -> None:
    skipped = summary.skipped_device + summary.skipped_policy
    console.print(
        f"replayed {lines} lines: {summary.updates} updates ({skipped} skipped: {summary.skipped_device} of another "
        f"device, {summary.skipped_policy} of another policy) -> device {summary.device}: {summary.states} states, "
        f"{summary.entries} entries, {summary.visits_total} visits",
        highlight=False,
    )


@app.command()
def replay(
    logs: Annotated[list[Path], typer.Argument(help="decision logs, oldest first", exists=True, dir_okay=False)],
    device: Annotated[str | None, typer.Option(help="train this phone's table (default: the first record's)")] = None,
    policy: Annotated[list[str] | None, typer.Option(help="only what this policy served (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(help="write the table here (the export format)")] = None,
    redis: Annotated[bool, typer.Option("--redis", help="import it into the Redis at REDIS_URL")] = False,
    merge: Annotated[bool, typer.Option(help="with --redis: overwrite only the replayed entries")] = False,
    skip_invalid: Annotated[bool, typer.Option(help="skip malformed lines instead of stopping")] = False,
) -> None:
    """Train a Q table from decision logs with the decider's Q-learning update."""
    if out is None and not redis:
        raise typer.BadParameter("give --out FILE, --redis, or both", param_hint="--out")
    try:
        s = Settings()
    except ValidationError as exc:
        console.print(f"[red]bad configuration[/red] (AUTOSCALE_* environment variables):\n{exc}")
        raise typer.Exit(2) from exc
    if redis and not s.redis_url.get_secret_value():
        raise typer.BadParameter("--redis needs REDIS_URL (the mesh's Redis)", param_hint="--redis")
    try:
        replayer, lines = replay_logs(
            logs,
            QParams.from_settings(s),
            device=device,
            policies=policy,
            skip_invalid=skip_invalid,
            learner=deployed_learner(s),
        )
    except BadLine as exc:
        console.print(f"[red]invalid decision log line[/red] {exc}\nnothing was written", highlight=False)
        raise typer.Exit(2) from None
    summary = replayer.summary()
    _print_summary(summary, lines)
    if summary.updates == 0:
        console.print("[red]no record to learn from[/red]: nothing was written")
        raise typer.Exit(1)
    table = replayer.export()
    if out is not None:
        out.write_text(json.dumps(table, indent=1))
        console.print(f"wrote {out} (POST it to /qtable/import)", highlight=False)
    if redis:
        console.print(asyncio.run(_import_to_redis(s, table, "merge" if merge else "replace")), highlight=False)
