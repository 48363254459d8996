"""``fleetmine schedule add|list|remove|pause|resume`` and ``fleetmine scheduler``."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer
from rich.table import Table

from fleetmine._common import AddressOpt, LakeOpt, app, console, err, open_lake, settings
from storage.errors import ConfigError

schedule_app = typer.Typer(help="Recurring jobs (kept in the lake's schedules table).", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


def parse_chain(words: list[str]) -> list[Any]:
    """``ingest RAW [--force] then embed [--model M] then mine`` -> job requests.

    A step is a registered job kind (``jobs.requests.KINDS``), its request's required
    fields as positional arguments in their order (``ingest RAW``, ``export NAME VERSION``),
    then ``--force`` / ``--model M``.
    """
    from jobs.requests import job_kind, parse_job

    chain: list[Any] = []
    part: list[str] = []
    for w in [*words, "then"]:
        if w != "then":
            part.append(w)
            continue
        if not part:
            raise ConfigError("empty step in the job chain (two 'then' in a row?)")
        kind, rest = part[0], part[1:]
        model = job_kind(kind).request
        params: dict[str, Any] = {}
        positional = [r for r in rest if not r.startswith("--")]
        if "--force" in rest:
            params["force"] = True
        if "--model" in rest:
            params["model"] = rest[rest.index("--model") + 1]
            positional.remove(params["model"])
        required = [name for name, f in model.model_fields.items() if f.is_required()]
        if len(positional) != len(required):
            raise ConfigError(f"{_takes(kind, required)}, got {positional}")
        params.update(zip(required, positional, strict=True))
        chain.append(parse_job(kind, params))
        part = []
    return chain


def _takes(kind: str, required: list[str]) -> str:
    if not required:
        return f"{kind} takes no positional arguments"
    names = " ".join(n.upper() for n in required)
    return f"{kind} takes {'one ' if len(required) == 1 else ''}{names}"


@schedule_app.command("add")
def schedule_add(
    name: Annotated[str, typer.Argument()],
    jobs: Annotated[list[str], typer.Argument(help="after --: ingest RAW then embed then mine")],
    every: Annotated[str | None, typer.Option(help="interval: 90s, 15m, 2h, 1d")] = None,
    cron: Annotated[str | None, typer.Option(help='cron expression, e.g. "*/15 * * * *" (UTC)')] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Add (or replace) a schedule: `schedule add hourly --every 1h -- ingest s3://raw then embed`."""
    from jobs.scheduler import add_schedule

    s = add_schedule(open_lake(lake, address), name, parse_chain(jobs), every, cron)
    chain = " then ".join(j.kind for j in s.jobs)
    console.print(
        f"schedule {name}: {chain}, {'every ' + every if every else 'cron ' + str(cron)}", markup=False
    )


@schedule_app.command("list")
def schedule_list(lake: LakeOpt = None, address: AddressOpt = None) -> None:
    """Schedules with their rhythm, state and last run."""
    import json

    from jobs.scheduler import list_schedules

    table = Table()
    for col in ("name", "jobs", "every/cron", "paused", "last run", "last status"):
        table.add_column(col)
    for r in list_schedules(open_lake(lake, address)):
        chain = " then ".join(j["kind"] for j in json.loads(r["jobs"]))
        rhythm = f"{r['every_s']:g}s" if r["every_s"] else str(r["cron"])
        last = f"{r['last_run_at']:%Y-%m-%d %H:%M:%S}" if r["last_run_at"] else "-"
        table.add_row(r["name"], chain, rhythm, "yes" if r["paused"] else "no", last, r["last_status"] or "-")
    console.print(table)


@schedule_app.command("remove")
def schedule_remove(name: str, lake: LakeOpt = None, address: AddressOpt = None) -> None:
    from jobs.scheduler import remove_schedule

    remove_schedule(open_lake(lake, address), name)
    console.print(f"schedule {name} removed")


@schedule_app.command("pause")
def schedule_pause(name: str, lake: LakeOpt = None, address: AddressOpt = None) -> None:
    from jobs.scheduler import set_paused

    set_paused(open_lake(lake, address), name, True)
    console.print(f"schedule {name} paused")


@schedule_app.command("resume")
def schedule_resume(name: str, lake: LakeOpt = None, address: AddressOpt = None) -> None:
    from jobs.scheduler import set_paused

    set_paused(open_lake(lake, address), name, False)
    console.print(f"schedule {name} resumed")


@app.command()
def scheduler(
    poll: Annotated[float, typer.Option(help="Seconds between checks for due schedules")] = 10.0,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Run the lake's schedules until stopped (one active scheduler per lake; others wait)."""
    from jobs.scheduler import run_scheduler

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_scheduler(
        settings(lake, address),
        poll_s=poll,
        stop=stop,
        on_state=lambda state: err.print(f"scheduler {state}", soft_wrap=True),
        on_run=lambda name, report: console.print(f"schedule {name}: {type(report).__name__} done"),
    )
