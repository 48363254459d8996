"""``fleetmine demo``: the main job on the embedded default, composed of the other commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fleetmine._common import (
    AddressOpt,
    LakeOpt,
    app,
    console,
    settings,
)
from fleetmine.ingest import ingest, synth
from fleetmine.lake import lake_info
from fleetmine.models import embed, index, mine
from fleetmine.policies import policy_train, shadow
from fleetmine.queries import corner_cases_cmd, eval_mining
from fleetmine.serve import serve


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
    console.rule("[bold]2. ingest[/]: video + CAN into Delta tables on Ray, the scenarios over new drives")
    from mining.scenarios import add_scenario, shipped
    from storage.lake import Lake

    for name, text in shipped().items():  # the triggers as scenarios: ingest runs them (spans in the lake)
        add_scenario(Lake.from_settings(s), name, text)
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
    console.rule("[bold]6. shadow[/]: a baseline policy beside the driver; where they disagree most")
    from mining.policies.registry import list_policies

    if not any(p.name == "baseline" for p in list_policies(Lake.from_settings(s))):
        policy_train(name="baseline", baseline=True, max_drives=500, lake=s.lake, address=address)
    shadow(policy="baseline", lake=s.lake, address=address, wait=False)
    corner_cases_cmd(
        k=5, event=None, model=None, by="disagreement", policy="baseline", lake=s.lake, address=address
    )
    console.rule("[bold]7. dataset + export[/]: the novel, de-duplicated clips as WebDataset shards")
    from api.auth import create_token
    from jobs.export_job import export_version
    from mining.datasets.curation import DatasetQuery, create_version

    lk = Lake.from_settings(s)
    row = create_version(lk, "demo-corner-cases", DatasetQuery(min_novelty=0.7, dedup=True))
    doc = export_version(lk, "demo-corner-cases", row["version"], shard_bytes=64 * 1024 * 1024)
    console.print(
        f"demo-corner-cases@{row['version']}: {doc['num_samples']} clips in {len(doc['shardlist'])} shards"
    )
    console.rule("[bold]8. serve[/]: the catalog API")
    token = create_token(lk, "demo", "operator")
    base = f"http://{host}:{port}"
    console.print(f"web UI:    {base}/ui/login (sign in with the token below)", soft_wrap=True)
    console.print(f"API docs:  {base}/docs", soft_wrap=True)
    console.print(f"token:     {token}", soft_wrap=True)
    console.print(
        f"manifest:  {base}/v1/datasets/demo-corner-cases/versions/{row['version']}/manifest", soft_wrap=True
    )
    console.print(
        f"try:       curl -H 'Authorization: Bearer {token}' {base}/v1/mining/corner-cases?k=5",
        soft_wrap=True,
    )
    console.print(
        f"           curl -H 'Authorization: Bearer {token}' '{base}/v1/clips?scenario=sudden_stop'",
        soft_wrap=True,
    )
    console.print(
        f"           curl -H 'Authorization: Bearer {token}' "
        f"'{base}/v1/mining/corner-cases?by=disagreement&policy=baseline&k=5'",
        soft_wrap=True,
    )
    console.print(
        'words:     search in words ("night, heavy rain") with a CLIP or SigLIP export of your own: '
        'README, "Asking in words"',
        soft_wrap=True,
    )
    if no_serve:
        return
    if not address:
        _stop_private_ray()
    serve(host=host, port=port, no_auth=False, lake=s.lake, address=address)


def _stop_private_ray() -> None:
    """The private local Ray the stages started is not the server's (a job it runs starts
    one of its own): left up, it held ~500 MB and a few percent of a core idle for as long
    as the demo served, and a SIGTERM took 11 s to stop the demo (its GCS and raylet)."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
