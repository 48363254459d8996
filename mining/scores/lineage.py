"""Which run a model version's current scores belong to, and reading them.

A full ``mine`` run writes every clip's row; each incremental run after it writes the
rows of the clips it added or re-scored, naming the full run as its ``base_run``. That
lineage holds the version's current scores: each clip's newest row in it.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mining.interfaces import ModelSpec
from mining.scores.rescore import newest_per_clip
from storage.errors import TableNotFoundError
from storage.lake import Lake
from storage.sql import in_list, literal

__all__ = ["current_scores", "latest_run", "latest_scores", "lineage_of", "lineage_predicate"]


def latest_run(lake: Lake, spec: ModelSpec, version: int | None = None) -> tuple[str, str | None] | None:
    """The model version's newest run and the full run it was scored against, from the
    Delta log's file statistics (each data file holds one run): no data file is read."""
    try:
        delta = lake.delta("mining_scores", version)
    except TableNotFoundError:
        return None
    adds = pa.table(delta.get_add_actions(flatten=True))
    if adds.num_rows == 0 or "min.model_version" not in adds.column_names:
        return None
    mine = adds.filter(pc.equal(adds.column("min.model_version"), spec.ref))
    if mine.num_rows == 0:
        return None
    run = str(pc.max(mine.column("max.run_id")).as_py())
    if "max.base_run" not in mine.column_names:
        return run, None
    of_run = mine.filter(pc.equal(mine.column("max.run_id"), run))
    base = pc.max(of_run.column("max.base_run")).as_py()
    return run, None if base is None else str(base)


def lineage_of(spec: ModelSpec, run: str, base: str | None) -> str:
    where = f"model_version = {literal(spec.ref)}"
    return where + (f" AND base_run = {literal(base)}" if base else f" AND run_id = {literal(run)}")


def latest_scores(lake: Lake, spec: ModelSpec, version: int | None = None) -> list[dict[str, Any]]:
    """The current score of every clip of ``spec``: of the rows of the latest full run and
    the incremental runs after it, each clip's newest (an incremental run re-scores the
    old clips its new ones came near)."""
    found = latest_run(lake, spec, version)
    if found is None:
        return []
    rows = lake.read("mining_scores", where=lineage_of(spec, *found), version=version)
    return newest_per_clip(rows).to_pylist()


def current_scores(
    lake: Lake,
    spec: ModelSpec,
    ids: list[str],
    columns: list[str] | None = None,
    days: list[Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The current score row of each of ``ids`` (a page of clips, not the corpus): its newest
    row of the latest full run's lineage. A page must not filter on the newest run alone:
    after an incremental run that holds only the clips it added or re-scored."""
    found = latest_run(lake, spec) if ids else None
    if found is None:
        return {}
    where = lineage_of(spec, *found) + f" AND clip_id IN ({in_list(ids)})"
    if days:
        where += f" AND date IN ({', '.join(literal(d) for d in sorted(set(days)))})"
    cols = None if columns is None else sorted({*columns, "clip_id", "run_id"})
    rows = newest_per_clip(lake.read("mining_scores", columns=cols, where=where))
    return {r["clip_id"]: r for r in rows.to_pylist()}


def lineage_predicate(lake: Lake, spec: ModelSpec) -> str | None:
    """The SQL predicate of the rows that hold the model version's current scores, or None."""
    found = latest_run(lake, spec)
    return None if found is None else lineage_of(spec, *found)
