"""Bearer tokens with roles ``reader`` < ``curator`` < ``operator``, stored hashed in the lake."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading

import pyarrow as pa

from storage.errors import ConfigError, NotFoundError
from storage.lake import Lake
from storage.objectstore import reachable
from storage.sql import literal
from storage.tables import tokens

__all__ = ["ROLES", "TokenCache", "create_token", "revoke_token"]

ROLES = ("reader", "curator", "operator")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(lake: Lake, name: str, role: str) -> str:
    """A new secret for ``name`` (replacing any earlier one); only its hash is stored."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; roles: {list(ROLES)}")
    lake.create_tables(["tokens"])
    secret = "fm_" + secrets.token_urlsafe(32)
    row = {
        "name": name,
        "token_hash": _hash(secret),
        "role": role,
        "created_at": dt.datetime.now(dt.UTC),
        "revoked_at": None,
    }
    lake.upsert("tokens", pa.Table.from_pylist([row], schema=tokens.SPEC.schema))
    return secret


def revoke_token(lake: Lake, name: str) -> None:
    lake.create_tables(["tokens"])
    rows = lake.read("tokens", where=f"name = {literal(name)}").to_pylist()
    if not rows:
        raise NotFoundError(f"no token named {name!r}")
    rows[0]["revoked_at"] = dt.datetime.now(dt.UTC)
    lake.upsert("tokens", pa.Table.from_pylist(rows, schema=tokens.SPEC.schema))


class TokenCache:
    """Live tokens, re-read only when the ``tokens`` table has a new Delta version.

    Checking for a new version is a listing of the Delta log, not a table scan, so
    a revoked token stops working on the next request.
    """

    def __init__(self, lake: Lake):
        self.lake = lake
        self.table = lake.delta("tokens")
        self.version = -1
        self.live: dict[str, tuple[str, str]] = {}
        self.lock = threading.Lock()

    def verify(self, secret: str) -> tuple[str, str] | None:
        with self.lock:
            with reachable(self.lake.location("tokens").uri):
                self.table.update_incremental()
            if self.table.version() != self.version:
                rows = self.lake.read(
                    "tokens",
                    columns=["name", "token_hash", "role", "revoked_at"],
                    version=self.table.version(),
                )
                self.live = {
                    r["token_hash"]: (r["name"], r["role"])
                    for r in rows.to_pylist()
                    if r["revoked_at"] is None
                }
                self.version = self.table.version()
            return self.live.get(_hash(secret))
