"""``fleetmine search``, ``corner-cases``, ``eval-mining``: the queries the API serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.table import Table

if TYPE_CHECKING:
    from storage.lake import Lake

from fleetmine._common import (
    AddressOpt,
    LakeOpt,
    ModelOpt,
    app,
    console,
    err,
    literal,
    open_lake,
)


@app.command()
def search(
    clip: Annotated[str | None, typer.Option("--clip", help="The example clip id")] = None,
    text: Annotated[
        str | None,
        typer.Option(
            "--text",
            help='Words describing the scene, e.g. "a red car at night" (a text-image model: '
            "`fleetmine model register NAME --kind text-image`)",
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=1000)] = 10,
    where: Annotated[
        str | None, typer.Option(help="SQL predicate on clips, e.g. \"array_has(events, 'hard_brake')\"")
    ] = None,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="Only clips a span of this scenario (NAME or NAME@V) overlaps; repeat for any of several"
        ),
    ] = None,
    model: ModelOpt = None,
    space: Annotated[
        str | None,
        typer.Option(
            help="--clip only. clip (the default): the whole vector (near duplicates first); "
            "behaviour: what the car did and what moved, whatever the street looked like"
        ),
    ] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Clips most like CLIP, or those TEXT describes best (optionally among clips matching
    --where and --scenario). --text ranks by a text-image version's cosine similarity
    (--model, or the text-image version in use), highest first."""
    from mining.scenarios import resolve_filter
    from storage.filters import ClipFilter

    if (clip is None) == (text is None):
        err.print("give exactly one of --clip CLIP_ID or --text WORDS")
        raise typer.Exit(2)
    if text is not None and space is not None:
        err.print("--space goes with --clip: a text query ranks by what the clips' frames show")
        raise typer.Exit(2)
    lk = open_lake(lake, address)
    if scenario:
        among = resolve_filter(lk, ClipFilter(scenarios=scenario)).predicate()
        where = f"({where}) AND {among}" if where else among
    if text is not None:
        _by_text(lk, text, k, where, model)
        return
    from mining.search.queries import similar

    assert clip is not None
    hits = similar(lk, clip_id=clip, k=k, where=where, model=model, space=space or "clip")
    table = Table()
    table.add_column("clip", no_wrap=True, min_width=max((len(n.clip_id) for n in hits), default=4))
    table.add_column("distance", justify="right")
    for n in hits:
        table.add_row(n.clip_id, f"{n.distance:.4f}")
    console.print(table)


def _by_text(lk: Lake, text: str, k: int, where: str | None, model: str | None) -> None:
    from mining.search.by_text import similar_to_text

    spec, hits = similar_to_text(lk, text, k=k, where=where, model=model)
    if not hits:
        err.print(literal(f"no clip of {spec.ref}'s index matches the filters"), soft_wrap=True)
        return
    table = Table(title=literal(f"{spec.ref}: cosine similarity to the text, highest first"))
    table.add_column("clip", no_wrap=True, min_width=max(len(h.clip_id) for h in hits))  # whole ids
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("distance", justify="right", no_wrap=True)
    for h in hits:
        table.add_row(h.clip_id, f"{h.score:.6f}", f"{h.distance:.6f}")
    console.print(table)


@app.command("corner-cases")
def corner_cases_cmd(
    k: Annotated[int, typer.Option("-k", min=1, max=10000)] = 50,
    event: Annotated[str | None, typer.Option(help="Only clips with this trigger event")] = None,
    by: Annotated[
        Literal["novelty", "disagreement"],
        typer.Option(
            help="novelty: the latest mining run; disagreement: where --policy's actions were "
            "furthest from the driver's (`fleetmine shadow`)",
        ),
    ] = "novelty",
    policy: Annotated[
        str | None, typer.Option(help="--by disagreement: NAME@VERSION, or NAME for its latest version")
    ] = None,
    model: ModelOpt = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Clips ranked by novelty (duplicates left out) or by a policy's disagreement with the driver."""
    from storage.errors import ConfigError

    if by == "disagreement":
        from mining.policies.ranking import registered

        lk = open_lake(lake, address)
        if policy is None:
            raise ConfigError(
                f"--by disagreement needs --policy NAME@VERSION; registered: {registered(lk) or 'none'}"
            )
        if model is not None:
            raise ConfigError("--model goes with --by novelty; --by disagreement ranks by --policy")
        _by_disagreement(lk, policy, k, event)
        return
    if policy is not None:
        raise ConfigError("--policy goes with --by disagreement")
    from mining.search.queries import corner_cases

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


def _by_disagreement(lk: Lake, ref: str, k: int, event: str | None) -> None:
    from mining.policies.ranking import policy_spec, top_disagreement

    spec = policy_spec(lk, ref)
    rows = top_disagreement(lk, spec, k, event)
    if not rows:
        scored = "" if event is None else f" with event {event}"
        err.print(
            literal(f"no clip{scored} scored by {spec.ref}: run `fleetmine shadow --policy {spec.ref}`"),
            soft_wrap=True,
        )
        return
    table = Table(
        title=f"{spec.ref} against the driver: disagreement, the worst step (s in the clip), "
        "mean |error| of accel (m/s^2) and steering (deg), brake-onset gap (s, late > 0)"
    )
    table.add_column("clip", no_wrap=True, min_width=max(len(r["clip_id"]) for r in rows))  # whole ids
    for col in ("disagreement", "worst s", "accel", "steer", "brake gap"):
        table.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    table.add_column("events")
    for r in rows:
        table.add_row(
            r["clip_id"],
            _num(r["disagreement"], 3),
            _num(r["worst_step_s"], 2),
            _num(r["accel_mean_abs"], 3),
            _num(r["steer_mean_abs"], 2),
            _num(r["brake_onset_gap_s"], 2),
            literal(", ".join(r["events"])),
        )
    console.print(table)


def _num(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


@app.command("eval-mining")
def eval_mining(
    labels: Annotated[
        Path | None, typer.Option("--labels", help="OUT/labels.json of `fleetmine synth`")
    ] = None,
    verdicts: Annotated[
        bool, typer.Option("--verdicts", help="score the ranking against reviewers' verdicts (`reviews`)")
    ] = False,
    consistency: Annotated[
        bool,
        typer.Option(
            "--consistency",
            help="footage without labels: are a drive's two halves nearer each other than other drives'?",
        ),
    ] = False,
    compare: Annotated[
        list[str] | None,
        typer.Option("--compare", help="another model version (NAME@VERSION), side by side; repeatable"),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=10_000, help="--verdicts: the top k to score")] = 50,
    model: ModelOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json")] = None,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Mining quality: against a synthetic fleet's labels (novelty vs baselines, more-like-this,
    dedup), with --consistency on real footage (neighbours' consistency within drives), or
    with --verdicts against what reviewers marked (precision@k). --compare puts more model
    versions beside the first, on the same labels and clips."""
    if sum((labels is not None, verdicts, consistency)) != 1:
        err.print("give exactly one of --labels FILE, --consistency or --verdicts")
        raise typer.Exit(2)
    lk = open_lake(lake, address)
    if verdicts:
        _eval_verdicts(lk, model, k, json_path)
        return
    from mining.encoders.registry import resolve
    from mining.scores.evaluation import drive_consistency, evaluate

    refs = [resolve(lk, model).ref, *(resolve(lk, c).ref for c in compare or [])]
    if consistency:
        cons = [drive_consistency(lk, ref) for ref in refs]
        ct = Table(title="neighbours' consistency: a drive's first half against every drive's second half")
        ct.add_column("")
        for c in cons:
            ct.add_column(c.model, justify="right")

        def fig(c: Any, text: str) -> str:
            return "n/a" if c.why_not else text

        ct.add_row("drives", *(str(c.drives) for c in cons))
        ct.add_row("own half nearest (top-1)", *(fig(c, f"{c.top1:.2f}") for c in cons))
        ct.add_row("own half nearer than another's (AUC)", *(fig(c, f"{c.auc:.2f}") for c in cons))
        ct.add_row("random", *("0.50" for _ in cons))
        ct.add_row(
            "mean distance: own / others'",
            *(fig(c, f"{c.own_distance:.3f} / {c.other_distance:.3f}") for c in cons),
        )
        console.print(ct)
        for c in cons:
            if c.why_not:
                err.print(literal(f"{c.model}: n/a: {c.why_not}"), soft_wrap=True)
        if json_path:
            json_path.write_text(json.dumps([c.as_dict() for c in cons], indent=2))
        return
    assert labels is not None
    reports = [evaluate(lk, labels, ref) for ref in refs]
    r0 = reports[0]
    console.print(f"{r0.clips} clips, {r0.planted} planted rare clips (k = {r0.k})")
    t = Table(title="novelty ranking, top k: recall@k / average precision")
    t.add_column("ranking")
    for r in reports:
        t.add_column(r.model, justify="right")
    t.add_row("fleetmine novelty", *(f"{r.recall:.2f} / {r.ap:.2f}" for r in reports))
    t.add_row(
        "uniqueness (mean dist to 3-NN)",
        *(f"{r.recall_uniqueness:.2f} / {r.ap_uniqueness:.2f}" for r in reports),
    )
    t.add_row("random", *(f"{r.recall_random:.2f} / {r.ap_random:.2f}" for r in reports))
    types = sorted({typ for r in reports for typ in r.per_type})
    for typ in types:
        t.add_row(f"  {typ} (found / planted)", *(_found(r.per_type.get(typ)) for r in reports))
    t.add_row(
        "more like this: precision@5",
        *(f"{_opt(r.more_like_this_p5)} ({r.more_like_this_space})" for r in reports),
    )
    t.add_row(
        "  over the hits possible (min(5, same type))",
        *(_opt(r.more_like_this_p5_attainable) for r in reports),
    )
    t.add_row("  in the whole vector", *(_opt(r.more_like_this_p5_clip) for r in reports))
    t.add_row("  random", *(_opt(r.more_like_this_p5_random) for r in reports))
    t.add_row(
        "duplicates: recall / precision", *(f"{r.dup_recall:.2f} / {r.dup_precision:.2f}" for r in reports)
    )
    t.add_row("  planted pairs / predicted links", *(f"{r.dup_truth} / {r.dup_predicted}" for r in reports))
    console.print(t)
    if json_path:
        out = reports[0].as_dict() if len(reports) == 1 else [r.as_dict() for r in reports]
        json_path.write_text(json.dumps(out, indent=2))


def _found(x: tuple[int, int] | None) -> str:
    return f"{x[0]}/{x[1]}" if x else "-"


def _opt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _eval_verdicts(lk: Lake, model: str | None, k: int, json_path: Path | None) -> None:
    from mining.scores.reviews import verdict_precision

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
