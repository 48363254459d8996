"""Corner cases kept ready: ``mine`` writes the top-k lists, requests read k rows.

Ranking every score of a model per request grows with the lake; the lists a request
can ask for are few (all clips, or the clips of one trigger event), so ``mine``
ranks them once per run into ``corner_cases`` (one data file per list, so a request
reads one list) and :func:`read_corner_cases` takes the first k of the latest run's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake.transaction import AddAction

from storage.errors import TableNotFoundError
from storage.lake import Lake
from storage.query import arrow_table
from storage.sql import literal
from storage.tables.corner_cases import ANY_EVENT, SPEC

__all__ = [
    "READY_K",
    "corner_case_lists",
    "latest_ready_run",
    "merge_corner_cases",
    "read_corner_cases",
    "write_corner_cases",
]

READY_K = 10_000
"""Clips per list: the largest ``k`` the API and CLI accept."""

_ROW_GROUP = 1024  # a request for k rows decodes about k rows of its list, not all of them


def corner_case_lists(
    scores: pa.Table, events: pa.Array | pa.ChunkedArray, k: int = READY_K
) -> list[pa.Table]:
    """The ranked lists of one run: ``scores`` are its ``mining_scores`` rows, ``events``
    each row's trigger events. Near-duplicates are left out; ties go to the lower id."""
    keep = pc.is_null(scores.column("duplicate_of"))
    rows = scores.filter(keep)
    ev = pc.filter(events, keep)
    ev = ev.combine_chunks() if isinstance(ev, pa.ChunkedArray) else ev
    flat = pc.list_flatten(ev)
    parent = pc.list_parent_indices(ev)
    lists = [(ANY_EVENT, rows)]
    for name in sorted(str(e) for e in pc.unique(flat).to_pylist() if e is not None):
        members = np.unique(pc.filter(parent, pc.equal(flat, name)).to_numpy())
        lists.append((name, rows.take(pa.array(members, pa.int64()))))
    out = []
    for name, part in lists:
        order = pc.sort_indices(part, [("novelty", "descending"), ("clip_id", "ascending")])
        top = part.take(order.slice(0, k))
        n = top.num_rows
        out.append(
            SPEC.conform(
                pa.table(
                    {
                        "model_version": top.column("model_version"),
                        "run_id": top.column("run_id"),
                        "event": pa.array([name] * n, pa.string()),
                        "rank": pa.array(np.arange(1, n + 1), pa.int32()),
                        **{
                            c: top.column(c)
                            for c in (
                                "clip_id",
                                "date",
                                "novelty",
                                "rarity",
                                "signal_rarity",
                                "cluster_id",
                                "knn_distances",
                                "computed_at",
                            )
                        },
                    }
                )
            )
        )
    return [t for t in out if t.num_rows]


def merge_corner_cases(
    lake: Lake,
    model_ref: str,
    prev_run: str,
    fresh: list[pa.Table],
    run_id: str,
    k: int = READY_K,
    rescored: pa.Table | None = None,
) -> list[pa.Table]:
    """The lists of an incremental run: ``fresh`` (the new clips' lists, from
    :func:`corner_case_lists`) merged with the lists of ``prev_run``, from at most k rows
    per list read back. Old clips keep their scores but those ``rescored`` (their new
    ``mining_scores`` rows), whose novelty only falls (new neighbours are nearer): a
    clip outside a full list of ``prev_run`` may now outrank one that fell, so a full
    list is cut at its old last score, above which it is still the top of every clip."""
    try:
        where = f"model_version = {literal(model_ref)} AND run_id = {literal(prev_run)}"
        before = lake.read(SPEC.name, where=where)
    except TableNotFoundError:
        before = SPEC.schema.empty_table()
    bar: dict[str, float] = {}
    for name in pc.unique(before.column("event")).to_pylist():
        part = before.filter(pc.equal(before.column("event"), name))
        if part.num_rows >= k:
            bar[str(name)] = float(pc.min(part.column("novelty")).as_py())
    if rescored is not None and rescored.num_rows and before.num_rows:
        before = _with_scores(before, rescored)
    by_event: dict[str, list[pa.Table]] = {}
    for t in [before, *fresh]:
        for name in pc.unique(t.column("event")).to_pylist():
            by_event.setdefault(str(name), []).append(t.filter(pc.equal(t.column("event"), name)))
    out = []
    for name in sorted(by_event):
        part = pa.concat_tables([SPEC.conform(t) for t in by_event[name]])
        if name in bar:
            part = part.filter(pc.greater_equal(part.column("novelty"), bar[name]))
        order = pc.sort_indices(part, [("novelty", "descending"), ("clip_id", "ascending")])
        top = part.take(order.slice(0, k))
        n = top.num_rows
        top = top.set_column(
            top.schema.get_field_index("run_id"), "run_id", pa.array([run_id] * n, pa.string())
        )
        top = top.set_column(
            top.schema.get_field_index("rank"), "rank", pa.array(np.arange(1, n + 1), pa.int32())
        )
        out.append(SPEC.conform(top))
    return [t for t in out if t.num_rows]


def _with_scores(lists: pa.Table, rescored: pa.Table) -> pa.Table:
    """``lists`` rows, the ``rescored`` clips' with their new scores."""
    pos = pc.index_in(lists.column("clip_id"), value_set=rescored.column("clip_id"))
    hit = pc.is_valid(pos)
    if not pc.any(hit).as_py():
        return lists
    take = pos.fill_null(0)
    for name in ("novelty", "knn_distances", "computed_at"):
        moved = rescored.column(name).take(take)
        col = pc.if_else(hit, moved, lists.column(name))
        lists = lists.set_column(lists.schema.get_field_index(name), name, col)
    return lists


def write_corner_cases(lake: Lake, lists: list[pa.Table], prefix: str) -> list[AddAction]:
    """Data files of the lists (one each; commit them with :meth:`Lake.commit`)."""
    writer = lake.writer(SPEC.name, row_group_size=_ROW_GROUP)
    return [a for i, t in enumerate(lists) for a in writer.write(t, prefix=f"{prefix}-{i:04d}")]


def latest_ready_run(lake: Lake, model_ref: str) -> str | None:
    """The newest run with lists for the model, from the Delta log's file statistics."""
    adds = arrow_table(lake.snapshot(SPEC.name).get_add_actions(flatten=True))
    if adds.num_rows == 0:
        return None
    mine = adds.filter(pc.equal(adds.column("partition.model_version"), model_ref))
    if mine.num_rows == 0:
        return None
    return str(pc.max(mine.column("max.run_id")).as_py())


def read_corner_cases(
    lake: Lake, model_ref: str, *, k: int, event: str | None = None
) -> list[dict[str, Any]]:
    """The ``k`` most novel non-duplicate clips of the model's latest run (of ``event``'s
    clips, if given); [] when the model has no lists yet."""
    try:
        run = latest_ready_run(lake, model_ref)
    except TableNotFoundError:  # a lake no mine of this version has run on
        return []
    if run is None:
        return []
    where = (
        f"model_version = {literal(model_ref)} AND run_id = {literal(run)} "
        f"AND event = {literal(event or ANY_EVENT)} AND rank <= {int(k)}"
    )
    rows = lake.query(SPEC.name, where=where, order_by=["rank"], limit=k).to_pylist()
    return [{**r, "duplicate_of": None} for r in rows]
