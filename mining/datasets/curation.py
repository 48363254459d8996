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
from storage.bounds import MAX_BASKET, MAX_NAMES, ClipId, Name, Speed
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
    """A dataset query's :class:`ClipFilter` with its ``policy`` term. Like ``scenarios``, the
    term is a question for the lake: :func:`resolve_query` lends it the clips over
    ``min_error`` once, and the predicate holds them as a semi-join; an unresolved term
    refuses to make one."""

    policy: PolicyTerm | None = None
    _policy_clips: frozenset[str] | None = PrivateAttr(default=None)

    def with_policy_clips(self, clip_ids: frozenset[str]) -> QueryFilter:
        out = self.model_copy()
        out._policy_clips = frozenset(clip_ids)
        return out

    def predicate(self) -> str | None:
        where = super().predicate()
        if self.policy is None:
            return where
        if self._policy_clips is None:
            raise ConfigError("a policy term is resolved against the lake first (resolve_query)")
        parts = [where] if where else []
        parts.append(in_set("clip_id", sorted(self._policy_clips)))
        if self._policy_clips and (days := _id_days(list(self._policy_clips))):
            parts.append(_days_predicate(days))
        return " AND ".join(parts)


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
        description="clips whose latest review has any of these tags",
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
        )


def resolve_query(lake: Lake, q: DatasetQuery, pinned: Mapping[str, int | None] | None = None) -> ClipFilter:
    """``q``'s clip filter with what the lake knows lent to it, once: its ``scenarios``' clips
    (``scenario_hits``) and its ``policy`` term's (``policy_errors``), at the ``pinned``
    table versions (latest where not given). An unknown policy is a ConfigError naming the
    registered ones."""
    pinned = pinned or {}
    f = q.clip_filter()
    if q.policy is not None:
        spec = policy_spec(lake, q.policy.ref)
        f = f.with_policy_clips(clips_over(lake, spec, q.policy.min_error, pinned.get("policy_errors")))
    return resolve_filter(lake, f, pinned.get("scenario_hits"))


def clip_predicate(lake: Lake, q: DatasetQuery, version: int | None = None) -> str | None:
    """The query's clip predicate, its ``scenarios`` read from ``scenario_hits`` (at ``version``)
    and its ``policy`` term from ``policy_errors`` (latest)."""
    return resolve_query(lake, q, {"scenario_hits": version}).predicate()


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
