"""``fleetmine search``, ``corner-cases``, ``eval-mining``: the queries the API serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

if TYPE_CHECKING:
    from storage.lake import Lake

from jobs.cli._common import (
    AddressOpt,
    LakeOpt,
    ModelOpt,
    app,
    console,
    err,
    open_lake,
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
    labels: Annotated[
        Path | None, typer.Option("--labels", help="OUT/labels.json of `fleetmine synth`")
    ] = None,
    verdicts: Annotated[
        bool, typer.Option("--verdicts", help="score the ranking against reviewers' verdicts (`reviews`)")
    ] = False,
    k: Annotated[int, typer.Option("-k", min=1, max=10_000, help="--verdicts: the top k to score")] = 50,
    model: ModelOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json")] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Mining quality: against a synthetic fleet's labels (novelty vs baselines, more-like-this,
    dedup), or with --verdicts against what reviewers marked (precision@k)."""
    if (labels is None) == (not verdicts):
        err.print("give exactly one of --labels FILE or --verdicts")
        raise typer.Exit(2)
    if verdicts:
        _eval_verdicts(open_lake(lake, address), model, k, json_path)
        return
    assert labels is not None
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


def _eval_verdicts(lk: Lake, model: str | None, k: int, json_path: Path | None) -> None:
    from mining.reviews import verdict_precision

    r = verdict_precision(lk, model, k)
    console.print(
        f"{r.model}: top {r.k} by novelty ({r.ranked} ranked), {r.reviewed_total} clips reviewed "
        f"({r.confirmed_total} confirmed)"
    )
    t = Table(title=f"novelty ranking against verdicts, top {r.k}")
    for col in ("measure", "value"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    judged = "n/a" if r.precision_judged is None else f"{r.precision_judged:.2f}"
    t.add_row(f"precision@{r.k} (confirmed / reviewed in top k)", judged)
    t.add_row(f"precision@{r.k} strict (confirmed / k)", f"{r.precision_strict:.2f}")
    t.add_row("reviewed in top k", f"{r.reviewed_in_top}/{r.ranked}")
    t.add_row("mislabelled in top k", str(r.mislabelled_in_top))
    base = "n/a" if r.base_rate is None else f"{r.base_rate:.2f}"
    t.add_row("random ranking (confirmed / reviewed, all)", base)
    console.print(t)
    if json_path:
        json_path.write_text(json.dumps(r.as_dict(), indent=2))
