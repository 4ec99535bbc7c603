"""What a Redis member's parts share: what the member was told (``MemberOptions``)
and its tie to the hub (``brokers.Membership``).

A ``RedisBroker`` is put together from narrow parts (its feed of connections,
its publisher, its presence store, its gathers), none of which holds the broker.
What they all read comes to each at construction:

* ``MemberOptions``: the Redis URLs, partitions, key prefix, history limits,
  probe interval, the node's name and worker count, and this member's id; frozen.
* ``Placement`` (``_placement.py``): where each partition lives; one object for
  the member's life (a Cluster's map moves it in place, ``Placement.reassign``).
* ``Membership`` (the broker's, ``brokers/__init__.py``): whom sequenced events go
  to (the hub, bound once when it is built: ``Broker.bind``) and whether the member
  is leaving (``leave``, at close). The broker alone binds and leaves; the parts
  read it and deliver through it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._cluster import SCHEMES

__all__ = ["MemberOptions"]


@dataclass(frozen=True)
class MemberOptions:
    """What a member of the sequences kept in Redis was told, and its id."""

    #: the Redis URLs (shards, in order; a Cluster: one ``redis-cluster://`` URL)
    urls: tuple[str, ...]
    partitions: int
    prefix: str
    history_frames: int
    history_age: float
    probe_interval: float
    load_frames: int
    #: this node's name (its workers share it) and how many workers it runs
    node: str
    workers: int
    wait_replicas: int
    #: this member's own id (one per worker and start)
    member_id: str

    @property
    def url(self) -> str:
        """The first URL (a Cluster's seeds)."""
        return self.urls[0]

    @property
    def cluster(self) -> bool:
        """A Redis Cluster: one connection per master, sharded pub/sub."""
        return self.url.startswith(SCHEMES)
