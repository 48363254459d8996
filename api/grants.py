"""Shard grants: signed, expiring, read-only permission to GET the shards of exactly one
dataset version, carried in the shard URL so that loaders need no header.

A grant is the query parameter ``grant=g1.<token_id>.<expires>.<signature>``:
``signature`` is HMAC-SHA256, under the lake's grant key (:func:`storage.secrets.lake_secret`),
of ``g1/<name>/<version>/<token_id>/<expires>``. A shard request checks, in constant
time, that the signature matches the name and version of the path it asks for, that
``expires`` (Unix seconds) has not passed, and that the token that minted it is still
live, so revoking a token revokes every grant it minted. Manifests carry grants; they
themselves still need the bearer token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass

from storage.lake import Lake
from storage.secrets import lake_secret

__all__ = ["GRANT_KEY", "GrantError", "Grants", "expiry"]

GRANT_KEY = "shard-grants"
_VERSION = "g1"
_FORM = re.compile(r"^g1\.([0-9a-f]{1,64})\.(\d{1,12})\.([A-Za-z0-9_-]{43})$")


class GrantError(Exception):
    """A grant that does not admit the request; the message says why (shown with the 403)."""


def expiry(now: float, ttl_s: int) -> int:
    """When a grant minted at ``now`` expires: ``ttl_s`` later, rounded up to a step of
    at most an hour, so that one token's manifests in one step are the same bytes."""
    step = max(1, min(3600, ttl_s // 24))
    return int(math.ceil((now + ttl_s) / step) * step)


@dataclass(frozen=True)
class Grants:
    """Mints and checks grants under one key."""

    key: bytes

    @classmethod
    def of(cls, lake: Lake) -> Grants:
        return cls(lake_secret(lake, GRANT_KEY))

    def _sign(self, name: str, version: int, token_id: str, expires: int) -> str:
        msg = f"{_VERSION}/{name}/{int(version)}/{token_id}/{int(expires)}".encode()
        digest = hmac.new(self.key, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def mint(self, name: str, version: int, token_id: str, expires: int) -> str:
        if not re.fullmatch(r"[0-9a-f]{1,64}", token_id):
            raise ValueError(f"token id {token_id!r}: lowercase hex")
        return f"{_VERSION}.{token_id}.{int(expires)}.{self._sign(name, version, token_id, expires)}"

    def check(self, grant: str, name: str, version: int, now: float | None = None) -> str:
        """The id of the token that minted ``grant`` if it admits ``name``/``version`` now."""
        m = _FORM.match(grant)
        if m is None:
            raise GrantError("malformed shard grant")
        token_id, expires, signature = m.group(1), int(m.group(2)), m.group(3)
        expected = self._sign(name, version, token_id, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise GrantError(f"this grant is not for {name} version {version}")
        if (time.time() if now is None else now) >= expires:
            raise GrantError("this shard grant has expired: fetch the manifest again")
        return token_id
