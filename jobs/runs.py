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


JOB_LEASE_TTL_S = 300.0
"""How long a job's lease outlives its holder: a driver that died frees it within this."""


@contextmanager
def one_at_a_time(lake: Lake, app_id: str) -> Iterator[None]:
    """Run the block as the only job of ``app_id`` (``embed:<model>``, ``mine:<model>``) on
    the lake; a second one is refused, naming the holder.

    Such a job plans from the lake (the clips still lacking a vector, the clips added since
    the last scores), takes the next run number and commits under it. Two at once would plan
    the same clips: under one number the second finds the first's ``txn`` and commits
    nothing, yet records counts it never landed; under two numbers both commit, and the
    clips both embedded get two vectors. Holding the lease from before the plan to after the
    commit leaves neither. It is renewed while the job runs (``keep_alive``).
    """
    from contextlib import ExitStack

    from storage.errors import LeaseHeldError
    from storage.lease import this_process

    with ExitStack() as held:
        try:  # only the grant is reworded: an error of the job itself goes up as it is
            held.enter_context(
                lake.lease(f"job:{app_id}", this_process(), ttl_s=JOB_LEASE_TTL_S, keep_alive=True)
            )
        except LeaseHeldError as exc:
            raise LeaseHeldError(
                f"another {app_id} job is running on this lake ({exc}); run again when it ends"
            ) from exc
        yield
