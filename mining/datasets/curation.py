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
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from mining.datasets.members import BATCH_ROWS, selected_batches, split_of
from mining.encoders.registry import resolve
from storage.bounds import MAX_BASKET, MAX_NAMES, ClipId, Name, Speed
from storage.errors import ConfigError, NotFoundError
from storage.filters import ClipFilter
from storage.lake import Lake
from storage.lease import this_process
from storage.sql import literal
from storage.tables import dataset_clips, datasets

__all__ = ["DatasetQuery", "SimilarTo", "clip_predicate", "create_version", "get_version", "select_clips"]


class SimilarTo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clip_ids: list[ClipId] = Field(min_length=1, max_length=100)
    k: int = Field(default=50, ge=1, le=10_000)
    max_distance: float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False)
    space: Literal["clip", "behaviour"] = Field(
        default="clip",
        description="what is compared (mining.search.queries.SPACES): the whole vector or behaviour",
    )


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
    samples: Literal["clip", "group"] = Field(
        default="clip",
        description="clip: one sample per clip; group: one sample per time window of a drive, with "
        "every camera's clip (`<group_id>.<camera>.mp4`) and one `.signals.npy`",
    )

    def clip_filter(self) -> ClipFilter:
        """The clips the query starts from (before similarity, novelty, dedup and limit)."""
        return ClipFilter(
            events=self.events,
            vehicles=self.vehicles,
            since=self.since,
            until=self.until,
            min_speed=self.min_speed,
            max_speed=self.max_speed,
            clip_ids=self.clip_ids,
        )


def clip_predicate(q: DatasetQuery) -> str | None:
    return q.clip_filter().predicate()


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
    lake.create_tables(["datasets", "dataset_clips", "mining_scores", "embeddings", "reviews"])
    pinned = {t: lake.version(t) for t in ("clips", "signals", "embeddings", "mining_scores", "reviews")}
    model = resolve(lake, q.model).ref
    # Versions are numbered per name: two creates at once must not both take
    # max + 1, so the number is claimed and both rows written under a lease.
    with lake.lease(f"dataset:{name}", this_process(), ttl_s=3600.0, wait_s=120.0):
        # Members are written first: a create that died before its datasets row
        # still used its number, so numbers come from both tables.
        version = 1 + max(
            (
                int(v)
                for table in ("datasets", "dataset_clips")
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
        for rows in selected_batches(lake, q, pinned, batch_rows):
            members = pa.table(
                {
                    "name": pa.array([name] * rows.num_rows, pa.string()),
                    "version": pa.array([version] * rows.num_rows, pa.int32()),
                    "clip_id": rows.column("clip_id"),
                    "split": split_of(rows.column("drive_id").combine_chunks(), q.val_fraction),
                }
            )
            actions += writer.write(dataset_clips.SPEC.conform(members))
            count += rows.num_rows
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


def get_version(lake: Lake, name: str, version: int) -> dict[str, Any]:
    rows = lake.read("datasets", where=f"name = {literal(name)} AND version = {int(version)}").to_pylist()
    if not rows:
        raise NotFoundError(f"no dataset {name} version {version}")
    return rows[0]
