"""A dataset version's clips, streamed in clip-id order one span of days at a time.

Clip ids (and group ids) begin with their day (DESIGN.md) and ``clips`` is partitioned
by that day, so ``(date, clip_id)`` order is clip-id order and a span of consecutive
days, sized from the Delta log's row counts, is one bounded engine query
(:meth:`Lake.query`: predicate, projection and ORDER BY in DataFusion). Creating a
version and planning its export both walk these spans, so each holds one span's rows
(``batch_rows``, or one day when a day is larger), never the version.

Filters the engine cannot run (similarity, mining scores, review verdicts) are applied
to each span's rows in Arrow; the mining scores they need are read per span too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from storage.errors import ConfigError
from storage.filters import _id_days, _utc_day
from storage.lake import Lake
from storage.sql import in_list, literal

__all__ = [
    "BATCH_ROWS",
    "day_spans",
    "ids_predicates",
    "member_batches",
    "query_predicate",
    "scan_estimate",
    "selected_batches",
    "split_of",
]

BATCH_ROWS = 65_536
_COLUMNS = ["clip_id", "drive_id", "group_id"]


def split_of(drive_ids: pa.Array, val_fraction: float) -> pa.Array:
    """``train``/``val`` per row, by a hash of the drive id (one drive never lands in both)."""
    out: dict[str, str] = {}
    for d in pc.unique(drive_ids).to_pylist():
        h = int(hashlib.sha1(str(d).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        out[d] = "val" if h < val_fraction else "train"
    return pa.array([out[d] for d in drive_ids.to_pylist()], pa.string())


def _span_predicate(first: dt.date, last: dt.date) -> str:
    if first == last:
        return f"date = {literal(first)}"
    return f"date >= {literal(first)} AND date <= {literal(last)}"


def day_spans(
    lake: Lake,
    version: int,
    batch_rows: int = BATCH_ROWS,
    days: set[dt.date] | None = None,
    until: dt.date | None = None,
) -> Iterator[tuple[dt.date, dt.date]]:
    """Consecutive days of ``clips`` (at ``version``) in order, grouped so each span
    holds about ``batch_rows`` rows (a larger day is a span of its own); only
    ``days`` where given, none after ``until``. From the Delta log: no data is read."""
    parts = lake.partition_rows("clips", "date", version)
    first: dt.date | None = None
    last: dt.date | None = None
    held = 0
    for d, n in zip(parts.column("value").to_pylist(), parts.column("rows").to_pylist(), strict=True):
        if d is None or (days is not None and d not in days) or (until is not None and d > until):
            continue
        if first is not None and held + n > batch_rows:
            yield first, last or first
            first, held = None, 0
        first = first or d
        last = d
        held += n
    if first is not None:
        yield first, last or first


def _query_days(q: Any) -> tuple[set[dt.date] | None, dt.date | None]:
    """The days a query can match: those its clip ids name, none after ``until``."""
    days = _id_days(q.clip_ids) if q.clip_ids else None
    return days, (_utc_day(q.until) if q.until is not None else None)


def query_predicate(lake: Lake, q: Any, pinned: Mapping[str, int | None]) -> str | None:
    """The query's predicate on ``clips``, its ``scenarios`` read from ``scenario_hits`` and
    its ``policy`` term from ``policy_errors`` at the pinned versions (what a version saw,
    whatever runs came after)."""
    from mining.datasets.curation import resolve_query

    return resolve_query(lake, q, pinned).predicate()


def _arrow_filters(
    lake: Lake, q: Any, pinned: Mapping[str, int | None], where: str | None
) -> list[Callable[..., pa.Table]]:
    """The query's filters the engine does not run, each ``(rows, first, last) -> rows``."""
    from mining.encoders.registry import resolve

    out: list[Callable[..., pa.Table]] = []
    if q.similar_to is not None:
        from mining.search.queries import similar

        spec = resolve(lake, q.model)
        allowed: set[str] = set()
        for cid in q.similar_to.clip_ids:
            near = similar(
                lake, clip_id=cid, k=q.similar_to.k, where=where, model=spec.ref, space=q.similar_to.space
            )
            md = q.similar_to.max_distance
            allowed |= {n.clip_id for n in near if md is None or n.distance <= md}
            allowed.add(cid)
        keep = pa.array(sorted(allowed), pa.string())
        out.append(lambda rows, first, last: rows.filter(pc.is_in(rows.column("clip_id"), keep)))
    if q.min_novelty is not None or q.dedup:
        from mining.scores.lineage import latest_run, lineage_of

        spec = resolve(lake, q.model)
        version = pinned.get("mining_scores")
        found = latest_run(lake, spec, version)
        if found is None:
            raise ConfigError(f"min_novelty/dedup need mining scores for {spec.ref}: run `fleetmine mine`")
        lineage = lineage_of(spec, *found)

        def scored(rows: pa.Table, first: dt.date, last: dt.date) -> pa.Table:
            s = lake.query(
                "mining_scores",
                columns=["clip_id", "novelty", "duplicate_of"],
                where=f"{lineage} AND {_span_predicate(first, last)}",
                version=version,
            )
            if q.min_novelty is not None:
                s = s.filter(pc.greater_equal(s.column("novelty"), q.min_novelty))
            if q.dedup:
                # A clip never scored counts as no one's duplicate unless min_novelty asks for a score.
                dups = s.filter(pc.is_valid(s.column("duplicate_of"))).column("clip_id")
                rows = rows.filter(pc.invert(pc.is_in(rows.column("clip_id"), dups)))
            if q.min_novelty is not None:
                rows = rows.filter(pc.is_in(rows.column("clip_id"), s.column("clip_id")))
            return rows

        out.append(scored)
    if q.reviewed is not None or q.tags:
        from mining.scores.reviews import latest_verdicts

        verdicts = latest_verdicts(lake, pinned.get("reviews"))  # people's reviews: a small table

        def reviewed(rows: pa.Table, first: dt.date, last: dt.date) -> pa.Table:
            ids = rows.column("clip_id").to_pylist()
            return rows.filter(pa.array([_review_matches(q, verdicts.get(c)) for c in ids], pa.bool_()))

        out.append(reviewed)
    return out


def _review_matches(q: Any, review: dict[str, Any] | None) -> bool:
    """Whether a clip's latest review (None: never reviewed) passes the query's review filters."""
    if q.reviewed == "none":
        return review is None and not q.tags
    if review is None:
        return False
    if q.reviewed not in (None, "any") and review["verdict"] != q.reviewed:
        return False
    want = {t.strip().lower() for t in q.tags}
    return not want or bool(want & set(review["tags"] or []))


def _group_keys(rows: pa.Table) -> pa.Array:
    return pc.coalesce(rows.column("group_id"), rows.column("clip_id")).combine_chunks()


def selected_batches(
    lake: Lake, q: Any, pinned: dict[str, int], batch_rows: int = BATCH_ROWS
) -> Iterator[pa.Table]:
    """The clips ``q`` selects at the pinned versions (``clip_id``, ``drive_id``,
    ``group_id``), in clip-id order, one span of days per table; ``limit`` counts clips
    (or groups, for ``samples="group"``) from the first id on, as before."""
    where = query_predicate(lake, q, pinned)
    filters = _arrow_filters(lake, q, pinned, where)
    days, until = _query_days(q)
    left = q.limit
    by_group = q.samples == "group"
    for first, last in day_spans(lake, pinned["clips"], batch_rows, days, until):
        span = _span_predicate(first, last)
        push = left if (left is not None and not filters and not by_group) else None
        rows = lake.query(
            "clips",
            columns=_COLUMNS,
            where=f"({where}) AND {span}" if where else span,
            order_by=["clip_id"],
            limit=push,
            version=pinned["clips"],
        )
        for f in filters:
            rows = f(rows, first, last)
        if by_group and rows.num_rows:
            groups = pc.unique(_group_keys(rows)).sort()
            if left is not None:
                groups = groups.slice(0, left)
            every = lake.query(
                "clips", columns=_COLUMNS, where=span, order_by=["clip_id"], version=pinned["clips"]
            )
            rows = every.filter(pc.is_in(_group_keys(every), groups))
            taken = len(groups)
        else:
            if left is not None:
                rows = rows.slice(0, left)
            taken = rows.num_rows
        if rows.num_rows:
            yield rows
        if left is not None:
            left -= taken
            if left <= 0:
                return


def member_batches(
    lake: Lake, name: str, version: int, clips_version: int, batch_rows: int = BATCH_ROWS
) -> Iterator[tuple[str, pa.Table]]:
    """The version's ``dataset_clips`` rows (``clip_id``, ``split``) in clip-id order, a
    span of days at a time, each with the ``clips`` predicate of its span. A version
    created by :func:`selected_batches` is written in that order, so each span's query
    reads the files of that span alone."""
    this = f"name = {literal(name)} AND version = {int(version)}"
    for first, last in day_spans(lake, clips_version, batch_rows):
        after = f"{first:%Y%m%d}"
        before = f"{last + dt.timedelta(days=1):%Y%m%d}"
        rows = lake.query(
            "dataset_clips",
            columns=["clip_id", "split"],
            where=f"{this} AND clip_id >= {literal(after)} AND clip_id < {literal(before)}",
            order_by=["clip_id"],
        )
        if rows.num_rows:
            yield _span_predicate(first, last), rows


def ids_predicates(ids: list[str], chunk: int = 1_000) -> Iterator[str]:
    """``clip_id IN (...)`` over ``ids`` in chunks (the engine's planner recurses on long
    IN lists), each with the days its ids name, so only those partitions are read."""
    for at in range(0, len(ids), chunk):
        part = ids[at : at + chunk]
        where = f"clip_id IN ({in_list(part)})"
        days = _id_days(part)
        yield where if not days else f"date IN ({', '.join(literal(d) for d in sorted(days))}) AND {where}"


def _log_rows(lake: Lake, table: str, version: int | None = None) -> int:
    if not lake.exists(table):
        return 0
    parts = lake.delta(table, version).get_add_actions(flatten=True)
    adds = pa.RecordBatchReader.from_stream(parts).read_all()
    return int(pc.sum(adds.column("num_records")).as_py() or 0) if adds.num_rows else 0


def scan_estimate(lake: Lake, q: Any) -> int:
    """An upper bound, from the Delta log alone, on the rows creating a version of ``q``
    reads: the clips of the days it can match (or its ``limit``, when nothing else
    filters), plus the score and review rows its filters read."""
    if not lake.exists("clips"):
        return 0
    days, until = _query_days(q)
    parts = lake.partition_rows("clips", "date")
    rows = sum(
        n
        for d, n in zip(parts.column("value").to_pylist(), parts.column("rows").to_pylist(), strict=True)
        if (days is None or d in days) and (until is None or d is None or d <= until)
    )
    plain = not q.clip_filter().model_dump(exclude_defaults=True) and q.samples == "clip"
    if q.limit is not None and plain and q.similar_to is None and q.min_novelty is None and not q.dedup:
        rows = min(rows, q.limit)
    if q.min_novelty is not None or q.dedup:
        rows += _log_rows(lake, "mining_scores")
    if q.reviewed is not None or q.tags:
        rows += _log_rows(lake, "reviews")
    if q.policy is not None:
        rows += _log_rows(lake, "policy_errors")
    if q.similar_to is not None:
        rows += len(q.similar_to.clip_ids) * q.similar_to.k
    return rows
