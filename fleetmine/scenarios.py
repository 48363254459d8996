"""``fleetmine scenario add|list|show|run``: scenarios as data (:mod:`fleetmine_scenarios`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fleetmine._common import (
    AddressOpt,
    LakeOpt,
    app,
    console,
    err,
    exit_if_failed,
    literal,
    open_lake,
    run_with_progress,
    settings,
)
from storage.errors import ConfigError

scenario_app = typer.Typer(
    help="Patterns over time in the signals, versioned in the lake and run over every drive.",
    no_args_is_help=True,
)
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("add")
def scenario_add(
    name: Annotated[str, typer.Argument(help="lowercase letters, digits and _")] = "",
    expr: Annotated[
        str | None, typer.Option(help="The scenario, e.g. 'speed_mps < 0.3 for >= 2s then ...'")
    ] = None,
    file: Annotated[Path | None, typer.Option(help="A file holding the scenario's text")] = None,
    shipped: Annotated[bool, typer.Option("--shipped", help="Add the definitions fleetmine ships")] = False,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Add a scenario version: a new text under NAME is its next version; a text NAME
    already has gives that version back."""
    from mining.scenarios import add_scenario
    from mining.scenarios import shipped as shipped_defs

    lk = open_lake(lake, address)
    if shipped:
        for n, text in shipped_defs().items():
            row = add_scenario(lk, n, text)
            console.print(f"{row['name']}@{row['version']}: {row['text']}")
        return
    if not name or (expr is None) == (file is None):
        raise ConfigError("scenario add NAME with one of --expr TEXT or --file PATH (or --shipped)")
    if file is not None:
        if file.stat().st_size > 64_000:
            raise ConfigError(f"{file}: a scenario file is at most 64 KB")
        expr = file.read_text()
    assert expr is not None
    row = add_scenario(lk, name, expr)
    console.print(f"{row['name']}@{row['version']}: {row['text']}")


@scenario_app.command("list")
def scenario_list(lake: LakeOpt = None, address: AddressOpt = None) -> None:
    """Every scenario version, with its hits so far."""
    from mining.scenarios import list_scenarios

    lk = open_lake(lake, address)
    lk.create_tables(["scenario_scans"])
    scans = lk.read("scenario_scans", columns=["name", "version", "hits"]).to_pylist()
    table = Table("scenario", "drives run", "hits", "text")
    for r in list_scenarios(lk):
        mine = [s for s in scans if (s["name"], s["version"]) == (r["name"], r["version"])]
        table.add_row(
            f"{r['name']}@{r['version']}", str(len(mine)), str(sum(s["hits"] for s in mine)), r["text"]
        )
    console.print(table)


@scenario_app.command("show")
def scenario_show(
    ref: Annotated[str, typer.Argument(help="NAME (its latest version) or NAME@V")],
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Spans to print")] = 20,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """A version's text and its spans (drive, start, end, clips)."""
    from mining.scenarios import resolve_scenario
    from storage.sql import literal as sql

    lk = open_lake(lake, address)
    row = resolve_scenario(lk, ref)
    console.print(literal(f"{row['name']}@{row['version']}: {row['text']}", style=""))
    lk.create_tables(["scenario_hits"])
    where = f"name = {sql(row['name'])} AND version = {int(row['version'])}"
    hits = sorted(
        lk.read("scenario_hits", where=where).to_pylist(), key=lambda h: (h["drive_id"], h["start"])
    )
    table = Table("drive", "start", "end", "clips")
    for h in hits[:limit]:
        table.add_row(
            h["drive_id"], h["start"].isoformat(), h["end"].isoformat(), ", ".join(h["clip_ids"] or [])
        )
    console.print(table)
    console.print(f"{len(hits)} spans")


@scenario_app.command("run")
def scenario_run(
    refs: Annotated[
        list[str] | None, typer.Argument(help="NAME or NAME@V; default: every name's latest")
    ] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Run scenario versions over the drives they have not seen (Ray on a cluster)."""

    from jobs.scenario_job import run_scenarios

    s = settings(lake, address)
    report = run_with_progress("scenarios", "drives", lambda **hooks: run_scenarios(s, refs or None, **hooks))
    console.print(
        f"{report.drives} drives run, {report.hits} spans found, {report.already} drives already run, "
        f"{len(report.failed)} failed (run {report.run_id})"
    )
    exit_if_failed(report.failed)


@scenario_app.command("export")
def scenario_export(
    ref: Annotated[str, typer.Argument(help="NAME (its latest version) or NAME@V")],
    campaign_path: Annotated[Path, typer.Option("--campaign", help="Where to write the campaign JSON")],
    platform: Annotated[list[str] | None, typer.Option(help="Shipped platforms (default: all)")] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Write a scenario as a fleet collection campaign: the definition, and per platform
    the CAN messages (ids, DBC) each column it reads comes from."""
    import json

    from ingest.campaign import campaign
    from mining.scenarios import resolve_scenario

    doc = campaign(resolve_scenario(open_lake(lake, address), ref), platform or None)
    try:
        campaign_path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    except OSError as exc:
        raise ConfigError(f"cannot write {campaign_path}: {exc.strerror}") from None
    console.print(f"{doc['scenario']['name']}@{doc['scenario']['version']} -> {campaign_path}")
    for name, cols in doc["missing"].items():
        err.print(literal(f"{name} lacks {', '.join(cols)}: a recorder on it cannot run this scenario"))
