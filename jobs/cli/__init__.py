"""``fleetmine``: the command line. Every command takes ``--lake`` and ``--address``.

One module per command group (``lake``, ``ingest``, ``models``, ``queries``, ``tokens``,
``datasets``, ``serve``, ``demo``), each registering its commands on the shared Typer
apps of ``_common``. A new command goes in the module of its group; a job command
builds a request (``jobs.requests``) and runs it with ``execute``.
"""

from __future__ import annotations

import sys

if sys.argv[1:2] == ["serve"]:  # before the imports below load deltalake: see jobs.allocator
    from jobs.allocator import configure_for_serving

    configure_for_serving()

from jobs.cli import (  # noqa: F401  (they register their commands)
    datasets,
    demo,
    ingest,
    lake,
    models,
    queries,
    runs,
    schedules,
    serve,
    tokens,
)
from jobs.cli._common import app, err
from storage.errors import FleetError

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except FleetError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(2)
