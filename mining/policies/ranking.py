"""Disagreement as a ranking: the clips where a policy version was furthest from the driver.

``policy_errors`` holds one row per (policy version, clip); its ``disagreement`` (in units of
the version's ``error_scale``, see ``storage/tables/policy_errors.py``) ranks clips the way
``novelty`` does for a model. What reads it here reads one version's rows by a predicate on
``(policy, policy_version)``, and only what it answers reaches Python: the top ``k`` sorted
by the engine (:func:`top_disagreement`), the ids over a threshold (:func:`clips_over`).

A clip with nothing to compare (``steps`` 0, ``disagreement`` null) is in no ranking, and
neither is one whose score is NaN; an infinite score (a policy that answered inf) ranks
first, shown as null, since JSON has no infinity.
"""

from __future__ import annotations

import math
from typing import Any

from mining.policies.registry import PolicySpec, parse_ref, registered_refs, resolve_policy
from storage.errors import ConfigError, TableNotFoundError
from storage.lake import Lake
from storage.objectstore import reachable
from storage.query import run_sql
from storage.sql import in_set, literal
from storage.tables.policy_errors import SPEC as ERRORS

__all__ = [
    "FIGURES",
    "check_ref",
    "clips_over",
    "has_scores",
    "policy_spec",
    "registered",
    "top_disagreement",
]

FIGURES = (
    "disagreement",
    "steps",
    "worst_step_s",
    "worst_accel_err",
    "worst_steer_err",
    "accel_mean_abs",
    "accel_max_abs",
    "accel_fde",
    "steer_mean_abs",
    "steer_max_abs",
    "steer_fde",
    "accel_steps_over",
    "brake_onset_driver_s",
    "brake_onset_policy_s",
    "brake_onset_gap_s",
)
"""The per-clip figures a ranking row carries (the scalar columns of ``policy_errors``)."""

_COLUMNS = ["clip_id", "drive_id", "date", *FIGURES]
_RANKED = "disagreement IS NOT NULL AND NOT isnan(disagreement)"
_ORDER = ["disagreement DESC", "clip_id ASC"]  # ties go to the lower id, as novelty's lists do

# A name as registration allows it (letters, digits, '-', '_'; 64 at most), then an optional
# version written as a plain number: ``x@y``, ``@1``, ``a@01`` or ``a@²`` (a digit to
# ``str.isdigit``, not to ``int``) never reach the registry.


def check_ref(ref: str) -> str:
    """``ref`` unchanged when it is ``NAME`` or ``NAME@VERSION``; else a ConfigError that
    quotes at most 64 characters of it."""
    parse_ref(ref)
    return ref


def registered(lake: Lake) -> list[str]:
    """Every registered ``NAME@V``, for the messages that name the valid ones."""
    return registered_refs(lake)


def policy_spec(lake: Lake, ref: str) -> PolicySpec:
    """The version ``ref`` names (``NAME``: its latest); a ConfigError naming the registered
    versions for a malformed or unknown ref."""
    try:
        check_ref(ref)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; registered: {registered(lake) or 'none'}") from None
    return resolve_policy(lake, ref)  # an unknown one: its message names the registered ones


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def top_disagreement(lake: Lake, spec: PolicySpec, k: int, event: str | None = None) -> list[dict[str, Any]]:
    """The ``k`` clips ``spec`` disagreed with most (of ``event``'s clips, if given), highest
    first: ``clip_id``, ``drive_id``, ``date``, :data:`FIGURES` and the clip's ``events``.
    [] when the version has scored no clip (it was never shadow-run)."""
    where = f"{spec.rows()} AND {_RANKED}"
    try:
        if event is None:
            top = lake.query(ERRORS.name, columns=_COLUMNS, where=where, order_by=_ORDER, limit=int(k))
        else:
            # the event's clips as a semi-join the engine runs: its TopK keeps k rows
            cols = ", ".join(f'"{c}"' for c in _COLUMNS)
            sql = (
                f'SELECT {cols} FROM "{ERRORS.name}" WHERE {where} AND clip_id IN '
                f"(SELECT clip_id FROM clips WHERE array_has(events, {literal(event)})) "
                f"ORDER BY {', '.join(_ORDER)} LIMIT {int(k)}"
            )
            tables = {ERRORS.name: lake.snapshot(ERRORS.name), "clips": lake.snapshot("clips")}
            with reachable(lake.location(ERRORS.name).uri):
                top = run_sql(tables, sql)
    except TableNotFoundError:
        return []
    rows = [{c: _finite(v) for c, v in r.items()} for r in top.to_pylist()]
    events = _events(lake, rows)
    return [{**r, "policy": spec.ref, "events": events.get(r["clip_id"], [])} for r in rows]


def _events(lake: Lake, rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The trigger events of the ranked clips, from the day partitions they are in."""
    if not rows:
        return {}
    days = sorted({r["date"] for r in rows if r["date"] is not None})
    where = in_set("clip_id", sorted({r["clip_id"] for r in rows}))
    if days and all(r["date"] is not None for r in rows):
        where = f"date IN ({', '.join(literal(d) for d in days)}) AND {where}"
    got = lake.query("clips", columns=["clip_id", "events"], where=where)
    return {
        c: list(e or [])
        for c, e in zip(got.column("clip_id").to_pylist(), got.column("events").to_pylist(), strict=True)
    }


def has_scores(lake: Lake, spec: PolicySpec, version: int | None = None) -> bool:
    """Whether a shadow run of ``spec`` wrote any row (at the table's ``version``)."""
    return any_rows(lake, spec.rows(), version)


def any_rows(lake: Lake, where: str, version: int | None = None) -> bool:
    """Whether ``policy_errors`` has a row matching ``where`` (at the table's ``version``)."""
    try:
        one = lake.query(ERRORS.name, columns=["clip_id"], where=where, limit=1, version=version)
    except TableNotFoundError:
        return False
    return one.num_rows > 0


def clips_over(lake: Lake, spec: PolicySpec, min_error: float, version: int | None = None) -> frozenset[str]:
    """The clips whose ``disagreement`` with ``spec`` is at least ``min_error`` (in units of
    its ``error_scale``), at the ``policy_errors`` ``version`` (None: latest)."""
    where = f"{spec.rows()} AND {_RANKED} AND disagreement >= {literal(float(min_error))}"
    try:
        ids = lake.query(ERRORS.name, columns=["clip_id"], where=where, version=version)
    except TableNotFoundError:
        return frozenset()
    return frozenset(ids.column("clip_id").to_pylist())
