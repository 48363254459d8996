"""``fleetmine tags add|list|run|show``: zero-shot tags, in words, scored by a text-image model."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from fleetmine._common import (
    AddressOpt,
    LakeOpt,
    WaitOpt,
    app,
    console,
    err,
    exit_if_failed,
    literal,
    open_lake,
    run_with_progress,
    settings,
)

tags_app = typer.Typer(
    help="Zero-shot tags: clips described in words, scored by a text-image model's text side.",
    no_args_is_help=True,
)
app.add_typer(tags_app, name="tags")

RefsArg = Annotated[
    list[str] | None, typer.Argument(help="NAME (its latest version) or NAME@V; default: every name's latest")
]


def _prompts(prompts: tuple[str, ...], limit: int = 200) -> Text:
    return literal(" | ".join(prompts), limit=limit)


@tags_app.command("add")
def tags_add(
    name: Annotated[str, typer.Argument(help="letters, digits, '-' and '_' (night, rain, pedestrian)")],
    prompt: Annotated[
        list[str],
        typer.Option("--prompt", help="What the tag looks like, in words; repeat for more phrasings"),
    ],
    threshold: Annotated[
        float | None,
        typer.Option(help="The cosine a clip's best prompt must reach (default 0.2; see `tags show`)"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="A text-image version, NAME@V or NAME (default: the current one with a text side)"),
    ] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Add a tag's next version (the latest version back when it is the same definition)."""
    from mining.tags import DEFAULT_THRESHOLD, add_tag

    lk = open_lake(lake, address)
    tag = add_tag(lk, name, list(prompt), DEFAULT_THRESHOLD if threshold is None else threshold, model)
    console.print(
        Text.assemble(f"{tag.ref} on ", literal(tag.model), f" at {tag.threshold:g}: ", _prompts(tag.prompts))
    )
    console.print(f"next: fleetmine tags run {tag.ref}")


@tags_app.command("list")
def tags_list(lake: LakeOpt = None, address: AddressOpt = None) -> None:
    """Every tag version: its model, threshold and prompts."""
    from mining.tags import list_tags

    table = Table("tag", "model", "threshold", "prompts")
    for t in list_tags(open_lake(lake, address)):
        table.add_row(t.ref, literal(t.model), f"{t.threshold:g}", _prompts(t.prompts))
    console.print(table)


@tags_app.command("run")
def tags_run(
    refs: RefsArg = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Score every clip each tag version has not scored (its model's stored vectors; Ray on a cluster)."""
    from fleetmine.runs import submit_if_cluster
    from jobs.tags_job import TagsJob, run_tags

    req = TagsJob(tags=refs or [])
    if submit_if_cluster(req, lake, address, wait):
        return
    s = settings(lake, address)
    r = run_with_progress("tags", "batches", lambda **hooks: run_tags(s, list(req.tags) or None, **hooks))
    if not r.tags:
        console.print("no tags yet: fleetmine tags add NAME --prompt 'what it looks like'")
        return
    console.print(
        f"{', '.join(r.tags)}: {r.scored} (clip, tag) pairs scored, {r.passed} passing, "
        f"{r.already} already scored (run {r.run_id})"
    )
    if r.blank:
        console.print(f"{r.blank} clips had a blank vector (no keyframe): no score, not passing")
    if r.unembedded:
        err.print(
            f"{r.unembedded} (clip, tag) pairs wait for a vector of their tag's model "
            "(fleetmine embed --model NAME@V)"
        )
    exit_if_failed(r.failed)


@tags_app.command("show")
def tags_show(
    refs: RefsArg = None,
    every: Annotated[bool, typer.Option("--all", help="Every version, not only each name's latest")] = False,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """How many clips each tag holds: clips scored, passing, their share (to balance a dataset)."""
    from mining.tags import latest_tags, list_tags, resolve_tags, tag_counts

    lk = open_lake(lake, address)
    tags = resolve_tags(lk, refs) if refs else (list_tags(lk) if every else latest_tags(lk))
    table = Table("tag", "model", "threshold", "scored", "passing", "share", "prompts")
    for c in tag_counts(lk, tags):
        share = "-" if c.share is None else f"{100 * c.share:.1f} %"
        t = c.tag
        table.add_row(
            t.ref,
            literal(t.model),
            f"{t.threshold:g}",
            str(c.scored),
            str(c.passing),
            share,
            _prompts(t.prompts, 80),
        )
    console.print(table)
    if not tags:
        console.print("no tags yet: fleetmine tags add NAME --prompt 'what it looks like'")
