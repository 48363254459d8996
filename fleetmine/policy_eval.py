"""``fleetmine policy eval``: a policy version's open-loop errors per event type, and a
second version beside it with the difference (did the new checkpoint regress on hard brakes?)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fleetmine._common import AddressOpt, LakeOpt, console, literal, open_lake
from fleetmine.policies import PolicyArg, policy_app

if TYPE_CHECKING:
    from mining.policies.evaluation import GroupEval, PolicyEval

_HEADERS = (
    ("clips", "clips"),
    ("steps", "steps"),
    ("accel_ade", "accel ADE\nm/s²"),
    ("accel_fde", "accel FDE\nm/s²"),
    ("steer_ade", "steer ADE\ndeg"),
    ("steer_fde", "steer FDE\ndeg"),
    ("accel_over_share", "steps accel\nerr > 0.5"),
    ("brake_gap_mean_s", "brake gap\nmean s"),
    ("brake_gap_median_s", "brake gap\nmedian s"),
    ("brake_missed", "brakes\nmissed"),
)
_LOWER_IS_BETTER = {"accel_ade", "accel_fde", "steer_ade", "steer_fde", "accel_over_share", "brake_missed"}
_WIDTH = 150
"""The table is printed at least this wide: a narrow terminal would fold its figures."""


def _figure(g: GroupEval, name: str) -> str:
    v = getattr(g, name)
    if name == "brake_missed":
        return f"{g.brake_missed}/{g.brake_onsets}"
    if v is None:
        return "-"
    if name == "accel_over_share":
        return f"{100 * v:.1f}%"
    if isinstance(v, int):
        return str(v)
    return f"{v:.3f}"


def _delta(a: GroupEval, b: GroupEval, name: str, d: float | int | None) -> Text:
    if name in ("clips", "steps"):  # the same clips: nothing to subtract
        return Text("")
    if d is None:
        return Text("-")
    if name == "accel_over_share":
        text = f"{100 * d:+.1f} pp"
    elif isinstance(d, int):
        text = f"{d:+d}"
    else:
        text = f"{d:+.3f}"
    worse: bool | None = None
    if name in _LOWER_IS_BETTER:
        worse = d > 0 if d else None
    elif name.startswith("brake_gap"):  # early or late, further from the driver is worse
        x, y = abs(getattr(a, name)), abs(getattr(b, name))
        worse = y > x if y != x else None
    return Text(text, style="" if worse is None else "red" if worse else "green")


def _table(title: str, with_policy: bool) -> Table:
    table = Table(title=literal(title), title_justify="left")  # names in it are data, not markup
    table.add_column("event")
    if with_policy:
        table.add_column("policy")
    for _, header in _HEADERS:
        table.add_column(header, justify="right")
    return table


def _of(e: PolicyEval) -> str:
    return f" of dataset {e.dataset}" if e.dataset else ""


def _one(e: PolicyEval) -> Table:
    clips = e.groups[0].clips
    table = _table(f"{e.policy}: open-loop errors per event type, {clips} clips{_of(e)}", False)
    for g in e.groups:
        table.add_row(literal(g.event), *(_figure(g, n) for n, _ in _HEADERS))
    return table


def _two(a: PolicyEval, b: PolicyEval, diff: list[dict[str, Any]]) -> Table:
    clips = a.groups[0].clips
    table = _table(
        f"{a.policy} vs {b.policy} on the {clips} clips both scored{_of(a)}; "
        f"Δ = {b.policy} - {a.policy}, red where it got worse",
        True,
    )
    for ga, gb, d in zip(a.groups, b.groups, diff, strict=True):
        table.add_row(literal(ga.event), literal(a.policy), *(_figure(ga, n) for n, _ in _HEADERS))
        table.add_row("", literal(b.policy), *(_figure(gb, n) for n, _ in _HEADERS))
        table.add_row("", Text("Δ"), *(_delta(ga, gb, n, d[n]) for n, _ in _HEADERS), end_section=True)
    return table


@policy_app.command("eval")
def policy_eval(
    policy: PolicyArg,
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            help="Another version (NAME@VERSION) beside it, on the clips both scored, and the difference",
        ),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only this dataset version's clips (NAME or NAME@VERSION)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout (and nothing else)")] = False,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Open-loop evaluation per event type: ADE and FDE of each action, the share of steps whose
    accel error exceeds 0.5 m/s^2, the brake-onset gap and the driver's brakes the policy missed."""
    from mining.policies.evaluation import compare_policies, evaluate_policy
    from mining.policies.registry import resolve_policy

    lk = open_lake(lake, address)
    spec = resolve_policy(lk, policy)
    if compare is None:
        e = evaluate_policy(lk, spec, dataset)
        if as_json:
            typer.echo(json.dumps(e.as_dict(), allow_nan=False))
            return
        Console(width=max(console.width, _WIDTH)).print(_one(e))
        if e.left_out:
            console.print(
                f"{e.left_out} clips it scored are left out (not in the lake's clips or the dataset)"
            )
        return
    c = compare_policies(lk, spec, resolve_policy(lk, compare), dataset)
    if as_json:
        typer.echo(json.dumps(c.as_dict(), allow_nan=False))
        return
    Console(width=max(console.width, _WIDTH)).print(_two(c.first, c.other, c.diff))
    for e in (c.first, c.other):
        if e.left_out:
            console.print(
                literal(
                    f"{e.policy}: {e.left_out} clips it scored are left out (not scored by the other,"
                    " not in the lake's clips or the dataset)"
                )
            )
