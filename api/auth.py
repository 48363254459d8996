"""Bearer tokens with roles ``reader`` < ``curator`` < ``operator``, stored hashed in the lake."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque

import pyarrow as pa

from storage.errors import ConfigError, NotFoundError
from storage.lake import Lake
from storage.objectstore import reachable
from storage.sql import literal
from storage.tables import tokens

__all__ = [
    "ROLES",
    "AuthFailures",
    "TokenCache",
    "create_token",
    "failure_keys",
    "revoke_token",
    "token_id",
]

ROLES = ("reader", "curator", "operator")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_id(token_hash: str) -> str:
    """A token's public id (what shard grants name): derived from the stored hash, so a
    token made again under the same name has a new id and the old one's grants die."""
    return hashlib.sha256(f"token-id:{token_hash}".encode()).hexdigest()[:20]


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
        self.ids: dict[str, tuple[str, str]] = {}
        self.lock = threading.Lock()
        self.checked = float("-inf")  # when the listing behind ``live`` began

    def _refresh(self, asked: float) -> None:
        """Current as of a listing begun after ``asked`` (the caller's arrival): a caller
        that waited on the lock while another listed after it arrived takes that answer,
        so concurrent requests share one listing instead of queueing one each."""
        if self.checked >= asked:
            return
        checked = time.monotonic()
        with reachable(self.lake.location("tokens").uri):
            self.table.update_incremental()
        if self.table.version() != self.version:
            rows = self.lake.read(
                "tokens",
                columns=["name", "token_hash", "role", "revoked_at"],
                version=self.table.version(),
            )
            live = [r for r in rows.to_pylist() if r["revoked_at"] is None]
            self.live = {r["token_hash"]: (r["name"], r["role"]) for r in live}
            self.ids = {token_id(h): who for h, who in self.live.items()}
            self.version = self.table.version()
        self.checked = checked

    def verify(self, secret: str) -> tuple[str, str, str] | None:
        """``(name, role, token id)`` of the live token whose secret this is, else None."""
        h, asked = _hash(secret), time.monotonic()
        with self.lock:
            self._refresh(asked)
            # Every live hash is compared, each in constant time: how long a wrong token
            # takes says nothing about how close it came to a real one.
            found: tuple[str, tuple[str, str]] | None = None
            for token_hash, who in self.live.items():
                if hmac.compare_digest(token_hash.encode(), h.encode()):
                    found = (token_hash, who)
        return None if found is None else (*found[1], token_id(found[0]))

    def by_id(self, tid: str) -> tuple[str, str] | None:
        """``(name, role)`` of the live token with id ``tid``, else None (revoked or replaced)."""
        asked = time.monotonic()
        with self.lock:
            self._refresh(asked)
            return self.ids.get(tid)


PREFIX_CHARS = 8
"""Characters of a presented token that key its failures (``fm_`` and five of the secret)."""


def failure_keys(client: str, secret: str) -> tuple[str, str]:
    """What a wrong token counts against: the client's address, and the token's first
    characters, so that a guesser who rotates addresses (behind a trusted proxy) is still
    limited per prefix while one client's failures never lock out another's prefix."""
    return f"addr:{client}", f"prefix:{secret[:PREFIX_CHARS]}"


class AuthFailures:
    """Wrong tokens per key in a sliding window: past ``limit`` under any of a request's
    keys (see :func:`failure_keys`), a wrong token answers 429 instead of 401.

    Only wrong tokens are counted and refused: a live token is checked first and always
    admitted, so a crowd behind one address cannot lock a colleague out. The limit keeps
    guessing noisy and cheap to answer; what makes it hopeless is the 256-bit secret."""

    def __init__(self, limit: int, window_s: float, max_clients: int = 100_000):
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._seen.get(key)
        if q is None:
            if len(self._seen) >= self.max_clients:  # bounded: keys are whoever connects
                self._seen.clear()
            q = self._seen[key] = deque()
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def retry_after(self, keys: tuple[str, ...] | str) -> float | None:
        """Seconds until none of ``keys`` is over the limit, or None if none is now."""
        now = time.monotonic()
        waits = []
        with self._lock:
            for key in (keys,) if isinstance(keys, str) else keys:
                q = self._recent(key, now)
                if len(q) >= self.limit:
                    waits.append(self.window_s - (now - q[-self.limit]))
        return max(waits) if waits else None

    def failed(self, keys: tuple[str, ...] | str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (keys,) if isinstance(keys, str) else keys:
                self._recent(key, now).append(now)
