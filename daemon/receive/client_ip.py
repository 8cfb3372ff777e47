"""Who is the client: the TCP peer, or what a trusted proxy says it is.

The peer is believed unless it is one of `trusted_proxies`. Only then is the
configured header read: for `X-Forwarded-For` (every line joined in order) the
right-most entry that is not itself a trusted proxy is the client, since proxies
append and anything further left was written by the client; any other header
(`X-Real-IP`, `CF-Connecting-IP`) must carry exactly one address. An entry that is
not an address is an error, so a garbled header can never widen access.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDED_FOR = "x-forwarded-for"
_BRACKETED = re.compile(r"\[([^\]]+)\](?::\d+)?")


class ClientAddressError(ValueError):
    """The peer or a forwarding header does not hold a usable address."""


def parse_network(text: str) -> IPNetwork:
    """Parse a CIDR or a bare address (one host); host bits set is an error."""
    value = text.strip()
    if not value:
        raise ValueError("empty address")
    network = ipaddress.ip_network(value, strict=True)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> IPAddress:
    """Parse one address as written by a peer or a proxy, unmapping IPv4-in-IPv6."""
    value = text.strip()
    bracketed = _BRACKETED.fullmatch(value)  # "[2001:db8::1]:443"
    if bracketed:
        value = bracketed[1]
    elif value.count(":") == 1:  # "203.0.113.9:51234"
        value, _, port = value.partition(":")
        if not port.isdigit():
            raise ClientAddressError("not an IP address")
    value, percent, zone = value.partition("%")  # drop an IPv6 zone id
    if percent and not zone:
        raise ClientAddressError("not an IP address")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ClientAddressError("not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def contains(networks: Iterable[IPNetwork], address: IPAddress) -> bool:
    return any(address in network for network in networks)


def resolve_client(
    peer: str | None,
    header_lines: Mapping[str, Sequence[str]],
    trusted_proxies: Sequence[IPNetwork],
    header_name: str,
) -> IPAddress:
    """Return the client address for one request.

    `header_lines` maps a lower-case header name to all of its lines in order.
    Raises ClientAddressError when the peer or the trusted header is garbage.
    """
    if not peer:
        raise ClientAddressError("no peer address")
    address = parse_address(peer)
    if not contains(trusted_proxies, address):
        return address

    lines = header_lines.get(header_name.lower(), ())
    if not lines:
        # Not relayed: a request made from the proxy's own host (a local health
        # check or admin call). Trusting a proxy means trusting it to always set
        # the header on everything it relays.
        return address
    if header_name.lower() == FORWARDED_FOR:
        return _rightmost_untrusted(lines, trusted_proxies)
    if len(lines) > 1:
        raise ClientAddressError(f"{header_name} appears more than once")
    return parse_address(lines[0])


def _rightmost_untrusted(
    lines: Sequence[str], trusted_proxies: Sequence[IPNetwork]
) -> IPAddress:
    entries = [entry for line in lines for entry in line.split(",")]
    chain = [parse_address(entry) for entry in entries]  # garbage anywhere: error
    if not chain:
        raise ClientAddressError("empty X-Forwarded-For")
    for address in reversed(chain):
        if not contains(trusted_proxies, address):
            return address
    return chain[0]  # every hop is a trusted proxy: the first one is the origin
