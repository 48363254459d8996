"""``fleetmine serve`` and ``fleetmine bench``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    pass

from fleetmine._common import (
    AddressOpt,
    LakeOpt,
    app,
    console,
    err,
    settings,
)


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without tokens (local use only)")] = False,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """The catalog API (OpenAPI at /openapi.json)."""
    import logging

    import uvicorn
    from rich.markup import escape

    from api.access_log import AccessLog
    from api.app import create_app, lean_server_process

    lean_server_process()

    if no_auth:
        err.print("[bold red]AUTH IS OFF[/]: anyone who reaches this port can read and change the lake")
    conf = settings(lake, address)
    # A cluster's GCS address (HOST:PORT, or "local" for a private Ray): this server joins it
    # and actors there hold the sharded indexes; a dashboard http:// address submits jobs only.
    hold = bool(address) and not str(address).startswith(("http://", "https://"))
    app_ = create_app(conf, auth=not no_auth, hold_shards=hold)
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    err.print(
        f"fleetmine catalog of {escape(conf.lake)} on [bold]{base}[/] "
        f"(API docs {base}/docs, web UI {base}/ui/); Ctrl-C stops it",
        highlight=False,
        soft_wrap=True,  # one line: a URL cut across lines is no URL to copy
    )
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    access = logging.getLogger("fleetmine.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    # proxy_headers off: uvicorn would believe X-Forwarded-For from loopback (its default),
    # i.e. from anyone behind a proxy on this host. The app believes only
    # Settings.trusted_proxies (FLEETMINE_TRUSTED_PROXIES), see api.proxies. uvicorn's access
    # log is off: it prints query strings, where shard grants live (api.access_log).
    uvicorn.run(
        AccessLog(app_),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Smaller inputs, a minute or two")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write results here")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only these benchmarks")] = None,
    catalog: Annotated[
        int | None,
        typer.Option(
            "--catalog",
            min=1000,
            help="Only the catalog benchmarks (routes; index, search, memory; index and mine memory,"
            " incremental mining; dataset create and export plan), at N and N/10 synthetic clips;"
            " filtered search against LanceDB at N; search across shards vs one index at N;"
            " index and mine on 1 vs 2 shards and Ray nodes at N",
        ),
    ] = None,
    text_image: Annotated[
        list[str] | None,
        typer.Option(
            "--text-image",
            help="A text-image export folder (optimum-cli export onnx) to measure; repeat for several",
        ),
    ] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Measured throughput, each figure next to its baseline from the same run."""
    from fleetmine.bench import BenchContext, run_all

    if catalog is not None and not only:
        only = [
            "catalog-routes",
            "catalog",
            "catalog-mining",
            "catalog-datasets",
            "filtered-search",
            "sharded-search",
            "cluster-scale",
        ]
    with tempfile.TemporaryDirectory(prefix="fleetmine-bench-") as tmp:
        ctx = BenchContext(
            quick=quick, workdir=Path(tmp), catalog=catalog, text_image=tuple(text_image or ())
        )
        results = run_all(ctx, only)
    table = Table(title="fleetmine bench" + (" (quick)" if quick else ""))
    for col in ("name", "measured", "baseline", "ratio", "goal", "met"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in results:
        table.add_row(
            r.name,
            f"{r.measured:,.1f} {r.unit}" if r.measured == r.measured else "not measured",
            f"{r.baseline:,.1f} {r.unit} ({r.baseline_name})" if r.baseline == r.baseline else "-",
            f"{r.ratio:.2f}x",
            r.goal + (" (figure)" if r.goal_on_measured else ""),
            "-" if r.met is None else "yes" if r.met else "NO",
        )
    Console(width=max(console.width, 150)).print(table)
    if json_path:
        json_path.write_text(json.dumps([r.as_dict() for r in results], indent=2))
