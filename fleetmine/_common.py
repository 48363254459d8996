"""What every command shares: the Typer apps, consoles, ``--lake``/``--address`` options."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from storage.config import Settings

if TYPE_CHECKING:
    from rich.progress import Progress

    from storage.lake import Lake


app = typer.Typer(help="fleetmine: the data engine for self-driving fleets.", no_args_is_help=True)


lake_app = typer.Typer(help="Lake tables: info and maintenance.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")


model_app = typer.Typer(help="The encoder registry.", no_args_is_help=True)
app.add_typer(model_app, name="model")


token_app = typer.Typer(help="API tokens (stored hashed in the lake).", no_args_is_help=True)
app.add_typer(token_app, name="token")


dataset_app = typer.Typer(help="Curated, versioned datasets and their shards.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


console = Console(stderr=False)


err = Console(stderr=True)

MAX_MESSAGE = 2000
"""Characters of one message the CLI prints from data (an error, a warning): more is cut."""


def literal(message: str, prefix: str = "", style: str = "red", limit: int = MAX_MESSAGE) -> Text:
    """``message`` to print as it is: a rich ``Text`` is neither markup nor highlighted, so
    ``[/]`` in a dataset name, a vehicle or a drive's warning is printed, not interpreted.
    Cut to ``limit`` characters; ``prefix`` (``"error: "``) in ``style``."""
    if len(message) > limit:
        message = f"{message[:limit]}… ({len(message) - limit} more characters)"
    return Text.assemble((prefix, style), message) if prefix else Text(message)


LakeOpt = Annotated[
    str | None,
    typer.Option("--lake", help="Lake URI (default: $FLEETMINE_LAKE, else ./fleet-lake)"),
]


AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)"),
]


def settings(lake: str | None, address: str | None) -> Settings:
    return Settings().with_overrides(lake=lake, ray_address=address)


def open_lake(lake: str | None, address: str | None) -> Lake:
    from storage.lake import Lake

    return Lake.from_settings(settings(lake, address))


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


ModelOpt = Annotated[
    str | None, typer.Option("--model", help="NAME@VERSION or NAME (default: the current model)")
]

WaitOpt = Annotated[bool, typer.Option("--wait", help="On a cluster (http:// address): follow the run")]


def progress_bar(label: str, unit: str, detail: bool = False) -> Progress:
    """The CLI's progress bar of a job: ``label  ━━━━  12/40 unit  0:00:07`` on stderr
    (the time before the detail: a narrow terminal cuts the detail, not the time)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn(f"[bold]{label}"), BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn(unit)]
    columns.append(TimeElapsedColumn())
    if detail:
        columns.append(TextColumn("{task.fields[detail]}"))
    return Progress(*columns, console=err)


R = TypeVar("R")


def run_with_progress(label: str, unit: str, job: Callable[..., R]) -> R:
    """``job(on_plan=..., on_batch=...)`` under :func:`progress_bar`: the plan sets the
    total, each batch advances it (the contract of the runner's jobs: previews, scenarios)."""
    progress = progress_bar(label, unit)
    with progress:
        task = progress.add_task(unit, total=None)
        return job(
            on_plan=lambda n: progress.update(task, total=n), on_batch=lambda k: progress.advance(task, k)
        )


def exit_if_failed(failed: list[tuple[str, str]], shown: int = 20) -> None:
    """The first ``shown`` failures (``(item, reason)``) on stderr, and exit 3 when any."""
    for item, why in failed[:shown]:
        err.print(literal(f"{item}: {why}"))
    if failed:
        raise typer.Exit(3)
