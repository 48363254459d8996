"""``fleetmine model ...``, ``embed``, ``index``, ``mine``: the encoder registry and the mining jobs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

if TYPE_CHECKING:
    pass

from fleetmine._common import (
    AddressOpt,
    LakeOpt,
    ModelOpt,
    WaitOpt,
    app,
    console,
    literal,
    model_app,
    open_lake,
    settings,
)
from mining.encoders import KINDS


@model_app.command("register")
def model_register(
    name: Annotated[str, typer.Argument()],
    kind: Annotated[str, typer.Option(help=" | ".join(KINDS))] = "onnx",
    uri: Annotated[
        str | None,
        typer.Option(
            help="The model file (local path or s3://); text-image: the folder optimum-cli export onnx wrote"
        ),
    ] = None,
    dim: Annotated[
        int | None, typer.Option(help="Output dimension (text-image: read from the model)")
    ] = None,
    params: Annotated[
        str,
        typer.Option(
            help="JSON: onnx: input_size, mean, std, layout; text-image: overrides, e.g. max_length"
        ),
    ] = "{}",
    current: Annotated[bool, typer.Option("--current", help="Make it the current version")] = False,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Register an encoder at its next version (entries are immutable)."""
    from mining.encoders.registry import register

    lk = open_lake(lake, address)
    with console.status(
        f"checking {uri} and storing it in the lake..." if kind == "text-image" else "registering..."
    ):
        spec = register(lk, name, kind, uri, dim, json.loads(params), current=current)
    console.print(f"registered {spec.ref} ({spec.kind}, {spec.dim}-d){' [current]' if current else ''}")


@model_app.command("import")
def model_import(
    name: Annotated[str, typer.Argument(help="A pretrained encoder a package ships: efficientnet-lite0")],
    current: Annotated[bool, typer.Option("--current", help="Make it the current version")] = False,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Convert a pretrained encoder installed with fleetmine to ONNX, store it in the lake, register it."""
    from mining.encoders.pretrained import PRETRAINED, import_pretrained

    lk = open_lake(lake, address)
    with console.status(f"converting {name} to ONNX..."):
        spec, new = import_pretrained(lk, name, current=current)
    what = "registered" if new else "already registered as"
    console.print(f"{what} {spec.ref} ({spec.kind}, {spec.dim}-d) at {spec.uri}", soft_wrap=True)
    console.print(f"  from {PRETRAINED[name].source}", soft_wrap=True)
    if spec.is_current:
        console.print(f"{spec.ref} is current: `fleetmine embed` back-fills every clip for it")


@model_app.command("list")
def model_list(lake: LakeOpt = None, address: AddressOpt = None) -> None:
    """Registered encoders."""
    from mining.encoders.registry import list_models

    table = Table()
    for col in ("model", "kind", "dim", "uri", "current"):
        table.add_column(col)
    for m in list_models(open_lake(lake, address)):
        table.add_row(m.ref, m.kind, str(m.dim), m.uri or "", "yes" if m.is_current else "")
    console.print(table)


@model_app.command("set-current")
def model_set_current(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION")], lake: LakeOpt = None, address: AddressOpt = None
) -> None:
    """Make NAME@VERSION the current version of NAME (and the lake's current model)."""
    from mining.encoders.registry import set_current
    from storage.errors import ConfigError

    name, _, version = ref.partition("@")
    if not version.isdigit():
        raise ConfigError(f"give NAME@VERSION, got {ref!r}")
    set_current(open_lake(lake, address), name, int(version))
    console.print(f"{ref} is current")


@app.command()
def embed(
    model: ModelOpt = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Embed every clip that lacks an embedding for the model (default: the current one)."""
    from fleetmine.runs import submit_if_cluster
    from jobs.embed_job import EmbedJob
    from jobs.requests import execute

    if submit_if_cluster(EmbedJob(model=model), lake, address, wait):
        return
    with console.status("embedding clips..."):
        r = execute(EmbedJob(model=model), settings(lake, address))
    console.print(f"{r.model}: {r.embedded} clips embedded, {r.already} already had vectors (run {r.run_id})")
    for cid, reason in r.failed[:20]:
        console.print(literal(f"{cid}: {reason}", "  failed ", "red"), soft_wrap=True)
    if r.failed:
        console.print(f"{len(r.failed)} clips could not be embedded (they stay pending)")
        raise typer.Exit(3)


@app.command()
def index(
    model: ModelOpt = None,
    kind: Annotated[
        str, typer.Option(help="flat | ivf-flat | ivf-pq, or auto: by size (kept from the saved index)")
    ] = "auto",
    shard_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1_000_000_000,
            help="Vectors per shard: the index as shards by date range, each built as a task of its own "
            "(on the cluster's nodes with --address); default: one index",
        ),
    ] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Build (or extend) and persist the FAISS index of a model version."""
    from fleetmine.runs import submit_if_cluster
    from jobs.index_job import IndexJob
    from jobs.requests import execute

    job = IndexJob(model=model, index_kind=kind, shard_size=shard_size)
    if submit_if_cluster(job, lake, address, wait):
        return
    r = execute(job, settings(lake, address))
    for part in (r, r.get("appearance")):
        if part is None:
            continue
        console.print(
            f"{part['model']}{'' if part is r else ' appearance'}: {part['factory']} index of "
            f"{part['vectors']} vectors ({part['added']} added{', rebuilt' if part.get('rebuilt') else ''}) "
            f"at {part['uri']}",
            soft_wrap=True,
        )
        for s in part.get("shards") or ():
            console.print(
                f"  shard {s['number']}: {s['first_day']}..{s['last_day']}, {s['n']} vectors, "
                f"built on {s['node']}",
                soft_wrap=True,
            )


@app.command()
def mine(
    model: ModelOpt = None,
    full: Annotated[
        bool, typer.Option("--full", help="re-score and re-rank every clip against the cluster model")
    ] = False,
    refit: Annotated[
        bool,
        typer.Option(
            "--refit", help="fit the cluster model again (k-means, signal medians) and re-score every clip"
        ),
    ] = False,
    lake: LakeOpt = None,
    address: AddressOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Score novelty, rarity and near-duplicates: the clips added since the last run
    (against its fit), or every clip with --full (one run in mining_scores). The
    cluster model is fitted again with --refit or once the corpus has grown 1.5x."""
    from fleetmine.runs import submit_if_cluster
    from jobs.mine_job import MineJob
    from jobs.requests import execute

    if submit_if_cluster(MineJob(model=model, full=full, refit=refit), lake, address, wait):
        return
    r = execute(MineJob(model=model, full=full, refit=refit), settings(lake, address))
    console.print(
        f"{r.model}: {r.scored} clips scored ({r.mode}) against the {r.reference}, "
        f"{r.duplicates} near-duplicates (run {r.run_id}, fit of {r.base_run})"
    )
