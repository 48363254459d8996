"""``fleetmine jobs list|status|logs|cancel`` (state in ``runs``) and the submitted-job entry."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from fleetmine._common import AddressOpt, LakeOpt, app, console, literal, open_lake, settings

jobs_app = typer.Typer(help="Job runs: submitted or run here (the lake's runs table).", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

FINAL = ("succeeded", "partial", "failed", "cancelled")


def submit_if_cluster(req: Any, lake: str | None, address: str | None, wait: bool) -> bool:
    """With an ``http://`` address, submit ``req`` through Ray's Job Submission API, print its
    run id (following it with ``--wait``) and return True; otherwise False (run it here)."""
    s = settings(lake, address)
    if not (s.ray_address or "").startswith(("http://", "https://")):
        return False
    from jobs.submit import submit

    run_id = submit(req, s, confined=False)  # a person's own run: any path they can name
    console.print(run_id)
    if wait:
        raise typer.Exit(_follow(run_id, lake, address))
    return True


def _follow(run_id: str, lake: str | None, address: str | None) -> int:
    from jobs.submit import get_run

    lk, where = open_lake(lake, address), settings(lake, address).ray_address
    with console.status(f"{run_id}: waiting") as st:
        while (row := get_run(lk, run_id, where))["status"] not in FINAL:
            st.update(f"{run_id}: {row['status']} {row['counts'] or ''}")
            time.sleep(2)
    console.print(f"{run_id}: {row['status']} {row['counts']}", markup=False, highlight=False)
    for err in json.loads(row["errors"] or "[]")[:20]:
        console.print(literal(str(err), prefix="  ", style=""), soft_wrap=True)
    return {"succeeded": 0, "partial": 3}.get(row["status"], 1)


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option(min=1)] = 20, lake: LakeOpt = None, address: AddressOpt = None
) -> None:
    """Recent runs, newest first."""
    from jobs.submit import list_runs

    table = Table()
    for col in ("run", "kind", "status", "started", "finished", "counts"):
        table.add_column(col)
    for r in list_runs(open_lake(lake, address), limit):
        table.add_row(  # Text: a row's strings are data, never markup
            Text(r["run_id"]),
            Text(r["kind"] or ""),
            Text(r["status"] or ""),
            f"{r['started_at']:%Y-%m-%d %H:%M:%S}" if r["started_at"] else "",
            f"{r['finished_at']:%H:%M:%S}" if r["finished_at"] else "",
            literal(r["counts"] or "", limit=200),
        )
    console.print(table)


@jobs_app.command("status")
def jobs_status(
    run_id: str,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it until it ends")] = False,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """One run: state, parameters, counters, per-item errors."""
    from jobs.submit import get_run

    if wait:
        raise typer.Exit(_follow(run_id, lake, address))
    row = get_run(open_lake(lake, address), run_id, settings(lake, address).ray_address)
    doc = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
    for k in ("params", "counts", "errors"):
        doc[k] = json.loads(row[k] or "null")
    console.print_json(json.dumps(doc))


@jobs_app.command("logs")
def jobs_logs(run_id: str, lake: LakeOpt = None, address: AddressOpt = None) -> None:
    """The run's output (a submitted job's log), else its counters and errors."""
    from jobs.submit import logs

    s = settings(lake, address)
    console.print(logs(open_lake(lake, address), run_id, s.ray_address), markup=False, soft_wrap=True)


@jobs_app.command("cancel")
def jobs_cancel(run_id: str, lake: LakeOpt = None, address: AddressOpt = None) -> None:
    """Stop a submitted run."""
    from jobs.submit import cancel

    s = settings(lake, address)
    console.print(f"{run_id}: {cancel(open_lake(lake, address), run_id, s.ray_address)}", markup=False)


@app.command("run-job", hidden=True)
def run_job(
    request: Annotated[str | None, typer.Argument()] = None, lake: LakeOpt = None, address: AddressOpt = None
) -> None:
    """Inside a submitted job: run REQUEST (JSON; default: the one a submission put in the
    environment, FLEETMINE_JOB_REQUEST) and keep its runs row current."""
    from jobs.submit import run_submitted

    raise typer.Exit(run_submitted(request, settings(lake, address)))
