"""Datasets: a typed query over clips (:class:`DatasetQuery`) becomes an immutable,
versioned dataset: its members in ``dataset_clips``, its row in ``datasets``.

A version pins the Delta versions it read (``lake_version``), so its clip list,
shards and manifest always mean the same bytes; a new ``create`` is a new version.
Its members are selected a span of days at a time (:mod:`mining.datasets.members`);
a version becomes WebDataset shards in :mod:`mining.datasets.shards` and a LeRobot
tree in :mod:`mining.datasets.lerobot`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from mining.datasets.members import BATCH_ROWS, selected_batches, split_of
from mining.datasets.spans import select_spans
from mining.encoders.registry import resolve
from mining.policies.ranking import clips_over, has_scores, policy_spec
from mining.scenarios.hits import resolve_filter, resolve_refs
from mining.tags.registry import TagSpec, resolve_tags
from mining.tags.scores import has_scores as tag_has_scores
from mining.tags.scores import passing_clips
from storage.bounds import MAX_BASKET, MAX_NAMES, ClipId, Name, QueryText, Speed
from storage.errors import ConfigError, NotFoundError
from storage.filters import ClipFilter, _days_predicate, _id_days
from storage.lake import Lake
from storage.lease import this_process
from storage.sql import in_set, literal
from storage.tables import dataset_clips, dataset_spans, datasets

__all__ = [
    "DatasetQuery",
    "PolicyTerm",
    "QueryFilter",
    "SimilarTo",
    "SimilarToText",
    "clip_predicate",
    "create_version",
    "get_version",
    "resolve_query",
    "select_clips",
]


class SimilarTo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clip_ids: list[ClipId] = Field(min_length=1, max_length=100)
    k: int = Field(default=50, ge=1, le=10_000)
    max_distance: float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False)
    space: Literal["clip", "behaviour"] = Field(
        default="clip",
        description="what is compared (mining.search.queries.SPACES): the whole vector or behaviour",
    )


class SimilarToText(BaseModel):
    """The ``k`` clips a text describes best, by a ``text-image`` version's two sides
    (:func:`mining.search.by_text.similar_to_text`), among the clips the query's other
    clip terms keep."""

    model_config = ConfigDict(extra="forbid")
    text: QueryText
    k: int = Field(default=50, ge=1, le=10_000)
    model: Name | None = Field(
        default=None,
        description="a version with a text side (`NAME@VERSION`, or `NAME`: its current version, which the "
        "created version's query names); default: the current model if it has one, else the text-image "
        "version made current last. A version without one is refused (400), naming those with one",
    )
    min_score: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        allow_inf_nan=False,
        description="of the k, only clips whose cosine similarity with the text is at least this",
    )


class Margin(BaseModel):
    """How much of the drive a span sample holds before and after its scenario's span."""

    model_config = ConfigDict(extra="forbid")
    before_s: float = Field(default=2.0, ge=0, le=60, allow_inf_nan=False)
    after_s: float = Field(default=1.0, ge=0, le=60, allow_inf_nan=False)


class PolicyTerm(BaseModel):
    """Clips where a driving policy version disagreed with the driver (``fleetmine shadow``)."""

    model_config = ConfigDict(extra="forbid")
    ref: Name = Field(
        description="`NAME@VERSION`, or `NAME`: its latest version, which the created version's "
        "query names as `NAME@VERSION`"
    )
    min_error: float = Field(
        default=0.0,
        ge=0,
        le=1e6,
        allow_inf_nan=False,
        description="clips whose `disagreement` is at least this: the worst step's error summed over "
        "the actions, each in units of the policy's `error_scale` (1.0 = one m/s^2 of accel by default)",
    )


class QueryFilter(ClipFilter):
    """A dataset query's :class:`ClipFilter` with its ``policy``, ``text_tags`` and
    ``similar_to_text`` terms. Like ``scenarios``, each is a question for the lake:
    :func:`resolve_query` lends it the clips it stands for once (over ``min_error``; passing
    a tag's threshold; the k a text describes best), and the predicate holds them as a
    semi-join; an unresolved term refuses to make one."""

    policy: PolicyTerm | None = None
    text_tags: list[Name] = Field(default_factory=list, max_length=MAX_NAMES)
    similar_to_text: SimilarToText | None = None
    _policy_clips: frozenset[str] | None = PrivateAttr(default=None)
    _text_tag_clips: frozenset[str] | None = PrivateAttr(default=None)
    _text_clips: frozenset[str] | None = PrivateAttr(default=None)

    def with_policy_clips(self, clip_ids: frozenset[str]) -> QueryFilter:
        out = self.model_copy()
        out._policy_clips = frozenset(clip_ids)
        return out

    def with_text_tag_clips(self, clip_ids: frozenset[str]) -> QueryFilter:
        out = self.model_copy()
        out._text_tag_clips = frozenset(clip_ids)
        return out

    def with_text_clips(self, clip_ids: frozenset[str]) -> QueryFilter:
        out = self.model_copy()
        out._text_clips = frozenset(clip_ids)
        return out

    def predicate(self) -> str | None:
        return self._predicate(with_text=True)

    def _predicate(self, *, with_text: bool) -> str | None:
        """The predicate; without ``similar_to_text`` (``with_text`` False), the clips that
        term ranks among."""
        where = super().predicate()
        parts = [where] if where else []
        terms = [
            (self.policy is not None, self._policy_clips, "a policy term"),
            (bool(self.text_tags), self._text_tag_clips, "a text_tags term"),
            (with_text and self.similar_to_text is not None, self._text_clips, "a similar_to_text term"),
        ]
        for given, clips, what in terms:
            if not given:
                continue
            if clips is None:
                raise ConfigError(f"{what} is resolved against the lake first (resolve_query)")
            parts.append(in_set("clip_id", sorted(clips)))
            if clips and (days := _id_days(list(clips))):
                parts.append(_days_predicate(days))
        return " AND ".join(parts) or None


class DatasetQuery(BaseModel):
    """What goes into a dataset. Every field narrows the selection; every list, string and
    number is bounded (:mod:`storage.bounds`), so a query is refused (422) before it runs."""

    model_config = ConfigDict(extra="forbid")
    events: list[Name] = Field(
        default_factory=list, max_length=MAX_NAMES, description="clips with any of these trigger events"
    )
    vehicles: list[Name] = Field(default_factory=list, max_length=MAX_NAMES)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    min_speed: Speed | None = None
    max_speed: Speed | None = None
    similar_to: SimilarTo | None = None
    min_novelty: float | None = Field(default=None, ge=0, le=1)
    dedup: bool = False
    limit: int | None = Field(default=None, ge=1, le=10_000_000)
    val_fraction: float = Field(default=0.1, ge=0, le=0.9)
    model: Name | None = None
    clip_ids: list[ClipId] = Field(
        default_factory=list, max_length=MAX_BASKET, description="only these clips (a reviewer's basket)"
    )
    reviewed: Literal["confirmed", "not_interesting", "mislabelled", "any", "none"] | None = Field(
        default=None,
        description="clips whose latest verdict is this one (`any`: reviewed at all; `none`: never reviewed)",
    )
    tags: list[Name] = Field(
        default_factory=list,
        max_length=MAX_NAMES,
        description="clips whose latest review has any of these tags (a reviewer's labels; the tags a "
        "text-image model gives are `text_tags`)",
    )
    text_tags: list[Name] = Field(
        default_factory=list,
        max_length=MAX_NAMES,
        description="clips whose score for any of these zero-shot tags passes the tag's threshold "
        "(`fleetmine tags run`; `NAME`: its latest version, which the created version's query names as "
        "`NAME@VERSION`)",
    )
    similar_to_text: SimilarToText | None = Field(
        default=None,
        description="the k clips a text describes best (a text-image version's text side and clip index)",
    )
    scenarios: list[Name] = Field(
        default_factory=list,
        max_length=MAX_NAMES,
        description="clips a span of any of these scenarios overlaps (`NAME`: its latest, or `NAME@V`)",
    )
    policy: PolicyTerm | None = Field(
        default=None,
        description="clips a driving policy version disagreed with the driver on, at least `min_error` "
        "(its shadow run's `policy_errors`)",
    )
    samples: Literal["clip", "group", "span"] = Field(
        default="clip",
        description="clip: one sample per clip; group: one sample per time window of a drive, with "
        "every camera's clip (`<group_id>.<camera>.mp4`) and one `.signals.npy`; span: one sample per "
        "span of `scenarios` with its `margin`, cut from the drive's clips (`<span_id>.<camera>.mp4`)",
    )
    margin: Margin = Field(
        default_factory=Margin,
        description="span samples: seconds of the drive kept before and after the span",
    )
    max_window_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="span samples: the longest window (span and margin) a sample holds; a longer span "
        "fails the create, naming it, rather than becoming a sample of many minutes",
    )

    @model_validator(mode="after")
    def _spans_need_scenarios(self) -> DatasetQuery:
        if self.samples == "span" and not self.scenarios:
            raise ValueError("samples=span: name the scenarios whose spans are the samples (scenarios)")
        return self

    def clip_filter(self) -> QueryFilter:
        """The clips the query starts from (before similarity, novelty, dedup and limit)."""
        return QueryFilter(
            events=self.events,
            vehicles=self.vehicles,
            since=self.since,
            until=self.until,
            min_speed=self.min_speed,
            max_speed=self.max_speed,
            clip_ids=self.clip_ids,
            scenarios=self.scenarios,
            policy=self.policy,
            text_tags=self.text_tags,
            similar_to_text=self.similar_to_text,
        )


def resolve_query(lake: Lake, q: DatasetQuery, pinned: Mapping[str, int | None] | None = None) -> ClipFilter:
    """``q``'s clip filter with what the lake knows lent to it, once: its ``scenarios``' clips
    (``scenario_hits``), its ``policy`` term's (``policy_errors``) and its ``text_tags``'
    (``text_tag_scores``), at the ``pinned`` table versions (latest where not given), then
    the clips its ``similar_to_text`` finds among those the rest keeps. An unknown policy or
    tag, or a model without a text side, is a ConfigError naming the valid ones."""
    pinned = pinned or {}
    f = resolve_filter(lake, q.clip_filter(), pinned.get("scenario_hits"))
    assert isinstance(f, QueryFilter)
    if q.policy is not None:
        spec = policy_spec(lake, q.policy.ref)
        f = f.with_policy_clips(clips_over(lake, spec, q.policy.min_error, pinned.get("policy_errors")))
    if q.text_tags:
        tags = resolve_tags(lake, list(q.text_tags))
        f = f.with_text_tag_clips(passing_clips(lake, tags, pinned.get("text_tag_scores")))
    if q.similar_to_text is not None:
        f = f.with_text_clips(_described(lake, q.similar_to_text, f._predicate(with_text=False)))
    return f


def _described(lake: Lake, term: SimilarToText, where: str | None) -> frozenset[str]:
    from mining.search.by_text import similar_to_text

    _, hits = similar_to_text(lake, term.text, k=term.k, where=where, model=term.model)
    return frozenset(h.clip_id for h in hits if term.min_score is None or h.score >= term.min_score)


def clip_predicate(lake: Lake, q: DatasetQuery, version: int | None = None) -> str | None:
    """The query's clip predicate, its ``scenarios`` read from ``scenario_hits`` (at ``version``)
    and its ``policy`` and ``text_tags`` terms from their tables (latest)."""
    return resolve_query(lake, q, {"scenario_hits": version}).predicate()


def pin_text_tags(lake: Lake, refs: list[str]) -> list[str]:
    """``refs`` as the ``NAME@V`` each means now, each once; a ConfigError for an unknown tag
    or a version never run (a dataset of it would be empty as if no clip looked so)."""
    tags: list[TagSpec] = resolve_tags(lake, refs)
    unrun = [t.ref for t in tags if not tag_has_scores(lake, t)]
    if unrun:
        raise ConfigError(
            f"tag {unrun[0]} has scored no clip: `fleetmine tags run {unrun[0]}` first"
            + (f" ({len(unrun)} of the tags: {', '.join(unrun[:8])})" if len(unrun) > 1 else "")
        )
    return [t.ref for t in tags]


def pin_text_model(lake: Lake, term: SimilarToText) -> SimilarToText:
    """``term`` naming the version its text runs on (``NAME@V``); a ConfigError naming the
    versions with a text side when that one has none."""
    from mining.search.by_text import text_model

    return term.model_copy(update={"model": text_model(lake, term.model).ref})


def pin_policy(lake: Lake, term: PolicyTerm) -> PolicyTerm:
    """``term`` naming the version it means now (``NAME`` -> ``NAME@V``); a ConfigError for an
    unknown policy or a version never shadow-run (a dataset of it would be empty as if the
    policy agreed with every driver)."""
    spec = policy_spec(lake, term.ref)
    if not has_scores(lake, spec):
        raise ConfigError(
            f"policy {spec.ref} has scored no clip: `fleetmine shadow --policy {spec.ref}` first"
        )
    return term.model_copy(update={"ref": spec.ref})


def select_clips(lake: Lake, q: DatasetQuery, versions: dict[str, int]) -> list[dict[str, Any]]:
    """The clips the query selects, at the pinned table versions, sorted by clip id (all
    in memory: for small queries and tests; :func:`create_version` streams them)."""
    return [r for rows in selected_batches(lake, q, versions) for r in rows.to_pylist()]


def create_version(lake: Lake, name: str, q: DatasetQuery, batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """A new version of ``name``: the clips ``q`` selects, streamed from the engine a span
    of days at a time (:func:`mining.datasets.members.selected_batches`) into ``dataset_clips``
    data files, published in one commit, then its ``datasets`` row. Memory holds one
    span, whatever the version's size."""
    if not name or any(c in name for c in "/\\.@ ") or len(name) > 100:
        raise ConfigError(f"dataset name {name!r}: letters, digits, '-' and '_' only")
    if q.scenarios:
        # each NAME as the NAME@V it means now, once: the version's query says which
        # definitions it holds, and a version added while this create runs changes nothing
        q = q.model_copy(update={"scenarios": resolve_refs(lake, list(q.scenarios))})
    if q.policy is not None:
        q = q.model_copy(update={"policy": pin_policy(lake, q.policy)})
    if q.text_tags:
        q = q.model_copy(update={"text_tags": pin_text_tags(lake, list(q.text_tags))})
    if q.similar_to_text is not None:
        q = q.model_copy(update={"similar_to_text": pin_text_model(lake, q.similar_to_text)})
    lake.create_tables(
        [
            "datasets",
            "dataset_clips",
            "dataset_spans",
            "mining_scores",
            "embeddings",
            "reviews",
            "scenario_hits",
        ]
    )
    pinned = {
        t: lake.version(t)
        for t in ("clips", "signals", "embeddings", "mining_scores", "reviews", "scenario_hits")
    }
    if q.policy is not None:  # the table exists: pin_policy found the version's rows
        pinned["policy_errors"] = lake.version("policy_errors")
    if q.text_tags:  # the table exists: pin_text_tags found each version's rows
        pinned["text_tag_scores"] = lake.version("text_tag_scores")
    model = resolve(lake, q.model).ref
    # Versions are numbered per name: two creates at once must not both take
    # max + 1, so the number is claimed and both rows written under a lease.
    with lake.lease(f"dataset:{name}", this_process(), ttl_s=3600.0, wait_s=120.0):
        # Members are written first: a create that died before its datasets row
        # still used its number, so numbers come from both tables.
        version = 1 + max(
            (
                int(v)
                for table in ("datasets", "dataset_clips", "dataset_spans")
                for v in lake.query(
                    table,
                    columns=["version"],
                    where=f"name = {literal(name)}",
                    order_by=["version DESC"],
                    limit=1,
                )
                .column("version")
                .to_pylist()
            ),
            default=0,
        )
        writer = lake.writer("dataset_clips")
        actions = []
        count = 0
        if q.samples == "span":
            batches: Iterable[tuple[pa.Array, pa.Array]] = [_span_members(lake, name, version, q, pinned)]
        else:
            batches = (
                (rows.column("clip_id"), split_of(rows.column("drive_id").combine_chunks(), q.val_fraction))
                for rows in selected_batches(lake, q, pinned, batch_rows)
            )
        for ids, splits in batches:
            members = pa.table(
                {
                    "name": pa.array([name] * len(ids), pa.string()),
                    "version": pa.array([version] * len(ids), pa.int32()),
                    "clip_id": ids,
                    "split": splits,
                }
            )
            if members.num_rows:
                actions += writer.write(dataset_clips.SPEC.conform(members))
            count += members.num_rows
        if actions:
            lake.commit("dataset_clips", actions)
        row = {
            "name": name,
            "version": version,
            "query": q.model_dump_json(),
            "created_at": dt.datetime.now(dt.UTC),
            "clip_count": count,
            "manifest_uri": None,
            "state": "created",
            "lake_version": json.dumps(pinned, sort_keys=True),
            "model": model,
        }
        lake.append("datasets", pa.Table.from_pylist([row], schema=datasets.SPEC.schema))
    return row


def _span_members(
    lake: Lake, name: str, version: int, q: DatasetQuery, pinned: dict[str, int]
) -> tuple[pa.Array, pa.Array]:
    """A span version's samples into ``dataset_spans`` (one commit, before its members: a
    create that dies after it has used its number, see above); its members are the clips
    the windows overlap, each with its drive's split."""
    spans = select_spans(lake, q, pinned)
    if spans:
        rows = [{"name": name, "version": version, **s} for s in spans]
        lake.append("dataset_spans", pa.Table.from_pylist(rows, schema=dataset_spans.SPEC.schema))
    split = {c: s["split"] for s in spans for c in s["clip_ids"]}
    ids = sorted(split)
    return pa.array(ids, pa.string()), pa.array([split[c] for c in ids], pa.string())


def get_version(lake: Lake, name: str, version: int) -> dict[str, Any]:
    rows = lake.read("datasets", where=f"name = {literal(name)} AND version = {int(version)}").to_pylist()
    if not rows:
        raise NotFoundError(f"no dataset {name} version {version}")
    return rows[0]
