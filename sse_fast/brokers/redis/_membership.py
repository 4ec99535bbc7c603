"""What a Redis member's parts share: what the member was told (``MemberOptions``)
and its tie to the hub (``Membership``).

A ``RedisBroker`` is put together from narrow parts (its feed of connections,
its publisher, its presence store, its gathers), none of which holds the broker.
What they all read comes to each at construction:

* ``MemberOptions``: the Redis URLs, partitions, key prefix, history limits,
  probe interval, the node's name and worker count, and this member's id; frozen.
* ``Placement`` (``_placement.py``): where each partition lives; one object for
  the member's life (a Cluster's map moves it in place, ``Placement.reassign``).
* ``Membership``: whom sequenced events go to (the hub, bound once when it is
  built: ``Broker.bind``) and whether the member is leaving (``leave``, at close).
  The broker alone binds and leaves; the parts read it and deliver through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .. import Member
from .._sequencing import Sequenced
from ._cluster import SCHEMES

__all__ = ["MemberOptions", "Membership"]


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


class Membership:
    """A member's tie to its hub: where sequenced events go, and whether it is leaving."""

    def __init__(self) -> None:
        self._member: Member | None = None
        #: the broker is closing: loops stop, reads under way are not applied
        self.closing = False

    def bind(self, member: Member) -> None:
        """Where sequenced events go from now on (once: ``Broker.bind``)."""
        self._member = member

    @property
    def member(self) -> Member:
        """The hub bound; ``RuntimeError`` before it is."""
        if self._member is None:
            raise RuntimeError("the Redis broker is not bound to a hub yet (Broker.bind)")
        return self._member

    def deliver(self, items: Sequence[Sequenced]) -> None:
        """Hand sequenced events to the hub (``Member.apply``)."""
        self.member.apply(items)

    def leave(self) -> None:
        """The broker closes: every part's loop stops at its next turn."""
        self.closing = True
