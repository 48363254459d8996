"""Who the client is, and what address the server answers as, believing forwarded
headers only from ``Settings.trusted_proxies``.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are headers anyone can send: believed
from everyone (or from loopback, uvicorn's default, which is every client of a proxy
on the same host), rotating them resets any per-client limit and a made-up ``Host``
lands in the URLs the server answers. So ``fleetmine serve`` turns uvicorn's own
proxy handling off and :class:`ForwardedHeaders` decides: from a trusted peer the
client is the nearest untrusted address of ``X-Forwarded-For`` and the scheme is
``X-Forwarded-Proto``; from anyone else the headers are ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["VIA_PROXY", "ForwardedHeaders", "TrustedProxies", "public_base"]

VIA_PROXY = "fleetmine.via_trusted_proxy"
"""Scope key: True when the request came through a trusted proxy."""

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Addresses and CIDR networks; a bad entry fails here, when the app is made."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: list[_Net] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ValueError(f"trusted_proxies: {entry!r} is not an address or CIDR network") from None

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str) or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client_of(self, forwarded_for: str) -> str | None:
        """The nearest address in ``X-Forwarded-For`` that is not a trusted proxy (each
        proxy appends, so the right end is the one our proxy wrote); None if none parses."""
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            host = hop[1 : hop.find("]")] if hop.startswith("[") else hop
            if host.count(":") == 1:  # IPv4 with a port
                host = host.split(":", 1)[0]
            try:
                ipaddress.ip_address(host)
            except ValueError:
                return None  # garbage where an address should be: believe none of it
            if host not in self:
                return host
        return None


class ForwardedHeaders:
    """Sets the scope's client and scheme from forwarded headers of a trusted peer."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = (scope.get("client") or (None,))[0]
        if scope["type"] == "http" and peer in self.proxies:
            scope = dict(scope)
            scope[VIA_PROXY] = True
            forwarded = b", ".join(v for k, v in scope["headers"] if k == b"x-forwarded-for")
            client = self.proxies.client_of(forwarded.decode("latin-1")) if forwarded else None
            if client is not None:
                scope["client"] = (client, 0)
            proto = [v for k, v in scope["headers"] if k == b"x-forwarded-proto"]
            if proto and proto[-1].strip().lower() in (b"http", b"https"):
                scope["scheme"] = proto[-1].strip().lower().decode()
        await self.app(scope, receive, send)


def public_base(request: Request) -> str:
    """``scheme://host[:port]`` for the absolute URLs of an answer: ``Settings.public_url``;
    else the Host a trusted proxy forwarded; else the address this connection came in
    on (the server's own socket), never a ``Host`` header a client wrote."""
    configured: str | None = request.app.state.settings.public_url
    if configured:
        return configured
    if request.scope.get(VIA_PROXY):
        return str(request.base_url).rstrip("/")
    server = request.scope.get("server")
    if not server:
        return str(request.base_url).rstrip("/")  # no socket (an in-process test client)
    host, port = server[0], server[1]
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}.get(request.url.scheme)
    return f"{request.url.scheme}://{host}" + ("" if port in (None, default) else f":{port}")
