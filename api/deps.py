"""Dependencies of every route: the lake, the caller and their role."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.auth import ROLES
from api.grants import GrantError, Grants
from storage.lake import Lake

__all__ = ["Caller", "LakeDep", "ShardReader", "grants", "require"]


# Dependencies that only look at the request are ``async``: FastAPI runs a plain ``def``
# one in the thread pool, a hop (and a wait for a free thread under load) per dependency
# per request for what is an attribute lookup.


async def _lake(request: Request) -> Lake:
    lake: Lake = request.app.state.lake
    return lake


LakeDep = Annotated[Lake, Depends(_lake)]


def grants(request: Request) -> Grants:
    """The lake's grant signer, its key read (or made) on first use."""
    signer: Grants | None = request.app.state.grants
    if signer is None:
        signer = request.app.state.grants = Grants.of(request.app.state.lake)
    return signer


@dataclass(frozen=True)
class Caller:
    name: str
    role: str
    token_id: str | None = None  # None where auth is off


def _current_caller(request: Request, lake: LakeDep) -> Caller:
    if not request.app.state.auth:
        return Caller("anonymous", "operator")
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if not header and request.cookies.get("fleetmine_token"):  # the web pages (see api.routes.ui)
        scheme, secret = "bearer", request.cookies["fleetmine_token"]
    if scheme.lower() != "bearer" or not secret:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    client = request.client.host if request.client else "?"
    failures = request.app.state.auth_failures
    wait = failures.retry_after(client)
    if wait is not None:  # checked before the token: guessing on stays pointless
        raise HTTPException(
            429,
            "too many wrong tokens from this client; retry later",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    who = request.app.state.tokens.verify(secret.strip())
    if who is None:
        failures.failed(client)
        raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return Caller(*who)


def _grant_or_token(
    request: Request, lake: LakeDep, name: str, version: int, grant: str | None = None
) -> Caller:
    """Shard requests: a grant in the URL (see :mod:`api.grants`), else the bearer token."""
    if grant is None or not request.app.state.auth:
        return _admit(_current_caller(request, lake), "reader")
    try:
        tid = grants(request).check(grant, name, version)
    except GrantError as exc:
        raise HTTPException(403, str(exc)) from None
    who = request.app.state.tokens.by_id(tid)
    if who is None:
        raise HTTPException(403, "the token that minted this shard grant was revoked")
    return Caller(who[0], who[1], token_id=tid)


def _admit(caller: Caller, role: str) -> Caller:
    """``caller``, if their role is ``role`` or a higher one; else 403."""
    if ROLES.index(caller.role) < ROLES.index(role):
        raise HTTPException(403, f"{caller.role} tokens cannot do this; it needs {role}")
    return caller


def require(role: str):  # type: ignore[no-untyped-def]
    """A dependency admitting callers with ``role`` or a higher one."""
    ROLES.index(role)  # an unknown role fails here, when the route is declared

    async def check(caller: Annotated[Caller, Depends(_current_caller)]) -> Caller:
        return _admit(caller, role)

    return check


Reader = Annotated[Caller, Depends(require("reader"))]
Curator = Annotated[Caller, Depends(require("curator"))]
Operator = Annotated[Caller, Depends(require("operator"))]
ShardReader = Annotated[Caller, Depends(_grant_or_token)]
"""A reader by bearer token, or by a shard grant for the version in the path."""
