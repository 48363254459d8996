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

from fleetmine import (  # noqa: F401  (they register their commands)
    datasets,
    demo,
    ingest,
    lake,
    models,
    policies,
    policy_eval,
    queries,
    runs,
    scenarios,
    schedules,
    serve,
    tags,
    tokens,
)
from fleetmine._common import app, err, literal
from storage.errors import FleetError

__all__ = ["app", "main"]


def main() -> None:
    """Run the command; a fleetmine error (or a value pydantic refused) is one line on stderr,
    exit 2. The message is printed as text, never as rich markup: it quotes names, paths and
    warnings that came with the data (``[/]`` in a name raised MarkupError), and it is cut
    (rich's highlighter spent minutes of CPU on a 900 KB one)."""
    from pydantic import ValidationError

    try:
        app()
    except FleetError as exc:
        err.print(literal(str(exc), prefix="error: "))
        sys.exit(2)
    except ValidationError as exc:  # a request model built from options (an unknown --kind)
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        err.print(literal(problems, prefix="error: "))
        sys.exit(2)
