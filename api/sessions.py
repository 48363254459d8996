"""Web sign-in sessions: what the ``fleetmine_session`` cookie holds instead of the token.

A session is ``s1.<token_id>.<expires>.<nonce>.<signature>``: ``signature`` is
HMAC-SHA256, under the lake's session key (:func:`storage.secrets.lake_secret`), of
``s1/<token_id>/<expires>/<nonce>``. Every API replica of the lake holds the same key,
so any of them checks any session with no lookup: in constant time, that the signature
matches, that ``expires`` (Unix seconds, ``Settings.session_ttl_s`` after sign-in) has
not passed, and that the token it was made for is still live (revoking the token ends
its sessions). Signing out writes the session's hash to ``ended_sessions``, which every
replica reads when that table has a new Delta version, so the old cookie answers 401
everywhere afterwards. The cookie never holds the long-lived token.

One session has one spelling: the whole value must be the form (no trailing newline, no
leading zeros in ``expires``, ASCII digits and lower-case hex only), and what is hashed,
at sign-out and at every check, is the session re-spelled from its parsed parts (the
cookie as minted, so rows written before this rule still match), never the text a
client sent. Otherwise ``0<expires>`` or ``<value>\\n``, which the signature still
covers, would be a spelling of the session that sign-out never ended.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
import time
from typing import NamedTuple

import pyarrow as pa

from storage.lake import Lake
from storage.objectstore import reachable
from storage.secrets import lake_secret
from storage.sql import literal
from storage.tables import ended_sessions

__all__ = ["COOKIE", "SESSION_KEY", "Sessions"]

COOKIE = "fleetmine_session"
SESSION_KEY = "web-sessions"
_FORM = re.compile(r"s1\.([0-9a-f]{1,64})\.([1-9][0-9]{0,11})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})")


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class _Session(NamedTuple):
    """A session this lake signed, parsed: ``canonical`` is it as :meth:`Sessions.mint`
    spells it, what ``ended_sessions`` is keyed by."""

    token_id: str
    expires: int
    canonical: str


class Sessions:
    """Mints, checks and ends sessions of one lake."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.key = lake_secret(lake, SESSION_KEY)
        lake.create_tables(["ended_sessions"])
        self.table = lake.delta("ended_sessions")
        self.version = -1
        self.ended: frozenset[str] = frozenset()
        self.lock = threading.Lock()

    def _sign(self, token_id: str, expires: int, nonce: str) -> str:
        msg = f"s1/{token_id}/{int(expires)}/{nonce}".encode()
        return (
            base64.urlsafe_b64encode(hmac.new(self.key, msg, hashlib.sha256).digest()).rstrip(b"=").decode()
        )

    def _spelled(self, token_id: str, expires: int, nonce: str) -> str:
        """The one spelling of a session: as minted, checked and keyed in ``ended_sessions``."""
        return f"s1.{token_id}.{int(expires)}.{nonce}.{self._sign(token_id, expires, nonce)}"

    def mint(self, token_id: str, ttl_s: int, now: float | None = None) -> str:
        """A new session for the token with id ``token_id``, ending ``ttl_s`` from ``now``."""
        expires = int((time.time() if now is None else now) + ttl_s)
        return self._spelled(token_id, expires, secrets.token_urlsafe(16))

    def _parsed(self, value: str, now: float | None) -> _Session | None:
        """The session ``value`` spells, if this lake signed it and it has not expired."""
        m = _FORM.fullmatch(value)
        if m is None:
            return None
        token_id, expires, nonce = m.group(1), int(m.group(2)), m.group(3)
        canonical = self._spelled(token_id, expires, nonce)
        # The signature checked in constant time, and with it that ``value`` is the one
        # spelling of its session (the form alone already leaves no other).
        if not hmac.compare_digest(canonical.encode(), value.encode()):
            return None
        if (time.time() if now is None else now) >= expires:
            return None
        return _Session(token_id, expires, canonical)

    def _refresh(self) -> None:
        with reachable(self.lake.location("ended_sessions").uri):
            self.table.update_incremental()
        if self.table.version() != self.version:
            version = self.table.version()
            now = dt.datetime.now(dt.UTC)
            rows = self.lake.read("ended_sessions", columns=["session_hash", "expires_at"], version=version)
            self.ended = frozenset(
                r["session_hash"]
                for r in rows.to_pylist()
                if r["expires_at"] is None or r["expires_at"] > now
            )
            self.version = version

    def check(self, value: str, now: float | None = None) -> str | None:
        """The token id of a live session ``value``, else None (forged, expired, signed out)."""
        parsed = self._parsed(value, now)
        if parsed is None:
            return None
        with self.lock:
            self._refresh()
            if _hash(parsed.canonical) in self.ended:
                return None
        return parsed.token_id

    def end(self, value: str) -> None:
        """Signs ``value`` out on every replica (a value this lake did not sign, or one
        already expired, needs nothing); forgets sessions that have expired anyway."""
        parsed = self._parsed(value, None)
        if parsed is None:
            return
        now = dt.datetime.now(dt.UTC)
        row = {
            "session_hash": _hash(parsed.canonical),
            "expires_at": dt.datetime.fromtimestamp(parsed.expires, dt.UTC),
            "ended_at": now,
        }
        self.lake.upsert("ended_sessions", pa.Table.from_pylist([row], schema=ended_sessions.SPEC.schema))
        self.lake.delete("ended_sessions", f"expires_at < {literal(now)}")
