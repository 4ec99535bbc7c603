"""The grammar of a Redis Cluster URL (``redis_url``): its seed nodes, TLS, and the
credentials; read here so that settings are checked without the Redis client.

``redis-cluster://[user:password@]host:port[,host:port...]`` names seed nodes (the
rest is discovered); ``rediss-cluster://`` is the same over TLS, where the query may
give the TLS files as redis-py's ``rediss://`` URLs do (``?ssl_ca_certs=/path/ca.pem``,
``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``: none, optional or required). A
Cluster has one database (no ``/db``) and no Unix sockets.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from ._services import CLUSTER_SCHEMES

__all__ = ["CLUSTER_SCHEMES", "Address", "ClusterURL", "parse_cluster_url"]

#: a node's (host, port)
Address = tuple[str, int]


@dataclass(frozen=True)
class ClusterURL:
    """A ``redis-cluster://`` URL: its seed nodes, TLS, and the credentials."""

    seeds: tuple[Address, ...]
    tls: bool = False
    username: str | None = None
    password: str | None = None
    #: TLS options from the query (``ssl_ca_certs``, ...), as (name, value) pairs
    tls_options: tuple[tuple[str, str], ...] = ()


def parse_cluster_url(url: str) -> ClusterURL:
    """``url`` read, or ``ValueError`` saying what is wrong with it and what to give."""
    example = "redis-cluster://host:6379,host2:6379"
    if not url.startswith(CLUSTER_SCHEMES):
        raise ValueError(f"{url!r}: a Redis Cluster URL starts with redis-cluster:// ({example})")
    tls = url.startswith("rediss-cluster://")
    rest, _, query = url.split("://", 1)[1].partition("?")
    credentials, _, hosts = rest.rpartition("@")
    hosts, slash, path = hosts.partition("/")
    if slash and path not in ("", "0"):
        raise ValueError(f"{url!r}: a Redis Cluster has only database 0; leave /{path} out")
    options = _tls_options(url, query, tls)
    seeds = []
    for host in hosts.split(","):
        name, colon, port = host.rpartition(":")
        if not colon or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{url!r}: seed {host!r} is not host:port ({example})")
        seeds.append((name.strip("[]"), int(port)))
    username = password = None
    if credentials:  # as redis:// URLs: user:password, :password or user
        user, colon, secret = credentials.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if colon else None
    return ClusterURL(tuple(seeds), tls, username, password, options)


#: the query options a ``rediss-cluster://`` URL may give, and the values each takes
TLS_OPTIONS = {
    "ssl_ca_certs": None,
    "ssl_certfile": None,
    "ssl_keyfile": None,
    "ssl_cert_reqs": ("none", "optional", "required"),
}


def _tls_options(url: str, query: str, tls: bool) -> tuple[tuple[str, str], ...]:
    if not query:
        return ()
    accepted = ", ".join(TLS_OPTIONS)
    if not tls:
        raise ValueError(
            f"{url!r}: options in the URL are not read without TLS; give only seeds, or "
            f"rediss-cluster:// with {accepted}"
        )
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False)
    for name, value in pairs:
        if name not in TLS_OPTIONS:
            raise ValueError(
                f"{url!r}: option {name!r} is not read; a Cluster URL takes {accepted}"
            )
        values = TLS_OPTIONS[name]
        if values is not None and value not in values:
            raise ValueError(f"{url!r}: {name}={value!r}: give one of {', '.join(values)}")
        if values is None and not value:
            raise ValueError(f"{url!r}: {name} is empty: give a file's path")
    return tuple(pairs)
