"""Dependencies of every route: the lake, the caller and their role."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request

from api.auth import ROLES, failure_keys
from api.grants import GrantError, Grants
from api.sessions import COOKIE, Sessions
from storage.bounds import MAX_VERSION
from storage.lake import Lake

__all__ = [
    "Caller",
    "LakeDep",
    "ShardReader",
    "client_address",
    "grants",
    "refuse_wrong_token",
    "require",
    "sessions",
]


# Dependencies that only look at the request are ``async``: FastAPI runs a plain ``def``
# one in the thread pool, a hop (and a wait for a free thread under load) per dependency
# per request for what is an attribute lookup.


async def _lake(request: Request) -> Lake:
    lake: Lake = request.app.state.lake
    return lake


LakeDep = Annotated[Lake, Depends(_lake)]


def sessions(request: Request) -> Sessions:
    """The lake's web sessions, their key read (or made) on first use."""
    held: Sessions | None = request.app.state.sessions
    if held is None:
        held = request.app.state.sessions = Sessions(request.app.state.lake)
    return held


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


def client_address(request: Request) -> str:
    """The caller's address: the peer, or what a trusted proxy said (see :mod:`api.proxies`)."""
    return request.client.host if request.client else "?"


def refuse_wrong_token(request: Request, secret: str) -> None:
    """A wrong token's answer: 401, or 429 once its address or its prefix has failed too
    often in the window (see :class:`api.auth.AuthFailures`); counts it unless refused."""
    failures = request.app.state.auth_failures
    keys = failure_keys(client_address(request), secret)
    wait = failures.retry_after(keys)
    if wait is not None:
        raise HTTPException(
            429,
            "too many wrong tokens from this client; retry later",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    failures.failed(keys)


def _by_session(request: Request, value: str) -> Caller:
    """The caller a web session cookie stands for (see :mod:`api.sessions`)."""
    tid = sessions(request).check(value)
    who = None if tid is None else request.app.state.tokens.by_id(tid)
    if tid is None or who is None:  # not counted as a guess: a forged session fails its signature
        raise HTTPException(401, "session expired or signed out", headers={"WWW-Authenticate": "Bearer"})
    return Caller(who[0], who[1], token_id=tid)


def _current_caller(request: Request, lake: LakeDep) -> Caller:
    if not request.app.state.auth:
        return Caller("anonymous", "operator")
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if not header and request.cookies.get(COOKIE):  # the web pages (see api.routes.ui)
        return _by_session(request, request.cookies[COOKIE])
    if scheme.lower() != "bearer" or not secret:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    # The token first: a live one is never refused, whoever else failed from its address.
    who = request.app.state.tokens.verify(secret.strip())
    if who is None:
        refuse_wrong_token(request, secret.strip())
        raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return Caller(*who)


def _grant_or_token(
    request: Request,
    lake: LakeDep,
    name: Annotated[str, Path(max_length=100)],
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    grant: Annotated[str | None, Query(max_length=1024)] = None,
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
