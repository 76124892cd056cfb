"""Where a URL someone else chose may point: the check against server-side request forgery.

A user who gives us a webhook URL chooses where our workers send a request from inside our
network. Pointed at 127.0.0.1, 169.254.169.254 (a cloud's metadata service), a private
range or a cluster service, it would reach what the internet cannot. So a URL passes only
if its scheme is allowed, it carries no user name or password, its port is allowed, and
EVERY address its host resolves to is a public internet address. We resolve the name
ourselves and hand the checked addresses on: `outbound.http` connects to one of them and
never resolves the name again, so a DNS answer that changes after the check (rebinding)
cannot move the request.

Numeric spellings of an address (`2130706433`, `0x7f.1`, `0177.0.0.1`) are whatever the
system resolver makes of them, and the addresses it returns are what is checked, so no
spelling gets past. `settings.OUTBOUND_ALLOWED_HOSTS` names the host names and networks
let through although private (development and tests, whose receivers run on loopback); a
caller whose URLs come from elsewhere may pass an allow-list of its own (`allowed`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from outbound.errors import UnsafeURL

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = frozenset({"http", "https"})
# The web's own ports and every unprivileged one: below 1024 live SSH, SMTP, IMAP, SMB...,
# which a POST with a body we partly choose must not be able to talk to.
DEFAULT_PORTS = {"http": 80, "https": 443}
LOW_PORTS_ALLOWED = frozenset({80, 443})
MAX_URL_CHARS = 2000
# getaddrinfo cannot be cancelled and a hostile name server can make it wait for many
# seconds: it runs on threads of its own and the caller waits at most this long.
RESOLVE_TIMEOUT_S = 3.0
RESOLVER_THREADS = 16

_resolver = ThreadPoolExecutor(max_workers=RESOLVER_THREADS, thread_name_prefix="outbound-dns")
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
# Printable ASCII but the space: left as they are in a path; anything else is %-encoded.
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# Checked before the ipaddress module's properties, which differ between Python versions
# and miss some of these (100.64/10 is neither private nor global in some; the IPv6
# transition ranges are judged by the IPv4 address they carry, below).
_REFUSED: tuple[tuple[tuple[IPNetwork, ...], str], ...] = (
    (_nets("0.0.0.0/8", "::/128"), "unspecified"),
    (_nets("127.0.0.0/8", "::1/128"), "loopback"),
    (_nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), "private network"),
    (_nets("169.254.0.0/16", "fe80::/10"), "link-local (cloud metadata services live here)"),
    (_nets("100.64.0.0/10"), "carrier-grade NAT"),
    (_nets("fc00::/7"), "unique local"),
    (_nets("fec0::/10"), "site-local"),
    (_nets("224.0.0.0/4", "ff00::/8"), "multicast"),
    (_nets("240.0.0.0/4", "255.255.255.255/32"), "reserved"),
    (_nets("192.0.0.0/24", "2001::/23"), "IETF protocol assignments"),
    (_nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32",
           "3fff::/20"), "documentation"),
    (_nets("198.18.0.0/15"), "benchmarking"),
    (_nets("192.88.99.0/24"), "6to4 relay anycast"),
    (_nets("64:ff9b:1::/48"), "NAT64 local use"),
    (_nets("100::/64"), "discard"),
    (_nets("::/96"), "IPv4-compatible (deprecated)"),
    (_nets("5f00::/16"), "segment routing"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated addresses (RFC 2765)


def _translated_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 or IPv4-translated address stands for: a
    connection to it is a connection to that IPv4 address, and is judged as one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or address in _SIIT:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _tunnelled_v4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a 6to4 or Teredo address carries, which a relay may connect to."""
    found = []
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def address_refusal(address: IPAddress) -> str | None:
    """Why `address` is not a public internet address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        translated = _translated_v4(address)
        if translated is not None:
            reason = address_refusal(translated)
            return f"{reason}, inside an IPv6 address" if reason else None
        for inner in _tunnelled_v4(address):
            reason = address_refusal(inner)
            if reason:
                return f"{reason}, inside an IPv6 address"
    for networks, reason in _REFUSED:
        if any(address in network for network in networks):
            return reason
    for name in ("loopback", "private", "link_local", "multicast", "reserved",
                 "unspecified", "site_local"):
        if getattr(address, f"is_{name}", False):
            return name.replace("_", "-")
    if not address.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed, taken apart, with the addresses it may be sent to."""

    url: str  # as given
    scheme: str
    host: str  # lower case, IDNA-encoded, without a final dot or IPv6 brackets
    port: int
    target: str  # path and query, %-encoded ASCII, at least "/"
    addresses: tuple[IPAddress, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS.get(self.scheme) else f"{host}:{self.port}"


@dataclass(frozen=True)
class _Parsed:
    url: str
    scheme: str
    host: str
    port: int
    target: str
    literal: IPAddress | None


def _refuse(code: str, url: str, why: str) -> UnsafeURL:
    shown = url if len(url) <= 200 else url[:200] + "…"
    return UnsafeURL(code, f"{shown!r} {why}")


def _parse(url: str, schemes: frozenset[str]) -> _Parsed:
    if len(url) > MAX_URL_CHARS:
        raise UnsafeURL("URL_INVALID", f"the URL is longer than {MAX_URL_CHARS} characters")
    # urlsplit silently drops tabs and newlines; a URL with any of them, a space or
    # another control character is not one we take.
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise _refuse("URL_INVALID", url, "contains a space or a control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refuse("URL_INVALID", url, "is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise _refuse("URL_SCHEME_NOT_ALLOWED", url, f"is not allowed: the scheme must be "
                      f"one of {allowed}")
    if "@" in parts.netloc:
        raise _refuse("URL_NOT_ALLOWED", url, "is not allowed: a URL may not carry a user "
                      "name or password")
    if "\\" in parts.netloc:
        raise _refuse("URL_INVALID", url, "is not a valid URL")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _refuse("URL_INVALID", url, "has no host name")
    literal: IPAddress | None = None
    if parts.netloc.startswith("["):
        try:
            literal = ipaddress.IPv6Address(host)
        except ValueError:
            raise _refuse("URL_INVALID", url, "has a malformed IPv6 address") from None
        if literal.scope_id:
            raise _refuse("URL_INVALID", url, "names an IPv6 zone")
    else:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise _refuse("URL_INVALID", url, "has a malformed host name") from None
        if not _HOST_NAME.fullmatch(host):
            raise _refuse("URL_INVALID", url, "has a malformed host name")
        try:
            literal = ipaddress.IPv4Address(host)
        except ValueError:
            literal = None  # a name, or an odd spelling of an address: resolved below
    if port is None:
        port = DEFAULT_PORTS[scheme] if scheme in DEFAULT_PORTS else 0
    if not 0 < port < 65536:
        raise _refuse("URL_INVALID", url, "has no valid port")
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_PATH_SAFE)
    return _Parsed(url, scheme, host, port, target, literal)


@functools.lru_cache(maxsize=8)
def _allow_list(entries: tuple[str, ...]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    names, networks = set(), []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.lower().rstrip("."))
    return frozenset(names), tuple(networks)


def _allowed(entries: Iterable[str] | None) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    if entries is None:
        from django.conf import settings

        entries = getattr(settings, "OUTBOUND_ALLOWED_HOSTS", ())
    return _allow_list(tuple(entries))


def _in(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        if any(address.ipv4_mapped in network for network in networks):
            return True
    return any(address in network for network in networks)


def _getaddrinfo(host: str, port: int) -> tuple[IPAddress, ...]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        found[ipaddress.ip_address(sockaddr[0].split("%", 1)[0])] = None
    return tuple(found)


def _unresolvable(parsed: _Parsed, why: str) -> UnsafeURL:
    return _refuse("URL_UNRESOLVABLE", parsed.url, f"cannot be reached: its host name {why}")


def _resolve(parsed: _Parsed) -> tuple[IPAddress, ...]:
    if parsed.literal is not None:
        return (parsed.literal,)
    future = _resolver.submit(_getaddrinfo, parsed.host, parsed.port)
    try:
        return future.result(timeout=RESOLVE_TIMEOUT_S)
    except FutureTimeout:
        raise _unresolvable(parsed, f"did not resolve within {RESOLVE_TIMEOUT_S:g} s") from None
    except (OSError, UnicodeError, ValueError):
        raise _unresolvable(parsed, "does not resolve") from None


async def _resolve_async(parsed: _Parsed) -> tuple[IPAddress, ...]:
    if parsed.literal is not None:
        return (parsed.literal,)
    future = asyncio.wrap_future(_resolver.submit(_getaddrinfo, parsed.host, parsed.port))
    try:
        return await asyncio.wait_for(future, RESOLVE_TIMEOUT_S)
    except TimeoutError:
        raise _unresolvable(parsed, f"did not resolve within {RESOLVE_TIMEOUT_S:g} s") from None
    except (OSError, UnicodeError, ValueError):
        raise _unresolvable(parsed, "does not resolve") from None


def _judge(parsed: _Parsed, addresses: tuple[IPAddress, ...],
           allowed: Iterable[str] | None = None) -> CheckedURL:
    if not addresses:
        raise _unresolvable(parsed, "resolves to no address")
    names, networks = _allowed(allowed)
    trusted = parsed.host in names
    for address in addresses:
        if trusted or _in(address, networks):
            continue
        reason = address_refusal(address)
        if reason:
            # The person who gave the URL is told only that it is not allowed: which
            # address an internal name has, and what sort, is ours.
            log.warning("outbound: refused %s: %s is %s", parsed.url, address, reason)
            raise _refuse("URL_NOT_ALLOWED", parsed.url, "is not allowed: its host is not "
                          "a public internet address")
    trusted = trusted or all(_in(address, networks) for address in addresses)
    if not trusted and parsed.port < 1024 and parsed.port not in LOW_PORTS_ALLOWED:
        raise _refuse("URL_NOT_ALLOWED", parsed.url, f"is not allowed: port {parsed.port} "
                      "is not one we send to (80, 443, or 1024 and up)")
    return CheckedURL(url=parsed.url, scheme=parsed.scheme, host=parsed.host,
                      port=parsed.port, target=parsed.target, addresses=addresses)


def url_check(url: str, *, schemes: frozenset[str] = SCHEMES,
              allowed: Iterable[str] | None = None) -> CheckedURL:
    """The URL taken apart with the addresses it may be sent to, or UnsafeURL.

    `allowed` (host names and IP networks let through although private) defaults to
    settings.OUTBOUND_ALLOWED_HOSTS. Blocks for at most RESOLVE_TIMEOUT_S while the host
    name resolves.
    """
    parsed = _parse(url, schemes)
    return _judge(parsed, _resolve(parsed), allowed)


async def url_check_async(url: str, *, schemes: frozenset[str] = SCHEMES,
                          allowed: Iterable[str] | None = None) -> CheckedURL:
    """url_check for code on an event loop: the name resolves on a thread."""
    parsed = _parse(url, schemes)
    return _judge(parsed, await _resolve_async(parsed), allowed)
