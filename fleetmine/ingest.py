"""``fleetmine synth`` and ``fleetmine ingest``: raw fleets in, drives decoded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from fleetmine._common import (
    AddressOpt,
    LakeOpt,
    WaitOpt,
    _human,
    app,
    console,
    exit_if_failed,
    literal,
    progress_bar,
    run_with_progress,
    settings,
)


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

    from ingest.synth.fleet import SynthConfig, plan_drives, synthesize

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
    total = len(plan_drives(cfg))
    progress = progress_bar("synth", "drives")
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
    wait: WaitOpt = False,
) -> None:
    """Decode drives under RAW not yet ingested. Exit 0: all ok; 3: some drives failed."""
    from fleetmine.runs import submit_if_cluster
    from jobs.ingest_job import IngestJob

    if submit_if_cluster(IngestJob(raw=raw, force=force), lake, address, wait):
        return

    from ingest.drive import DriveResult
    from jobs.ingest_job import IngestJob
    from jobs.requests import execute

    s = settings(lake, address)
    totals = {"clips": 0, "clip_frames": 0, "can_frames": 0, "bytes": 0}
    progress = progress_bar("ingest", "drives", detail=True)
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
            progress.console.print(
                literal(f"{result.key}: {result.row.get('error')}", "failed ", "red"), soft_wrap=True
            )

    with progress:
        report = execute(IngestJob(raw=raw, force=force), s, on_progress=on_progress)
    if report.resumed:
        console.print(f"resumed unfinished run {report.run_id}")
    if not report.discovered:
        console.print(
            literal(f"no drive folders (<vehicle>/<drive>/ with cameras/ or can/) found under {raw}"),
            soft_wrap=True,
        )
    elif not report.ok and not report.failed:
        console.print(f"nothing new: {report.discovered} drives found, all already ingested ({s.lake})")
    else:
        console.print(
            f"run {report.run_id}: {report.discovered} drives found, {report.unchanged} already ingested, "
            f"{len(report.ok)} ok, {len(report.failed)} failed ({len(report.warned)} ok with warnings)",
            soft_wrap=True,
        )
        clips, dense = report.counts.get("clips", 0), report.counts.get("dense_clips", 0)
        if clips:
            console.print(
                f"looked closer at {dense} of {clips} clips ({dense / clips:.1%}): "
                "dense frames where a signal trigger fired"
            )
        if "scenario_hits" in report.counts:
            console.print(
                f"scenarios: {report.counts['scenario_hits']} spans in the new drives "
                f"(run {report.scenarios_run_id}; `fleetmine scenario show NAME`)"
            )
    if report.scenario_warning:
        console.print(literal(report.scenario_warning, "  scenarios: ", "yellow"), soft_wrap=True)
    for key, warnings in report.warned:
        console.print(
            literal(f"{key}: {'; '.join(warnings)}", "  ok with warnings ", "yellow"), soft_wrap=True
        )
    for key, reason in report.failed:
        console.print(literal(f"{key}: {reason}", "  failed ", "red"), soft_wrap=True)
    if report.still_failing:
        console.print(
            f"{len(report.still_failing)} drives of earlier runs still failing for their content "
            "(not retried until their files change, or --force):",
            soft_wrap=True,
        )
        for key, reason in report.still_failing:
            console.print(literal(f"{key}: {reason}", "  still failing ", "red"), soft_wrap=True)
    raise typer.Exit(report.exit_code)


@app.command()
def previews(lake: LakeOpt = None, address: AddressOpt = None) -> None:
    """Back-fill H.264 browser previews for clips whose codec browsers do not play (HEVC).

    Ingest makes them as it cuts such clips; this is for a lake ingested before, or with
    FLEETMINE_PREVIEWS=0. The originals stay what exports and shards serve."""

    from jobs.previews_job import run_previews

    s = settings(lake, address)
    report = run_with_progress("previews", "clips", lambda **hooks: run_previews(s, **hooks))
    console.print(
        f"{report.made} previews made, {report.already} clips already had one, "
        f"{len(report.failed)} failed (run {report.run_id})"
    )
    exit_if_failed(report.failed)
