"""Who a client is, for counting: the unit that limits per address count in."""

from __future__ import annotations

import ipaddress


def client_network(address: str | None) -> str:
    """The unit limits count: an IPv4 address, or an IPv6 /64 (what one subscriber
    gets, so a single machine cannot spread itself over 2**64 addresses)."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
