"""Where a host's registered URL may point.

A host chooses the `apiUrl` it registers in NodeRegistry, and every client then probes it,
asks it for quotes and streams from it, from inside our network. Registered as
`http://169.254.169.254/` (a cloud's metadata service), `http://127.0.0.1:6379/` or a
private address, it would make us send requests the internet cannot. So a host URL passes
the webhooks' policy (outbound.policy): http(s) or ws(s), no user name or password, ports
80, 443 or 1024 and up, and every address its name resolves to a public internet
address. Host names and networks in `settings.MARKETPLACE_ALLOWED_HOST_NETWORKS` are let
through although private (local hosts in development and tests, an operator's own hosts).

With MARKETPLACE_REQUIRE_TLS (on in production) a host is reached over https/wss only,
except on loopback and the operator's own hosts named in
MARKETPLACE_ALLOWED_HOST_NETWORKS (pods on the cluster's network): encryption end to end
hides what a stream says, TLS also hides which job it is from the network between.

The URL is checked before anything is sent to the host, and again at every connection:
the pool's resolver (`HostResolver`) resolves a host's name through the same policy, so a
name that answers a public address to the check and a private one when we connect (DNS
rebinding) gets no connection. Redirects from hosts are never followed (see pool.py).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings

from marketplace.client.errors import ClientError, HostFault
from outbound.errors import UnsafeURL
from outbound.policy import url_check_async

# A host serves HTTP and its WebSocket on one port: a ws(s) URL names the same server.
_AS_HTTP = {"ws": "http", "wss": "https"}


def _as_http(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in _AS_HTTP:
        return f"{_AS_HTTP[scheme.lower()]}://{rest}"
    return url


async def host_url_check(url: str) -> str:
    """The host's base URL over http(s) when the policy lets it through; otherwise
    ClientError HOST_URL_REFUSED (or HOST_UNAVAILABLE while its name does not resolve),
    and nothing has been sent to it."""
    http = _as_http(url)
    if settings.MARKETPLACE_REQUIRE_TLS and not http.lower().startswith("https://") \
            and not _ours(http):
        raise ClientError(HostFault.TLS_REQUIRED, "this client reaches hosts over https/wss "
                          "only (MARKETPLACE_REQUIRE_TLS)", permanent=False)
    try:
        await url_check_async(http, allowed=settings.MARKETPLACE_ALLOWED_HOST_NETWORKS)
    except UnsafeURL as exc:
        code = "HOST_UNAVAILABLE" if exc.code == "URL_UNRESOLVABLE" else HostFault.URL_REFUSED
        raise ClientError(code, f"{exc.code}: {exc.message}", permanent=False) from None
    return http.rstrip("/")


def _ours(url: str) -> bool:
    """Loopback, or one of the operator's own hosts, named in the allow-list."""
    name = (urlsplit(url).hostname or "").lower().rstrip(".")
    if name == "localhost" or name in {entry.lower().rstrip(".") for entry in
                                       settings.MARKETPLACE_ALLOWED_HOST_NETWORKS}:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostResolver(AbstractResolver):
    """aiohttp's name resolution for connections to hosts, through the policy: a name
    resolves only to the addresses the policy let through, or not at all (OSError, which
    aiohttp reports as a connection error). aiohttp resolves no address written as one;
    those are checked by host_url_check before any request."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        shown = f"[{host}]" if ":" in host else host
        try:
            checked = await url_check_async(
                f"http://{shown}:{port or 80}/",
                allowed=settings.MARKETPLACE_ALLOWED_HOST_NETWORKS)
        except UnsafeURL as exc:
            raise OSError(f"{host}: {exc.message}") from None
        found: list[ResolveResult] = []
        for address in checked.addresses:
            kind = socket.AF_INET6 if isinstance(address, ipaddress.IPv6Address) \
                else socket.AF_INET
            if family in (socket.AF_UNSPEC, kind):
                found.append({"hostname": host, "host": str(address), "port": port,
                              "family": kind, "proto": 0, "flags": socket.AI_NUMERICHOST})
        if not found:
            raise OSError(f"{host}: no address of the wanted family")
        return found

    async def close(self) -> None:
        return None
