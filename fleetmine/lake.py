"""``fleetmine lake info|maintain``: the tables and their upkeep."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

if TYPE_CHECKING:
    pass

from fleetmine._common import (
    AddressOpt,
    LakeOpt,
    _human,
    console,
    lake_app,
    settings,
)


@lake_app.command("info")
def lake_info(lake: LakeOpt = None, address: AddressOpt = None) -> None:
    """Each table: Delta version, rows, files, bytes."""
    from storage.lake import Lake

    s = settings(lake, address)
    lk = Lake.from_settings(s)
    infos = lk.info()
    table = Table()
    for col in ("table", "version", "rows", "files", "bytes"):
        table.add_column(col, justify="left" if col == "table" else "right")
    for t in infos:
        table.add_row(t.name, str(t.version), f"{t.rows:,}", str(t.files), _human(t.bytes))
    if not infos:
        console.print(
            f"no tables yet at {lk.uri} (run `fleetmine ingest RAW` or `fleetmine demo`)", soft_wrap=True
        )
        return
    console.print(f"lake {lk.uri}", soft_wrap=True)
    console.print(table)


@lake_app.command("maintain")
def lake_maintain(
    lake: LakeOpt = None,
    address: AddressOpt = None,
    table: Annotated[list[str] | None, typer.Option("--table", help="Only these tables")] = None,
    retention_hours: Annotated[
        int | None, typer.Option(help="Vacuum files unreferenced for this long (default from settings)")
    ] = None,
    force_retention: Annotated[
        bool, typer.Option(help="Allow a retention below Delta's safety minimum (7 days)")
    ] = False,
) -> None:
    """Compact small files and vacuum, one table at a time, under a lake-wide lease."""
    from storage.lake import Lake

    s = settings(lake, address)
    lk = Lake.from_settings(s)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    reports = lk.maintain(
        holder,
        tables=table or None,
        retention_hours=s.vacuum_retention_hours if retention_hours is None else retention_hours,
        enforce_retention=not force_retention,
        ttl_s=s.lease_ttl_s,
    )
    console.print(f"maintenance of {lk.uri}", soft_wrap=True)
    out = Table()
    for col in ("table", "files compacted", "files written", "files vacuumed", "version"):
        out.add_column(col, justify="left" if col == "table" else "right")
    for r in reports:
        out.add_row(
            r["table"], str(r["files_removed"]), str(r["files_added"]), str(r["vacuumed"]), str(r["version"])
        )
    console.print(out)
