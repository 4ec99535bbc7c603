"""The client's address, seen through trusted proxies.

Theory of operation:

* **Who is asked.** Without ``trusted_proxies``, or from a peer that is not
  one of them, the client is the peer address and forwarding headers are
  ignored: anyone can send them. ``trusted_proxies`` lists addresses and
  networks (``10.0.0.0/8``); an IPv4-mapped IPv6 peer counts as its IPv4.
* **Which header.** From a trusted proxy, the header ``forwarded_header``
  names: ``x-forwarded-for`` (the default: nginx's
  ``$proxy_add_x_forwarded_for``, HAProxy's ``option forwardfor``) or
  ``forwarded`` (RFC 7239: ``for=`` of each element). The other one is never
  read: the proxy writes only one, so the other came from the client.
* **Every line.** A header sent as several lines is one list, its lines
  joined in the order received (RFC 9110, 5.3): a client that sends its own
  line before the proxy's does not get its line read alone.
* **Right to left.** Each proxy appends the address it received the request
  from, so the list's right end is the newest hop. Starting from the peer:
  while the current address is a trusted proxy, step one hop left; the first
  one that is not is the client. What the client wrote itself lies left of
  its own address, which its proxy appended: it is never reached.
* **Ends.** Every hop trusted (a request from a proxy's own machine): the
  leftmost. A hop that is no address (RFC 7239's ``unknown``, an element
  without ``for=``, or a malformed value) cannot be a trusted proxy, so it
  ends the walk and the client is ``unknown``: one key for per-address limits,
  never in ``ops_networks``, and no text a client could choose. An obfuscated
  identifier (``for=_hidden``, RFC 7239 6.3) ends the walk too and names the
  client (a proxy that hides addresses may still tell clients apart).
  Addresses are normalised (``str(ip_address(...))``, ports and brackets
  dropped), so one address has one key.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

from .._asgi import Scope
from ..settings import LimitSettings
from ..settings._checks import split_list

__all__ = [
    "FORWARDED_HEADERS",
    "UNKNOWN",
    "ClientAddress",
    "forwarded_for",
    "forwarded_hops",
    "parse_hop",
    "x_forwarded_for_hops",
]

#: the values of ``forwarded_header``: the header each names, as ASGI spells it
FORWARDED_HEADERS = {"x-forwarded-for": b"x-forwarded-for", "forwarded": b"forwarded"}
#: the client of a hop that is no address (malformed, ``unknown``, no ``for=``)
UNKNOWN = "unknown"
#: RFC 7239 6.3: ``"_" 1*( ALPHA / DIGIT / "." / "_" / "-")``, bounded here
OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]{1,64}")
#: ``host:port`` of an IPv4 address (a port after an IPv6 one needs brackets)
IPV4_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_hop(text: str) -> Address | str:
    """One hop (an ``X-Forwarded-For`` item or a ``for=`` value, unquoted): its
    address, an obfuscated identifier as it is, or ``UNKNOWN``. Accepts
    ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]``, ``[::1]:80``."""
    text = text.strip()
    if text.startswith("["):
        inside, bracket, port = text[1:].partition("]")
        if not bracket or (port and not re.fullmatch(r":\d{1,5}", port)):
            return UNKNOWN
        text = inside
    else:
        with_port = IPV4_PORT.fullmatch(text)
        if with_port:
            text = with_port[1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text if OBFUSCATED.fullmatch(text) else UNKNOWN
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


#: ``parse_hop`` remembered for the hops seen most (a proxy's clients come back): bounded
_parsed_hop = functools.lru_cache(maxsize=4096)(parse_hop)


def x_forwarded_for_hops(lines: Iterable[str]) -> list[str]:
    """The hops of ``X-Forwarded-For`` lines, left to right (empty items left out)."""
    return [item for line in lines for item in (part.strip() for part in line.split(",")) if item]


def forwarded_hops(lines: Iterable[str]) -> list[str]:
    """The ``for=`` value of each element of ``Forwarded`` lines (RFC 7239), left to
    right, unquoted; ``UNKNOWN`` for an element without exactly one ``for=`` or that
    does not parse (a pair without ``=``, a stray quote).

    Elements are split at every comma and pairs at every semicolon, quoted or not: a
    ``for=`` value never holds either, and a client's unclosed quote must not swallow
    the elements its proxies appended after it. (A quoted comma in another parameter
    makes its element unparsable: ``unknown`` if the walk gets there.)"""
    hops = []
    for line in lines:
        for element in line.split(","):
            if not element.strip():
                continue
            found = []
            for pair in element.split(";"):
                if not pair.strip():
                    continue
                name, equals, value = pair.strip().partition("=")
                if not equals or not name.strip():
                    found = [UNKNOWN, UNKNOWN]  # malformed: the element names nobody
                    break
                if name.strip().lower() == "for":
                    found.append(_unquote(value.strip()))
            hops.append(found[0] if len(found) == 1 else UNKNOWN)
    return hops


def _unquote(value: str) -> str:
    """A token as it is; a quoted-string without its quotes and escapes; a value
    with a stray quote: ``UNKNOWN``."""
    if not value.startswith('"'):
        return UNKNOWN if '"' in value else value
    if len(value) < 2 or not value.endswith('"'):
        return UNKNOWN
    return re.sub(r"\\(.)", r"\1", value[1:-1])


def forwarded_for(
    peer: str, hops: list[str], trusted: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """The client behind ``peer`` (the address connected to us, trusted) given the
    forwarding header's ``hops``, left to right (see the module docstring)."""
    networks = tuple(trusted)
    current = peer
    for text in reversed(hops):
        hop = _parsed_hop(text)
        if isinstance(hop, str):  # no address: cannot be a proxy we trust
            return hop
        current = str(hop)
        if not any(hop in network for network in networks):
            return current
    return current


class ClientAddress:
    """The address a request comes from, seen through trusted proxies (see the
    module docstring)."""

    def __init__(self, settings: LimitSettings) -> None:
        self.trusted_proxies = tuple(
            ipaddress.ip_network(entry, strict=False)
            for entry in split_list(settings.trusted_proxies)
        )
        self.header = FORWARDED_HEADERS[settings.forwarded_header]
        self._trusted_peers: dict[str, bool] = {}  # peer address -> trusted, bounded

    def __call__(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = str(client[0]) if client else "?"
        if not self.trusted_proxies or not self._trusted(peer):
            return peer
        lines = [
            bytes(value).decode("latin-1")
            for name, value in scope.get("headers", ())
            if name.lower() == self.header
        ]
        if not lines:
            return peer
        parse = forwarded_hops if self.header == b"forwarded" else x_forwarded_for_hops
        hops = parse(lines)
        return forwarded_for(peer, hops, self.trusted_proxies)

    def _trusted(self, peer: str) -> bool:
        trusted = self._trusted_peers.get(peer)
        if trusted is None:
            hop = parse_hop(peer)
            trusted = not isinstance(hop, str) and any(
                hop in network for network in self.trusted_proxies
            )
            if len(self._trusted_peers) < 10_000:  # a cache of the addresses seen
                self._trusted_peers[peer] = trusted
        return trusted
