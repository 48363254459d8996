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

With a policy version (``policy``), each card shows the clip's disagreement with it
(:mod:`mining.policies.views`), ``min_disagreement`` keeps the clips it scored at least
that high (filtered after the read, like novelty), and ``sort=disagreement`` walks its
ranking instead of time: each page a top-k query of ``policy_errors`` after a
:class:`ScorePosition` (disagreement descending, then clip id), the clips of that chunk
then read with the page's predicate.

A zero-shot tag (``text_tag``) is a set of clip ids too, the clips passing its threshold
(``text_tag_scores``: :func:`mining.tags.passing_clips`), in the predicate with the days
they name; a tag the lake has not scored is refused (:class:`UnknownTextTag`).

With words (``text``), the page is a stretch of their ranking instead, among the clips the
page's predicate admits (:mod:`mining.scores.browse_text`, a walk of its own); each row
carries its ``match`` score, the bounds on other tables' scores drop rows after the
search, and the cursor is a :class:`RankPosition` (the number of ranked clips before the page).

A filter the grid cannot apply is a :class:`RefusedFilter`, said above the grid's filters::

    ConfigError
    └── RefusedFilter
        ├── UnknownScenario
        ├── UnknownPolicy
        ├── UnknownTextTag
        └── NoTextModel
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mining.encoders.registry import resolve
from mining.interfaces import ModelSpec
from mining.policies.views import (
    SCORED,
    PolicyVersion,
    ScorePosition,
    clips_of,
    disagreements,
    policy_ref,
    policy_versions,
    ranked,
    resolve_version,
    scored_any,
)
from mining.scenarios import hit_clip_ids
from mining.scores.browse_text import MAX_TEXT_HITS, RankPosition, ranked_page, text_spec
from mining.scores.lineage import current_scores, lineage_predicate
from mining.scores.reviews import latest_verdicts
from mining.search.ready import latest_ready_run
from mining.tags import TagSpec, UnscoredTag, tagged_clips
from storage.bounds import MAX_VERSION, Name, QueryText
from storage.errors import ConfigError
from storage.filters import ClipFilter, among, within_days
from storage.lake import Lake
from storage.objectstore import reachable
from storage.pages import Position, keyset_page
from storage.query import run_sql
from storage.sql import in_set, literal

__all__ = [
    "CARD_COLUMNS",
    "MAX_DISAGREEMENT",
    "MAX_TEXT_HITS",
    "Cursor",
    "GridPage",
    "GridQuery",
    "NoTextModel",
    "RankPosition",
    "RefusedFilter",
    "ScorePosition",
    "UnknownPolicy",
    "UnknownScenario",
    "UnknownTextTag",
    "grid_page",
]

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
_CHUNKS = 8  # keyset reads one page may make while a novelty or disagreement bound drops rows
MAX_DISAGREEMENT = 1e6
"""The largest ``min_disagreement`` a request may ask: what a dataset query's policy term
takes as its ``min_error`` (the same bound, so "dataset from these filters" carries it)."""


class RefusedFilter(ConfigError):
    """A filter the grid cannot apply (a name the lake lacks): said on the grid, above its
    filters, rather than on an error page; ``summary`` is what the count line says."""

    summary = "no clips: a filter is not one the lake has"


class UnknownScenario(RefusedFilter):
    """The grid's scenario is no ``NAME``/``NAME@V`` or names no scenario (or version) of
    the lake; the message says which, and lists the lake's."""

    summary = "no clips: the scenario filter is not one of the lake's scenarios"


class UnknownPolicy(RefusedFilter):
    """The grid's policy is no registered version, or a disagreement sort or bound came
    without one; the message says which, and lists the lake's."""

    summary = "no clips: the policy filter is not one of the lake's policy versions"


class UnknownTextTag(RefusedFilter):
    """The grid's zero-shot tag is no ``NAME``/``NAME@V``, names no tag (or version) of the
    lake, or one no ``tags run`` has scored yet; the message lists those it has scored."""

    summary = "no clips: the tag filter is not one of the lake's scored zero-shot tags"


class NoTextModel(RefusedFilter):
    """Words on a lake with no ``text-image`` version to read them with."""

    summary = "no clips: no model of the lake reads words"


Cursor = Position | ScorePosition | RankPosition


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
    policy: Name | None = Field(
        default=None, description="a policy version whose disagreement the cards show: `NAME` or `NAME@V`"
    )
    min_disagreement: float | None = Field(default=None, ge=0, le=MAX_DISAGREEMENT, allow_inf_nan=False)
    sort: Literal["time", "disagreement"] | None = Field(
        default=None, description="time (the default), or the policy's disagreement, highest first"
    )
    text: QueryText | None = Field(
        default=None,
        description="words describing the scene: the clips ranked by how well they match, best first",
    )
    text_tag: Name | None = Field(
        default=None,
        description="clips passing this zero-shot tag (`fleetmine tags run`): `NAME` (its latest "
        "version) or `NAME@V`",
    )

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, text: Any) -> Any:
        """Blank words (an empty box, spaces) are no words; others are stripped, then bounded."""
        return (text.strip() or None) if isinstance(text, str) else text

    @field_validator("scenario")
    @classmethod
    def _scenario(cls, ref: str | None) -> str | None:
        return None if ref is None else _scenario_ref(ref)

    @field_validator("policy")
    @classmethod
    def _policy(cls, ref: str | None) -> str | None:
        """Canonical (``NAME@01`` is ``NAME@1``); one that is no ``NAME``/``NAME@V`` is kept,
        for the grid to refuse above its filters (:class:`UnknownPolicy`)."""
        if ref is None:
            return None
        with contextlib.suppress(ValueError):
            return policy_ref(ref)
        return ref

    @property
    def by_disagreement(self) -> bool:
        return self.sort == "disagreement"

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

    def dataset_query(self, text_model: str | None = None) -> dict[str, Any]:
        """The same selection as a :class:`~mining.datasets.curation.DatasetQuery` body (no upper
        novelty bound there: a dataset keeps everything at least this novel).

        The tag is a ``text_tags`` term (the create pins its version). The words are a
        ``similar_to_text`` term read by ``text_model`` (:attr:`GridPage.ranked_by`) with
        ``k`` = :data:`MAX_TEXT_HITS`: words order the grid, they do not narrow it, and its
        pages go down the ranking that deep and no deeper. With the grid's clip filters
        alone (event, vehicle, days, scenario, tag) the dataset holds every clip a reviewer
        can page to; a review or disagreement bound is applied on each side of the ranking
        differently (the grid ranks among reviewed clips, the dataset keeps the reviewed
        among the top k; the grid drops clips under a disagreement bound after ranking, the
        dataset before), so there the two can differ. The page's size would keep what was
        looked at ("add this page to the basket" does that); the count of matches would
        promise clips the grid never shows."""
        q: dict[str, Any] = {}
        if self.event:
            q["events"] = [self.event]
        if self.vehicle:
            q["vehicles"] = [self.vehicle]
        if self.scenario:
            q["scenarios"] = [self.scenario]
        if self.text_tag:
            q["text_tags"] = [self.text_tag]
        if self.text:
            words: dict[str, Any] = {"text": self.text, "k": MAX_TEXT_HITS}
            q["similar_to_text"] = {**words, "model": text_model} if text_model else words
        f = self.clip_filter()
        if f.since:
            q["since"] = f.since.isoformat()
        if f.until:
            q["until"] = f.until.isoformat()
        if self.min_novelty is not None:
            q["min_novelty"] = self.min_novelty
        if self.policy and (self.min_disagreement is not None or self.sort == "disagreement"):
            # sorted by a policy, the grid shows only the clips it scored: so does the dataset
            q["policy"] = {"ref": self.policy, "min_error": self.min_disagreement or 0.0}
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

    @property
    def filters_after_read(self) -> bool:
        """Whether rows are dropped after the read (a bound on another table's score)."""
        return self.by_novelty or self.min_disagreement is not None

    def keeps(self, novelty: float | None, disagreement: float | None = None) -> bool:
        if self.min_disagreement is not None and (
            disagreement is None or disagreement < self.min_disagreement
        ):
            return False
        if not self.by_novelty:
            return True
        if novelty is None:
            return False
        lo = self.min_novelty if self.min_novelty is not None else 0.0
        hi = self.max_novelty if self.max_novelty is not None else 1.0
        return lo <= novelty <= hi


@dataclass
class GridPage:
    # clip columns + "scores" (latest run, or None) + "review" (or None) + "disagreement"
    # (with a policy: the clip's, or None)
    rows: list[dict[str, Any]]
    next: Cursor | None
    count: int | None  # matches of the whole query; None: more than a bounded count reads
    model: str
    run_id: str | None
    notes: list[str] = field(default_factory=list)
    policy: str | None = None  # the policy version the rows' disagreement is of
    ranked_by: str | None = None  # with words: the text-image version that ranked the rows
    text_tag: str | None = None  # with a tag: the NAME@V whose passing clips the rows are


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


def _text_tag(lake: Lake, q: GridQuery) -> tuple[TagSpec | None, frozenset[str] | None]:
    """``q``'s tag version and the clips it passes (None, None without one)."""
    if q.text_tag is None:
        return None, None
    try:
        (tag,), clips = tagged_clips(lake, [q.text_tag])
    except UnscoredTag as exc:
        raise UnknownTextTag(str(exc)) from None
    return tag, clips


def _predicate(
    q: GridQuery, f: ClipFilter, verdicts: dict[str, dict[str, Any]], tagged: frozenset[str] | None = None
) -> str | None:
    """The Delta predicate on clips, or ``"false"`` when a verdict or scenario filter
    matches no clip; ``tagged``: the clips the tag passes."""
    parts = [p] if (p := f.predicate()) else []
    if tagged is not None:
        parts.append(among(tagged))
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
    policy: PolicyVersion | None = None,
) -> int | None:
    """The exact number of matches when the candidate days hold at most ``cap`` rows."""
    lo, hi = days
    parts = lake.partition_rows("clips", "date").to_pylist()
    rows = sum(
        p["rows"] for p in parts if (lo is None or p["value"] >= lo) and (hi is None or p["value"] <= hi)
    )
    ranked_only = policy is not None and (q.by_disagreement or q.min_disagreement is not None)
    if where is None and not q.by_novelty and not ranked_only:
        return rows
    if rows > cap:
        return None
    clips = f"SELECT clip_id, date FROM clips{f' WHERE {where}' if where else ''}"
    tables = {"clips": lake.snapshot("clips")}
    joins = []
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
        joins.append(f"JOIN ({scores}) s ON c.clip_id = s.clip_id AND c.date = s.date")
        tables["mining_scores"] = lake.snapshot("mining_scores")
    if ranked_only:
        assert policy is not None
        if not lake.exists("policy_errors"):
            return 0
        p = [policy.predicate(), SCORED]
        if q.min_disagreement is not None:
            p.append(f"disagreement >= {literal(float(q.min_disagreement))}")
        scored = f"SELECT DISTINCT clip_id FROM policy_errors WHERE {' AND '.join(p)}"
        joins.append(f"JOIN ({scored}) p ON c.clip_id = p.clip_id")
        tables["policy_errors"] = lake.snapshot("policy_errors")
    sql = f"SELECT count(*) AS n FROM ({clips}) c {' '.join(joins)}".rstrip()
    with reachable(lake.location("clips").uri):
        return int(run_sql(tables, sql).column("n")[0].as_py())


def _policy(lake: Lake, q: GridQuery) -> PolicyVersion | None:
    """``q``'s policy version; :class:`UnknownPolicy` when it names none of the lake's, or
    when a disagreement sort or bound comes without one."""
    if q.policy is not None:
        try:
            return resolve_version(lake, q.policy)
        except ConfigError as exc:
            raise UnknownPolicy(str(exc)) from None
    if q.by_disagreement or q.min_disagreement is not None:
        known = [p.ref for p in policy_versions(lake)]
        pick = (
            f"pick one of {known[:20]}"
            if known
            else "none is registered (fleetmine policy train NAME --baseline)"
        )
        raise UnknownPolicy(f"sorting or filtering by disagreement needs a policy: {pick}")
    return None


@dataclass
class _Context:
    """What one page's reads share."""

    spec: ModelSpec
    run: str | None
    where: str | None
    days: tuple[dt.date | None, dt.date | None]
    verdicts: dict[str, dict[str, Any]]
    policy: PolicyVersion | None


def _in_time(
    lake: Lake,
    q: GridQuery,
    ctx: _Context,
    start: Position | None,
    limit: int,
    budget_rows: int,
) -> tuple[list[dict[str, Any]], Position | None]:
    """The next ``limit`` matches in time order (:func:`storage.pages.keyset_page`); with a
    bound on a score, up to :data:`_CHUNKS` keyset reads, and a short page whose cursor
    goes on when they run out."""
    out: list[dict[str, Any]] = []
    pos, nxt = start, None
    filtered = q.filters_after_read
    for _ in range(_CHUNKS if filtered else 1):
        page = keyset_page(
            lake,
            "clips",
            key="clip_id",
            columns=CARD_COLUMNS,
            where=ctx.where,
            limit=limit if not filtered else max(limit, 64),
            start=pos,
            days=ctx.days,
            budget_rows=budget_rows,
            time="start_time",
        )
        rows = page.rows.to_pylist()
        scores = _scores(lake, ctx.spec, ctx.run, rows)
        dis = disagreements(lake, ctx.policy, [r["clip_id"] for r in rows]) if ctx.policy else {}
        nxt = page.next
        for i, r in enumerate(rows):
            s, d = scores.get(r["clip_id"]), dis.get(r["clip_id"])
            if not q.keeps(s["novelty"] if s else None, d):
                continue
            out.append({**r, "scores": s, "review": ctx.verdicts.get(r["clip_id"]), "disagreement": d})
            if len(out) == limit:
                more = i + 1 < len(rows) or page.next
                nxt = Position(r["date"], r["clip_id"], r["start_time"], timed=True) if more else None
                break
        if len(out) == limit or nxt is None:
            break
        pos = nxt
    return out, nxt


def _by_score(
    lake: Lake, q: GridQuery, ctx: _Context, start: ScorePosition | None, limit: int
) -> tuple[list[dict[str, Any]], ScorePosition | None]:
    """The next ``limit`` matches in the policy's ranking: chunks of it (:func:`ranked`),
    each chunk's clips read with the page's predicate; up to :data:`_CHUNKS` chunks, then
    a short page whose cursor goes on."""
    assert ctx.policy is not None
    size = max(limit, 64)
    after = start
    out: list[dict[str, Any]] = []
    for _ in range(_CHUNKS):
        chunk = ranked(lake, ctx.policy, after, size, q.min_disagreement)
        clips = clips_of(lake, chunk, CARD_COLUMNS, ctx.where)
        scores = _scores(lake, ctx.spec, ctx.run, list(clips.values()))
        for i, c in enumerate(chunk):
            r, s = clips.get(c["clip_id"]), scores.get(c["clip_id"])
            if r is None or not q.keeps(s["novelty"] if s else None, c["disagreement"]):
                continue
            out.append(
                {
                    **r,
                    "scores": s,
                    "review": ctx.verdicts.get(c["clip_id"]),
                    "disagreement": c["disagreement"],
                }
            )
            if len(out) == limit:
                more = i + 1 < len(chunk) or len(chunk) == size
                return out, ScorePosition(c["disagreement"], c["clip_id"]) if more else None
        if len(chunk) < size:
            return out, None
        after = ScorePosition(chunk[-1]["disagreement"], chunk[-1]["clip_id"])
    return out, after


def _text_spec(lake: Lake, q: GridQuery) -> ModelSpec:
    spec = text_spec(lake, q.model)
    if spec is None:
        raise NoTextModel(
            "no model of the lake reads words: register a text-image one "
            "(fleetmine model register NAME --kind text-image --uri FOLDER), embed and index"
        )
    return spec


def _by_text(
    lake: Lake, q: GridQuery, ctx: _Context, text: ModelSpec, start: RankPosition | None, limit: int
) -> tuple[list[dict[str, Any]], RankPosition | None]:
    """A page of the words' ranking (:func:`mining.scores.browse_text.ranked_page`), each
    row with the clip's scores, verdict and disagreement, kept by the bounds on them."""
    assert q.text is not None

    def keep(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        scores = _scores(lake, ctx.spec, ctx.run, rows)
        ids = [r["clip_id"] for r in rows]
        dis = disagreements(lake, ctx.policy, ids) if ctx.policy else {}
        return [
            {
                **r,
                "scores": scores.get(r["clip_id"]),
                "review": ctx.verdicts.get(r["clip_id"]),
                "disagreement": dis.get(r["clip_id"]),
            }
            for r in rows
            if q.keeps(s["novelty"] if (s := scores.get(r["clip_id"])) else None, dis.get(r["clip_id"]))
        ]

    return ranked_page(
        lake,
        q.text,
        text,
        where=ctx.where,
        start=start,
        limit=limit,
        columns=CARD_COLUMNS,
        keep=keep,
        sparse=q.filters_after_read,
    )


def grid_page(
    lake: Lake, q: GridQuery, start: Cursor | None, limit: int, budget_rows: int = 100_000
) -> GridPage:
    """The next ``limit`` matching clips after ``start``: in real time order (by UTC day,
    start time, then clip id: :func:`storage.pages.keyset_page` with ``time``; ``start`` a
    :class:`~storage.pages.Position`), or with ``sort=disagreement`` in the policy's ranking
    (``start`` a :class:`ScorePosition`), or with words in their ranking (``start`` a
    :class:`RankPosition`). A filter the grid cannot apply raises a :class:`RefusedFilter`."""
    spec = resolve(lake, q.model)
    policy = _policy(lake, q)
    ref = policy.ref if policy else None
    words = _text_spec(lake, q) if q.text else None
    order = RankPosition if words else ScorePosition if q.by_disagreement else Position
    if start is not None and not isinstance(start, order):
        raise ConfigError("invalid cursor")  # one of the other order's pages
    f, hits = _clips(lake, q)
    tag, tagged = _text_tag(lake, q)
    days = f.days() if tagged is None else within_days(f.days(), tagged)
    lake.create_tables(["mining_scores", "corner_cases", "reviews"])
    run = latest_ready_run(lake, spec.ref)
    tag_ref = tag.ref if tag else None
    # no clip to look for: no scan of the lake for none
    empty = []
    if hits is not None and not hits:
        run_it = f"fleetmine scenario run {q.scenario}"
        empty.append(f"scenario {q.scenario} has no span in the lake (not run yet? {run_it})")
    if tag is not None and not tagged:
        empty.append(f"tag {tag.ref} passes no clip (a score of at least {tag.threshold:g})")
    if empty:
        return GridPage([], None, 0, spec.ref, run, empty, ref, words.ref if words else None, tag_ref)
    verdicts = latest_verdicts(lake)
    where = _predicate(q, f, verdicts, tagged)
    notes = [] if run or not q.by_novelty else [f"no mining run of {spec.ref} yet: no clip has a novelty"]
    if policy is not None and start is None and not scored_any(lake, policy):
        notes.append(
            f"policy {policy.ref} has scored no clip yet: run fleetmine shadow --policy {policy.ref}"
        )
    ctx = _Context(spec, run, where, days, verdicts, policy)
    nxt: Cursor | None
    if words is not None:
        out, nxt = _by_text(lake, q, ctx, words, start if isinstance(start, RankPosition) else None, limit)
    elif q.by_disagreement:
        out, nxt = _by_score(lake, q, ctx, start if isinstance(start, ScorePosition) else None, limit)
    else:
        out, nxt = _in_time(lake, q, ctx, start if isinstance(start, Position) else None, limit, budget_rows)
    count = _count(lake, q, days, where, spec, run, cap=10 * budget_rows, policy=policy)
    return GridPage(out, nxt, count, spec.ref, run, notes, ref, words.ref if words else None, tag_ref)
