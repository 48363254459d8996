"""``fleetmine dataset create|export``: curated, versioned datasets."""

from __future__ import annotations

from typing import Annotated

import typer

from fleetmine._common import AddressOpt, LakeOpt, console, dataset_app, open_lake, settings
from storage.sql import literal


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
    from mining.datasets.curation import DatasetQuery, create_version

    lk = open_lake(lake, address)
    q = DatasetQuery.model_validate_json(query)
    row = create_version(lk, name, q)
    spans = ""
    if q.samples == "span":
        where = f"name = {literal(name)} AND version = {int(row['version'])}"
        spans = f"{lk.read('dataset_spans', columns=['span_id'], where=where).num_rows} spans of "
    console.print(
        f"{name}@{row['version']}: {spans}{row['clip_count']} clips (pinned to {row['lake_version']})",
        soft_wrap=True,
        markup=False,  # the name and paths are data
    )


@dataset_app.command("export")
def dataset_export(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (default: latest)")],
    shard_mb: Annotated[float, typer.Option(help="Target shard size")] = 512,
    fmt: Annotated[
        str, typer.Option("--format", help="webdataset (shards + manifest) or lerobot (LeRobotDataset v3.0)")
    ] = "webdataset",
    out: Annotated[
        str | None, typer.Option(help="lerobot: output folder (default: <lake>/datasets/NAME/V/lerobot)")
    ] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Write the version's WebDataset shards and manifest, or a LeRobotDataset v3.0 tree."""
    from jobs.requests import execute, parse_job
    from jobs.runner import default_runner
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
    params = {"name": name, "version": int(version), "shard_mb": shard_mb, "format": fmt, "out": out}
    job = parse_job("export", params)
    doc = execute(job, s, runner=default_runner(s.ray_address))
    if fmt == "lerobot":
        modes = ", ".join(
            f"{k}: {v['remux']} remuxed, {v['reencode']} re-encoded" for k, v in doc["videos"].items()
        )
        console.print(
            f"{name}@{version}: LeRobot v3.0, {doc['episodes']} episodes, {doc['frames']} frames "
            f"at {doc['fps']} fps ({modes}) in {doc['root']}",
            soft_wrap=True,
            markup=False,
        )
        return
    console.print(
        f"{name}@{version}: {doc['num_samples']} samples in {len(doc['shardlist'])} shards", markup=False
    )
