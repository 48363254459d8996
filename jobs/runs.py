"""The ``runs`` row of a job: written ``running`` when it starts, final when it ends.

Every job kind records itself the same way, so ``runs`` (and later the cluster job
list) shows what ran, with its parameters, counters and per-item errors. A job
that raises is recorded ``failed`` with the reason and the exception goes on.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from storage.lake import Lake
from storage.tables import runs

__all__ = ["RunRecord", "record_run", "run_row"]


@dataclass
class RunRecord:
    run_id: str
    kind: str
    params: dict[str, Any]
    app_id: str | None = None
    run_number: int | None = None
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    counts: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)


def run_row(rec: RunRecord, status: str) -> pa.Table:
    return runs.SPEC.conform(
        pa.Table.from_pylist(
            [
                {
                    "run_id": rec.run_id,
                    "kind": rec.kind,
                    "app_id": rec.app_id or rec.kind,
                    "run_number": rec.run_number,
                    "params": json.dumps(rec.params, sort_keys=True, default=str),
                    "status": status,
                    "started_at": rec.started_at,
                    "finished_at": None if status == "running" else dt.datetime.now(dt.UTC),
                    "counts": json.dumps(rec.counts, sort_keys=True, default=str),
                    "errors": json.dumps(rec.errors, default=str),
                }
            ],
            schema=runs.SPEC.schema,
        )
    )


@contextmanager
def record_run(lake: Lake, run_id: str, kind: str, params: dict[str, Any]) -> Iterator[RunRecord]:
    """``running`` now; ``succeeded`` (``partial`` with per-item errors) or ``failed`` after."""
    lake.create_tables(["runs"])
    rec = RunRecord(run_id, kind, params)
    lake.upsert("runs", run_row(rec, "running"))
    try:
        yield rec
    except BaseException as exc:
        rec.errors.append({"job": f"{type(exc).__name__}: {exc}"})
        lake.upsert("runs", run_row(rec, "failed"))
        raise
    lake.upsert("runs", run_row(rec, "partial" if rec.errors else "succeeded"))
