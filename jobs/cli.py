"""``fleetmine``: the command line. Every command takes ``--lake`` and ``--address``."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from storage.config import Settings
from storage.errors import FleetError
from storage.sql import literal

if TYPE_CHECKING:
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


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder for the raw fleet (and labels.json)")],
    vehicles: Annotated[int, typer.Option(min=1)] = 3,
    drives: Annotated[int, typer.Option(min=1, help="Drives per vehicle")] = 2,
    minutes: Annotated[float, typer.Option(min=0.5, help="Minutes per drive")] = 2.0,
    seed: Annotated[int, typer.Option()] = 0,
    rare_rate: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share of 10 s windows with a rare event")
    ] = 0.02,
    resolution: Annotated[str, typer.Option(help="WIDTHxHEIGHT")] = "640x360",
    fps: Annotated[int, typer.Option(min=5, max=60)] = 20,
    gop_seconds: Annotated[float, typer.Option(help="Keyframe interval")] = 1.0,
    duplicates: Annotated[
        int | None, typer.Option(help="Duplicate 30 s drives (default: one per 3 drives)")
    ] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Write a synthetic fleet in the raw layout, with ground-truth rare events in OUT/labels.json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ingest.synth.fleet import SynthConfig, _plan, synthesize

    try:
        width, height = (int(x) for x in resolution.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"resolution must be WIDTHxHEIGHT, got {resolution!r}") from None
    cfg = SynthConfig(
        vehicles=vehicles,
        drives=drives,
        minutes=minutes,
        seed=seed,
        rare_rate=rare_rate,
        width=width,
        height=height,
        fps=fps,
        gop_seconds=gop_seconds,
        duplicates=duplicates,
    )
    total = len(_plan(cfg))
    progress = Progress(
        TextColumn("[bold]synth"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("drives"),
        TimeElapsedColumn(),
        console=err,
    )
    with progress:
        task = progress.add_task("drives", total=total)
        labels = synthesize(out, cfg, on_drive=lambda _key: progress.advance(task))
    events = labels["events"]
    assert isinstance(events, list)
    console.print(
        f"wrote {total} drives to {out}: {len(events)} planted rare events, "
        f"{len(labels['duplicates'])} duplicate clip pairs (labels: {out / 'labels.json'})",  # type: ignore[arg-type]
        soft_wrap=True,
    )


@app.command()
def ingest(
    raw: Annotated[str, typer.Argument(help="Raw fleet upload tree: <vehicle>/<drive>/{cameras,can}/")],
    lake: LakeOpt = None,
    address: AddressOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Re-ingest drives already in the lake")] = False,
) -> None:
    """Decode drives under RAW not yet ingested. Exit 0: all ok; 3: some drives failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ingest.drive import DriveResult
    from jobs.ingest_job import run_ingest

    s = settings(lake, address)
    totals = {"clips": 0, "clip_frames": 0, "can_frames": 0, "bytes": 0}
    progress = Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("drives  {task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
    )
    task_id = progress.add_task("drives", total=None, detail="")

    def on_progress(event: str, result: DriveResult | None, counts: dict[str, int]) -> None:
        if event == "start":
            progress.update(task_id, total=counts["drives"])
            return
        for k in totals:
            totals[k] += counts.get(k, 0)
        detail = (
            f"{totals['clips']} clips, {totals['clip_frames']} frames, "
            f"{totals['can_frames']:,} CAN frames, {_human(totals['bytes'])}"
        )
        progress.update(task_id, advance=1, detail=detail)
        if result is not None and not result.ok:
            progress.console.print(f"[red]failed[/] {result.key}: {result.row.get('error')}", soft_wrap=True)

    with progress:
        report = run_ingest(raw, s, force=force, on_progress=on_progress)
    if report.resumed:
        console.print(f"resumed unfinished run {report.run_id}")
    if not report.ok and not report.failed:
        console.print(f"nothing new: {report.discovered} drives found, all already ingested ({s.lake})")
        raise typer.Exit(0)
    console.print(
        f"run {report.run_id}: {report.discovered} drives found, {report.unchanged} already ingested, "
        f"{len(report.ok)} ok, {len(report.failed)} failed",
        soft_wrap=True,
    )
    for key, reason in report.failed:
        console.print(f"  [red]failed[/] {key}: {reason}", soft_wrap=True)
    raise typer.Exit(report.exit_code)


ModelOpt = Annotated[
    str | None, typer.Option("--model", help="NAME@VERSION or NAME (default: the current model)")
]


@model_app.command("register")
def model_register(
    name: Annotated[str, typer.Argument()],
    kind: Annotated[str, typer.Option(help="builtin | onnx | torchscript")] = "onnx",
    uri: Annotated[str | None, typer.Option(help="The model file (local path or s3://)")] = None,
    dim: Annotated[int | None, typer.Option(help="Output dimension")] = None,
    params: Annotated[str, typer.Option(help="JSON: input_size, mean, std, layout")] = "{}",
    current: Annotated[bool, typer.Option("--current", help="Make it the current version")] = False,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Register an encoder at its next version (entries are immutable)."""
    from mining.registry import register

    lk = open_lake(lake, address)
    spec = register(lk, name, kind, uri, dim, json.loads(params), current=current)
    console.print(f"registered {spec.ref} ({spec.kind}, {spec.dim}-d){' [current]' if current else ''}")


@model_app.command("list")
def model_list(lake: LakeOpt = None, address: AddressOpt = None) -> None:
    """Registered encoders."""
    from mining.registry import list_models

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
    from mining.registry import set_current
    from storage.errors import ConfigError

    name, _, version = ref.partition("@")
    if not version.isdigit():
        raise ConfigError(f"give NAME@VERSION, got {ref!r}")
    set_current(open_lake(lake, address), name, int(version))
    console.print(f"{ref} is current")


@app.command()
def embed(model: ModelOpt = None, lake: LakeOpt = None, address: AddressOpt = None) -> None:
    """Embed every clip that lacks an embedding for the model (default: the current one)."""
    from mining.embed import run_embed

    with console.status("embedding clips..."):
        r = run_embed(settings(lake, address), model)
    console.print(f"{r.model}: {r.embedded} clips embedded, {r.already} already had vectors (run {r.run_id})")


@app.command()
def index(
    model: ModelOpt = None,
    kind: Annotated[
        str, typer.Option(help="flat | ivf-flat | ivf-pq, or auto: by size (kept from the saved index)")
    ] = "auto",
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Build (or extend) and persist the FAISS index of a model version."""
    from mining.index import IndexConfig
    from mining.queries import build_index

    r = build_index(settings(lake, address), model, None if kind == "auto" else IndexConfig(kind=kind))
    console.print(
        f"{r['model']}: {r['factory']} index of {r['vectors']} vectors ({r['added']} added"
        f"{', rebuilt' if r['rebuilt'] else ''}) at {r['uri']}",
        soft_wrap=True,
    )


@app.command()
def mine(model: ModelOpt = None, lake: LakeOpt = None, address: AddressOpt = None) -> None:
    """Score novelty, rarity and near-duplicates of every clip (one run in mining_scores)."""
    from mining.novelty import run_mine

    r = run_mine(settings(lake, address), model)
    console.print(
        f"{r.model}: {r.scored} clips scored against the {r.reference}, "
        f"{r.duplicates} near-duplicates (run {r.run_id})"
    )


@app.command()
def search(
    clip: Annotated[str, typer.Option("--clip", help="The example clip id")],
    k: Annotated[int, typer.Option("-k", min=1, max=1000)] = 10,
    where: Annotated[
        str | None, typer.Option(help="SQL predicate on clips, e.g. \"array_has(events, 'hard_brake')\"")
    ] = None,
    model: ModelOpt = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Clips most like CLIP (optionally among clips matching --where)."""
    from mining.queries import similar

    lk = open_lake(lake, address)
    table = Table()
    table.add_column("clip")
    table.add_column("distance", justify="right")
    for n in similar(lk, clip_id=clip, k=k, where=where, model=model):
        table.add_row(n.clip_id, f"{n.distance:.4f}")
    console.print(table)


@app.command("corner-cases")
def corner_cases_cmd(
    k: Annotated[int, typer.Option("-k", min=1, max=10000)] = 50,
    event: Annotated[str | None, typer.Option(help="Only clips with this trigger event")] = None,
    model: ModelOpt = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Clips ranked by novelty (duplicates left out)."""
    from mining.queries import corner_cases

    table = Table()
    for col in ("clip", "novelty", "rarity", "signal rarity", "cluster"):
        table.add_column(col, justify="left" if col == "clip" else "right")
    for r in corner_cases(open_lake(lake, address), k=k, event=event, model=model):
        table.add_row(
            r["clip_id"],
            f"{r['novelty']:.3f}",
            f"{r['rarity']:.2f}",
            f"{r['signal_rarity']:.2f}",
            str(r["cluster_id"]),
        )
    console.print(table)


@app.command("eval-mining")
def eval_mining(
    labels: Annotated[Path, typer.Option("--labels", help="OUT/labels.json of `fleetmine synth`")],
    model: ModelOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json")] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Mining quality on a synthetic fleet: novelty vs baselines, more-like-this, dedup."""
    from mining.evaluation import evaluate

    r = evaluate(open_lake(lake, address), labels, model)
    console.print(f"{r.model} on {r.clips} clips, {r.planted} planted rare clips (k = {r.k})")
    t = Table(title="novelty ranking, top k")
    for col in ("ranking", "recall@k", "average precision"):
        t.add_column(col, justify="left" if col == "ranking" else "right")
    t.add_row("fleetmine novelty", f"{r.recall:.2f}", f"{r.ap:.2f}")
    t.add_row("uniqueness (mean dist to 3-NN)", f"{r.recall_uniqueness:.2f}", f"{r.ap_uniqueness:.2f}")
    t.add_row("random", f"{r.recall_random:.2f}", f"{r.ap_random:.2f}")
    console.print(t)
    pt = Table(title="per event type (found in top k / planted)")
    pt.add_column("type")
    pt.add_column("found", justify="right")
    for typ, (found, total) in sorted(r.per_type.items()):
        pt.add_row(typ, f"{found}/{total}")
    console.print(pt)
    if r.more_like_this_p5 is None:
        console.print("more like this: n/a (no event type planted twice in this fleet)")
    else:
        console.print(f"more like this: precision@5 = {r.more_like_this_p5:.2f}")
    console.print(
        f"duplicates: {r.dup_truth} planted pairs, {r.dup_predicted} predicted links, "
        f"recall {r.dup_recall:.2f}, precision {r.dup_precision:.2f}"
    )
    if json_path:
        json_path.write_text(json.dumps(r.as_dict(), indent=2))


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="reader | curator | operator")] = "reader",
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Print a new token for NAME (only its hash is kept; store it now)."""
    from api.auth import create_token

    console.print(create_token(open_lake(lake, address), name, role), soft_wrap=True)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument()], lake: LakeOpt = None, address: AddressOpt = None
) -> None:
    """Revoke NAME's token."""
    from api.auth import revoke_token

    revoke_token(open_lake(lake, address), name)
    console.print(f"revoked {name}")


@dataset_app.command("create")
def dataset_create(
    name: Annotated[str, typer.Argument()],
    query: Annotated[
        str, typer.Option("--query", help='JSON, e.g. {"events": ["hard_brake"], "dedup": true}')
    ] = "{}",
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """A new immutable version of NAME from QUERY."""
    from mining.curation import DatasetQuery, create_version

    row = create_version(open_lake(lake, address), name, DatasetQuery.model_validate_json(query))
    console.print(
        f"{name}@{row['version']}: {row['clip_count']} clips (pinned to {row['lake_version']})",
        soft_wrap=True,
    )


@dataset_app.command("export")
def dataset_export(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (default: latest)")],
    shard_mb: Annotated[float, typer.Option(help="Target shard size")] = 512,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Write the version's WebDataset shards and manifest."""
    from mining.curation import export_version
    from storage.errors import ConfigError

    lk = open_lake(lake, address)
    name, _, version = ref.partition("@")
    if not version:
        versions = (
            lk.read("datasets", columns=["version"], where=f"name = {literal(name)}")
            .column("version")
            .to_pylist()
        )
        if not versions:
            raise ConfigError(f"no dataset {name!r}")
        version = str(max(versions))
    s = settings(lake, address)
    doc = export_version(
        lk, name, int(version), int(shard_mb * 1024 * 1024), runner="ray", address=s.ray_address
    )
    console.print(f"{name}@{version}: {doc['num_samples']} samples in {len(doc['shardlist'])} shards")


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without tokens (local use only)")] = False,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """The catalog API (OpenAPI at /openapi.json)."""
    import uvicorn

    from api.app import create_app

    if no_auth:
        err.print("[bold red]AUTH IS OFF[/]: anyone who reaches this port can read and change the lake")
    uvicorn.run(
        create_app(settings(lake, address), auth=not no_auth), host=host, port=port, log_level="warning"
    )


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Smaller inputs, a minute or two")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write results here")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only these benchmarks")] = None,
    catalog: Annotated[
        int | None,
        typer.Option("--catalog", min=100, help="Only the catalog benchmark, at N and N/10 synthetic clips"),
    ] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Measured throughput, each figure next to its baseline from the same run."""
    from jobs.bench import BenchContext, run_all

    if catalog is not None and not only:
        only = ["catalog"]
    with tempfile.TemporaryDirectory(prefix="fleetmine-bench-") as tmp:
        results = run_all(BenchContext(quick=quick, workdir=Path(tmp), catalog=catalog), only)
    table = Table(title="fleetmine bench" + (" (quick)" if quick else ""))
    for col in ("name", "measured", "baseline", "ratio", "goal", "met"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in results:
        table.add_row(
            r.name,
            f"{r.measured:,.1f} {r.unit}",
            f"{r.baseline:,.1f} {r.unit} ({r.baseline_name})",
            f"{r.ratio:.2f}x",
            r.goal + (" (figure)" if r.goal_on_measured else ""),
            "-" if r.met is None else "yes" if r.met else "NO",
        )
    Console(width=max(console.width, 150)).print(table)
    if json_path:
        json_path.write_text(json.dumps([r.as_dict() for r in results], indent=2))


@app.command()
def demo(
    lake: LakeOpt = None,
    address: AddressOpt = None,
    raw: Annotated[
        Path | None, typer.Option(help="Where the synthetic fleet goes (default: beside the lake)")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    vehicles: Annotated[int, typer.Option(min=1)] = 3,
    drives: Annotated[int, typer.Option(min=1)] = 2,
    minutes: Annotated[float, typer.Option(min=0.5)] = 2.0,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Stop after printing the URLs")] = False,
) -> None:
    """The main job on the embedded default: synth -> ingest -> ... (each stage as it lands)."""

    s = settings(lake, address)
    raw_dir = raw or (Path(s.lake).parent / "fleet-raw" if "://" not in s.lake else Path("fleet-raw"))
    console.rule("[bold]1. synth[/]: a synthetic fleet with planted rare events")
    if (raw_dir / "labels.json").exists():
        console.print(f"reusing the fleet at {raw_dir} (delete it to regenerate)", soft_wrap=True)
    else:
        synth(
            out=raw_dir,
            vehicles=vehicles,
            drives=drives,
            minutes=minutes,
            seed=seed,
            rare_rate=0.06,  # a few more corner cases than a real fleet, so the demo has some to show
            lake=s.lake,
            address=address,
        )
    console.rule("[bold]2. ingest[/]: video + CAN into Delta tables on Ray")
    try:
        ingest(raw=str(raw_dir), lake=s.lake, address=address, force=False)
    except typer.Exit as done:
        if done.exit_code not in (0, None):
            raise
    lake_info(lake=s.lake, address=address)
    console.rule("[bold]3. embed[/]: every clip with the current model")
    embed(model=None, lake=s.lake, address=address)
    console.rule("[bold]4. index[/]: FAISS, persisted in the lake")
    index(model=None, lake=s.lake, address=address)
    console.rule("[bold]5. mine[/]: novelty, rarity, near-duplicates")
    mine(model=None, lake=s.lake, address=address)
    corner_cases_cmd(k=10, event=None, model=None, lake=s.lake, address=address)
    labels = raw_dir / "labels.json"
    eval_mining(labels=labels, model=None, json_path=None, lake=s.lake, address=address)
    console.rule("[bold]6. dataset + export[/]: the novel, de-duplicated clips as WebDataset shards")
    from api.auth import create_token
    from mining.curation import DatasetQuery, create_version, export_version
    from storage.lake import Lake

    lk = Lake.from_settings(s)
    row = create_version(lk, "demo-corner-cases", DatasetQuery(min_novelty=0.7, dedup=True))
    doc = export_version(lk, "demo-corner-cases", row["version"], shard_bytes=64 * 1024 * 1024)
    console.print(
        f"demo-corner-cases@{row['version']}: {doc['num_samples']} clips in {len(doc['shardlist'])} shards"
    )
    console.rule("[bold]7. serve[/]: the catalog API")
    token = create_token(lk, "demo", "operator")
    base = f"http://{host}:{port}"
    console.print(f"web UI:    {base}/ui/login?token={token}", soft_wrap=True)
    console.print(f"API docs:  {base}/docs", soft_wrap=True)
    console.print(f"token:     {token}", soft_wrap=True)
    console.print(
        f"manifest:  {base}/v1/datasets/demo-corner-cases/versions/{row['version']}/manifest", soft_wrap=True
    )
    console.print(
        f"try:       curl -H 'Authorization: Bearer {token}' {base}/v1/mining/corner-cases?k=5",
        soft_wrap=True,
    )
    if no_serve:
        return
    serve(host=host, port=port, no_auth=False, lake=s.lake, address=address)


def main() -> None:
    try:
        app()
    except FleetError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
