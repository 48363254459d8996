"""Lake-wide leases by compare-and-swap on the ``_leases`` Delta table.

Acquire reads the lease log at version ``v``, checks nobody holds the lease, and
commits its grant as version ``v+1`` with no conflict retries: if anyone else
committed ``v+1`` first, the put-if-absent of the Delta log refuses ours and we
read again. Expired grants (``ttl``) do not block, so a crashed holder does not
wedge maintenance forever.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING

import pyarrow as pa
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction, CommitProperties, RemoveAction

from storage.errors import LeaseHeldError
from storage.sql import literal

if TYPE_CHECKING:
    from storage.lake import Lake

__all__ = ["acquire", "release", "renew", "this_process"]

_TABLE = "_leases"


def this_process() -> str:
    """A holder name that says who holds a lease: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _holders(lake: Lake, name: str, now: dt.datetime, version: int | None = None) -> list[dict[str, object]]:
    rows = lake.read(_TABLE, where=f"lease = {literal(name)}", version=version).to_pylist()
    released = {r["token"] for r in rows if r["action"] == "release"}
    return [
        r for r in rows if r["action"] == "grant" and r["token"] not in released and r["expires_at"] > now
    ]


def _row(name: str, token: str, holder: str, action: str, at: dt.datetime, expires: dt.datetime) -> pa.Table:
    return pa.table(
        {
            "lease": [name],
            "token": [token],
            "holder": [holder],
            "action": [action],
            "at": [at],
            "expires_at": [expires],
        }
    )


def acquire(
    lake: Lake, name: str, holder: str, ttl_s: float, attempts: int = 20, *, reclaim: bool = False
) -> str:
    """Grant ``name`` to ``holder`` for ``ttl_s``; :class:`LeaseHeldError` if someone else holds it.

    With ``reclaim``, a live grant to the same ``holder`` does not block: the holder
    names a unit of work (a run) whose earlier attempt died holding the lease, and
    the new grant takes over that grant's token, so one release frees both.
    """
    lake.create_tables([_TABLE])
    token = uuid.uuid4().hex
    writer = lake.writer(_TABLE)
    spec = writer.spec
    for _ in range(attempts):
        table = lake.delta(_TABLE)
        now = dt.datetime.now(dt.UTC)
        held = _holders(lake, name, now, version=table.version())
        if reclaim:
            mine = [h for h in held if h["holder"] == holder]
            held = [h for h in held if h["holder"] != holder]
            if mine and not held:
                token = str(mine[0]["token"])
        if held:
            h = held[0]
            raise LeaseHeldError(
                f"lease {name!r} is held by {h['holder']} until {h['expires_at']:%Y-%m-%d %H:%M:%S} UTC"
            )
        row = _row(name, token, holder, "grant", now, now + dt.timedelta(seconds=ttl_s))
        actions: list[AddAction | RemoveAction] = list(writer.write(spec.conform(row)))
        try:
            table.create_write_transaction(
                actions,
                mode="append",
                schema=table.schema(),
                commit_properties=CommitProperties(max_commit_retries=0),
            )
            return token
        except CommitFailedError:
            time.sleep(0.02)
    raise LeaseHeldError(f"lease {name!r}: too much contention, gave up after {attempts} tries")


def release(lake: Lake, name: str, token: str, holder: str) -> None:
    now = dt.datetime.now(dt.UTC)
    row = _row(name, token, holder, "release", now, now)
    lake.append(_TABLE, row)


def renew(lake: Lake, name: str, token: str, holder: str, ttl_s: float) -> None:
    """Extend a lease this holder still holds (a long-running holder, e.g. the scheduler).

    The grant being extended is still live while the new one is written, so nobody
    else can acquire in between; a lease already expired or taken raises.
    """
    now = dt.datetime.now(dt.UTC)
    mine = [h for h in _holders(lake, name, now) if h["token"] == token]
    if not mine:
        raise LeaseHeldError(f"lease {name!r} is no longer held by {holder}")
    row = _row(name, token, holder, "grant", now, now + dt.timedelta(seconds=ttl_s))
    lake.append(_TABLE, row)
