"""The review grid: clips by filters on their row, their mining scores and their verdicts,
a keyset page at a time (:mod:`storage.pages`), with a bounded count of the matches.

Clip fields (event, vehicle, days), verdicts and a scenario go into the page's Delta
predicate: a verdict filter becomes a set of clip ids (:func:`storage.sql.in_set`: an
``IN`` list while short, a semi-join once reviews are many, never an ``IN`` chain the
engine cannot plan), and so does a scenario (the clips its spans overlap, from
``scenario_hits``: :func:`mining.scenarios.hit_clip_ids`). A novelty range is
on ``mining_scores``, so it filters each page after the read, and a page that ran out
of chunks before it filled answers short with a cursor that goes on (like a page whose
scan budget ran out).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mining.encoders.registry import resolve
from mining.interfaces import ModelSpec
from mining.scenarios import hit_clip_ids
from mining.scores.lineage import current_scores, lineage_predicate
from mining.scores.reviews import latest_verdicts
from mining.search.ready import latest_ready_run
from storage.bounds import MAX_VERSION, Name
from storage.errors import ConfigError
from storage.filters import ClipFilter
from storage.lake import Lake
from storage.objectstore import reachable
from storage.pages import Position, keyset_page
from storage.query import run_sql
from storage.sql import in_set, literal

__all__ = ["CARD_COLUMNS", "GridPage", "GridQuery", "UnknownScenario", "grid_page"]

CARD_COLUMNS = [
    "clip_id",
    "drive_id",
    "vehicle_id",
    "camera",
    "start_time",
    "duration_s",
    "speed_max",
    "events",
]
_CHUNKS = 8  # keyset reads one page may make while a novelty range drops rows


class UnknownScenario(ConfigError):
    """The grid's scenario is no ``NAME``/``NAME@V`` or names no scenario (or version) of
    the lake; the message says which, and lists the lake's."""


def _scenario_ref(ref: str) -> str:
    """``NAME`` or ``NAME@V`` (``V`` a version number, written without leading zeros); the
    name itself is the lake's to know (:func:`mining.scenarios.resolve_scenarios`)."""
    name, at, version = ref.strip().partition("@")
    if not name:
        raise ValueError("a scenario is NAME or NAME@VERSION: the name is missing")
    if at and not (version.isascii() and version.isdigit() and 0 < int(version) <= MAX_VERSION):
        raise ValueError(
            f"a scenario is NAME or NAME@VERSION: after @ comes a version number ({name[:64]}@1), "
            f"not {version[:16]!r}"
        )
    return f"{name}@{int(version)}" if at else name


class GridQuery(BaseModel):
    """What a reviewer narrows the grid to; every field is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    event: Name | None = None
    vehicle: Name | None = None
    since: dt.date | None = Field(default=None, description="clips starting on or after this UTC day")
    until: dt.date | None = Field(default=None, description="clips starting on or before this UTC day")
    model: Name | None = None
    min_novelty: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    max_novelty: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    review: Literal["reviewed", "unreviewed"] | None = None
    verdict: Literal["confirmed", "not_interesting", "mislabelled"] | None = None
    scenario: Name | None = Field(
        default=None,
        description="clips a span of this scenario overlaps: `NAME` (its latest version) or `NAME@V`",
    )

    @field_validator("scenario")
    @classmethod
    def _scenario(cls, ref: str | None) -> str | None:
        return None if ref is None else _scenario_ref(ref)

    def clip_filter(self) -> ClipFilter:
        """The clip fields as a filter; one with a scenario is resolved against the lake
        (:func:`mining.scenarios.resolve_filter`) before its predicate."""
        return ClipFilter(
            events=[self.event] if self.event else [],
            scenarios=[self.scenario] if self.scenario else [],
            vehicles=[self.vehicle] if self.vehicle else [],
            since=dt.datetime.combine(self.since, dt.time(), dt.UTC) if self.since else None,
            until=dt.datetime.combine(self.until + dt.timedelta(days=1), dt.time(), dt.UTC)
            if self.until
            else None,
        )

    def dataset_query(self) -> dict[str, Any]:
        """The same selection as a :class:`~mining.datasets.curation.DatasetQuery` body (no upper
        novelty bound there: a dataset keeps everything at least this novel)."""
        q: dict[str, Any] = {}
        if self.event:
            q["events"] = [self.event]
        if self.vehicle:
            q["vehicles"] = [self.vehicle]
        if self.scenario:
            q["scenarios"] = [self.scenario]
        f = self.clip_filter()
        if f.since:
            q["since"] = f.since.isoformat()
        if f.until:
            q["until"] = f.until.isoformat()
        if self.min_novelty is not None:
            q["min_novelty"] = self.min_novelty
        if self.model:
            q["model"] = self.model
        if self.verdict:
            q["reviewed"] = self.verdict
        elif self.review:
            q["reviewed"] = "any" if self.review == "reviewed" else "none"
        return q

    @property
    def by_novelty(self) -> bool:
        return self.min_novelty is not None or self.max_novelty is not None

    def keeps(self, novelty: float | None) -> bool:
        if not self.by_novelty:
            return True
        if novelty is None:
            return False
        lo = self.min_novelty if self.min_novelty is not None else 0.0
        hi = self.max_novelty if self.max_novelty is not None else 1.0
        return lo <= novelty <= hi


@dataclass
class GridPage:
    rows: list[dict[str, Any]]  # clip columns + "scores" (latest run, or None) + "review" (or None)
    next: Position | None
    count: int | None  # matches of the whole query; None: more than a bounded count reads
    model: str
    run_id: str | None
    notes: list[str] = field(default_factory=list)


def _clips(lake: Lake, q: GridQuery) -> tuple[ClipFilter, frozenset[str] | None]:
    """``q``'s clip filter, its scenario resolved to the clips its spans overlap (also
    returned; None without a scenario); an unknown scenario is :class:`UnknownScenario`,
    naming the lake's."""
    f = q.clip_filter()
    if not q.scenario:
        return f, None
    try:
        ids = hit_clip_ids(lake, [q.scenario])
    except ConfigError as exc:
        raise UnknownScenario(str(exc)) from None
    return f.with_scenario_clips(ids), ids


def _predicate(q: GridQuery, f: ClipFilter, verdicts: dict[str, dict[str, Any]]) -> str | None:
    """The Delta predicate on clips, or ``"false"`` when a verdict or scenario filter
    matches no clip."""
    parts = [p] if (p := f.predicate()) else []
    if q.verdict:
        parts.append(in_set("clip_id", sorted(c for c, r in verdicts.items() if r["verdict"] == q.verdict)))
    elif q.review == "reviewed":
        parts.append(in_set("clip_id", sorted(verdicts)))
    elif q.review == "unreviewed" and verdicts:
        parts.append(in_set("clip_id", sorted(verdicts), negate=True))
    return " AND ".join(parts) or None


def _scores(
    lake: Lake, spec: ModelSpec, run: str | None, rows: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Each clip's current score (its newest row in the latest lineage, not only the
    newest run's rows: an incremental run holds just the clips it added or re-scored)."""
    if run is None or not rows:
        return {}
    cols = ["novelty", "rarity", "signal_rarity", "cluster_id", "knn_distances", "duplicate_of"]
    ids, days = [r["clip_id"] for r in rows], [r["date"] for r in rows]
    return current_scores(lake, spec, ids, columns=cols, days=days)


def _count(
    lake: Lake,
    q: GridQuery,
    days: tuple[dt.date | None, dt.date | None],
    where: str | None,
    spec: ModelSpec,
    run: str | None,
    cap: int,
) -> int | None:
    """The exact number of matches when the candidate days hold at most ``cap`` rows."""
    lo, hi = days
    parts = lake.partition_rows("clips", "date").to_pylist()
    rows = sum(
        p["rows"] for p in parts if (lo is None or p["value"] >= lo) and (hi is None or p["value"] <= hi)
    )
    if where is None and not q.by_novelty:
        return rows
    if rows > cap:
        return None
    clips = f"SELECT clip_id, date FROM clips{f' WHERE {where}' if where else ''}"
    tables = {"clips": lake.snapshot("clips")}
    if q.by_novelty:
        if run is None:
            return 0
        lineage = lineage_predicate(lake, spec)
        if lineage is None:
            return 0
        s = []
        if q.min_novelty is not None:
            s.append(f"novelty >= {literal(float(q.min_novelty))}")
        if q.max_novelty is not None:
            s.append(f"novelty <= {literal(float(q.max_novelty))}")
        # Each clip's newest row of the lineage is its current score.
        newest = (
            "SELECT clip_id, date, novelty, row_number() OVER (PARTITION BY clip_id ORDER BY run_id DESC) "
            f"AS rn FROM mining_scores WHERE {lineage}"
        )
        scores = f"SELECT clip_id, date FROM ({newest}) WHERE {' AND '.join(['rn = 1', *s])}"
        sql = (
            f"SELECT count(*) AS n FROM ({clips}) c JOIN ({scores}) s "
            "ON c.clip_id = s.clip_id AND c.date = s.date"
        )
        tables["mining_scores"] = lake.snapshot("mining_scores")
    else:
        sql = f"SELECT count(*) AS n FROM ({clips}) c"
    with reachable(lake.location("clips").uri):
        return int(run_sql(tables, sql).column("n")[0].as_py())


def grid_page(
    lake: Lake, q: GridQuery, start: Position | None, limit: int, budget_rows: int = 100_000
) -> GridPage:
    """The next ``limit`` matching clips after ``start`` in real time order: by UTC day,
    start time, then clip id (:func:`storage.pages.keyset_page` with ``time``).
    An unknown scenario raises :class:`UnknownScenario`."""
    spec = resolve(lake, q.model)
    f, hits = _clips(lake, q)
    days = f.days()
    lake.create_tables(["mining_scores", "corner_cases", "reviews"])
    run = latest_ready_run(lake, spec.ref)
    if hits is not None and not hits:  # no clip to look for: no scan of the lake for none
        run_it = f"fleetmine scenario run {q.scenario}"
        note = f"scenario {q.scenario} has no span in the lake (not run yet? {run_it})"
        return GridPage([], None, 0, spec.ref, run, [note])
    verdicts = latest_verdicts(lake)
    where = _predicate(q, f, verdicts)
    notes = [] if run or not q.by_novelty else [f"no mining run of {spec.ref} yet: no clip has a novelty"]
    out: list[dict[str, Any]] = []
    pos, nxt = start, None
    for _ in range(_CHUNKS if q.by_novelty else 1):
        page = keyset_page(
            lake,
            "clips",
            key="clip_id",
            columns=CARD_COLUMNS,
            where=where,
            limit=limit if not q.by_novelty else max(limit, 64),
            start=pos,
            days=days,
            budget_rows=budget_rows,
            time="start_time",
        )
        rows = page.rows.to_pylist()
        scores = _scores(lake, spec, run, rows)
        nxt = page.next
        for i, r in enumerate(rows):
            s = scores.get(r["clip_id"])
            if not q.keeps(s["novelty"] if s else None):
                continue
            out.append({**r, "scores": s, "review": verdicts.get(r["clip_id"])})
            if len(out) == limit:
                more = i + 1 < len(rows) or page.next
                nxt = Position(r["date"], r["clip_id"], r["start_time"], timed=True) if more else None
                break
        if len(out) == limit or nxt is None:
            break
        pos = nxt
    count = _count(lake, q, days, where, spec, run, cap=10 * budget_rows)
    return GridPage(out, nxt, count, spec.ref, run, notes)
