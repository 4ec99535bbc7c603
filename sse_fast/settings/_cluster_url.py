"""The grammar of a Redis Cluster URL (``redis_url``): its seed nodes, TLS, and the
credentials; read here so that settings are checked without the Redis client.

``redis-cluster://[user:password@]host:port[,host:port...]`` names seed nodes (the
rest is discovered); ``rediss-cluster://`` is the same over TLS. A Cluster has one
database (no ``/db``) and no Unix sockets.
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


def parse_cluster_url(url: str) -> ClusterURL:
    """``url`` read, or ``ValueError`` saying what is wrong with it and what to give."""
    example = "redis-cluster://host:6379,host2:6379"
    if not url.startswith(CLUSTER_SCHEMES):
        raise ValueError(f"{url!r}: a Redis Cluster URL starts with redis-cluster:// ({example})")
    tls = url.startswith("rediss-cluster://")
    rest = url.split("://", 1)[1]
    credentials, _, hosts = rest.rpartition("@")
    hosts, slash, path = hosts.partition("/")
    if slash and path not in ("", "0"):
        raise ValueError(f"{url!r}: a Redis Cluster has only database 0; leave /{path} out")
    if "?" in hosts:
        raise ValueError(f"{url!r}: options in the URL are not read; give only seeds ({example})")
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
    return ClusterURL(tuple(seeds), tls, username, password)
