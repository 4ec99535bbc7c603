"""Brokers: where a hub's sequenced events come from.

A hub never numbers events itself. It hands publish requests to its broker;
the broker sequences them (``_sequencing.py``) and delivers the sequenced
events to every member bound to it, the publishing one included, which store
and fan them out. ``LocalBroker`` sequences in this process (one worker, the
default: no external service); ``RelayBroker`` asks the server's relay process
(several workers on one machine). A broker on another engine (Redis) is a
third implementation of this interface; fan-out and resume do not change.
``durable/`` keeps the local broker's and the relay's sequenced events on disk
across restarts.

Contract
--------
Every broker keeps these promises; the hub relies on nothing else.

* Partitions. A broker numbers events in ``partitions`` sequences (1 for the
  local broker, the relay and ``durable/``; a Redis fleet over several masters
  has more); a topic belongs to one, ``partition_of(name)``, for good. Every
  promise below on positions holds per partition: positions of different
  partitions are not comparable, and nothing decides anything by comparing
  them (a stream over several partitions carries a cursor as its id:
  ``hub/_cursor.py``).
* Order. Each published event gets one *position* in its partition, unique
  and greater than every earlier position of that partition. Every member
  bound to the broker is delivered every event, each partition's in order of
  position, on its event loop; events of different partitions arrive in any
  order. A member may be delivered a position again (a replay after a
  reconnect); it ignores positions it already applied.
* Ids. An event's id is the publisher's id when given, else
  ``str(position)``, assigned once by the broker; ``publish`` returns the ids
  in the order of the requests.
* Whole batches. ``publish`` sequences all of its requests or none: an event
  that cannot be encoded refuses the batch with ``PublishError`` (400, the
  encoder's reason); a broker that cannot publish now refuses it with
  ``PublishError`` (503, and ``retry_after`` seconds to say when to try again).
  A refused publish published nothing. With several partitions this holds per
  partition: each partition's share of a batch is published whole or not at
  all, and a 503 for a batch spanning partitions names the topics that have
  it; an event spanning partitions carries one id in each, so a retry of the
  batch publishes nothing twice.
* Positions outlive restarts. A sequence starts at the wall clock in
  microseconds, so positions keep growing across restarts of the sequencer
  and an id from an earlier run is recognisably older. A sequencer with a data
  directory (``durable/``) goes on with the same sequence after a restart,
  its events, positions and retry memory restored; where a machine crash may
  have lost events it says so (``lost``, and ``Member.missed``).
* History claims. ``first_position`` is the oldest position this member may
  claim to know: it has been delivered every event from there on (per
  partition: ``first_position_of(p)``, and ``horizon_of(p)``). A member
  that joins (or rejoins) a running sequence starts it at the first position
  it will be delivered, so a ``Last-Event-ID`` from before it joined resolves
  to ``unknown`` (or ``evicted``), never to ``resumed`` without the events. A
  broker that can replay recent events to a joining member (the relay keeps a
  log) delivers them first, and the claims start at the oldest one replayed.
* Breaks are said. When a member loses its broker and comes back without
  proof that it was delivered everything in between (the relay restarted, or
  its log no longer reaches back far enough), the broker calls
  ``member.rejoined(history_from, reason, partition)``: the member's claims in
  that partition restart at ``history_from``, and every open stream of its
  topics is sent an ``sse-fast-missed`` event (with ``reason``) in its place in
  the order of events, so no client goes on as if nothing happened. Streams
  stay open. Breaks are per partition: the other partitions' streams go on.
* Away is said. While the broker cannot publish, ``available`` is False
  (``/readyz`` answers 503), a publish is refused with 503 and ``retry_after``,
  and ``unavailable_for`` says for how long (``/healthz`` fails past
  ``broker_down_limit``). A publish whose answer was lost with the broker is
  refused with 503 saying it may or may not have been published.
* Patterns. A broker that stores every topic in each member serves topic
  patterns from the member's own table. One that does not (Redis) finds the
  topics a pattern matches where they are kept (``expand``: candidates by the
  patterns' literal prefixes, and the position at or below which a matching topic
  may have gone without trace), and prepares, for as long as the member
  ``wants`` one, each topic born later before its first events are delivered, in
  their place in the order of events; with several partitions, ``complete_up_to``
  says up to where in all of them that was done. ``patterns_refusal`` says when it
  cannot.
* One scrape. ``gather(query)`` returns the figures of every member of the
  server (each worker's ``member.report(query)``), so ``/metrics`` and
  ``/stats`` answer for the whole server whichever worker takes the request.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..publishing import PublishRequest
from ._sequencing import Sequenced

if TYPE_CHECKING:
    from .durable._restore import RestoreProgress


class Expansion(NamedTuple):
    """The topics a broker keeps whose names start with the literal prefixes of some
    patterns (``Broker.expand``; the caller matches them)."""

    #: candidate topic names (each once)
    names: list[str]
    #: a topic the patterns match may have gone (with its events) without trace at or
    #: below this position (its history expired, or the broker lost its data): a resume
    #: from before it cannot be promised
    gone_up_to: int
    #: with several partitions, ``gone_up_to`` of each (``gone_up_to`` is the largest)
    gone_up_to_in: tuple[int, ...] = ()
    #: with several partitions: every topic born in any partition at or below this
    #: position is among ``names`` (where a new pattern stream is in the partitions it
    #: has no topic of: ``hub/_cursor.py``)
    complete_up_to: int = 0


class Member(Protocol):
    """What a broker delivers to: a worker's hub."""

    @property
    def last_position(self) -> int:
        """The newest position applied."""
        ...

    def apply(self, items: Sequence[Sequenced]) -> None:
        """Store and fan out sequenced events (positions already applied are skipped)."""

    def last_position_of(self, partition: int) -> int:
        """The newest position applied in ``partition`` (``last_position`` with one)."""
        ...

    def rejoined(self, history_from: int, reason: str | None, partition: int = 0) -> None:
        """The member joined ``partition``'s sequence at ``history_from``; ``reason``
        is None for its first join, else why it cannot vouch for what came before."""

    def report(self, query: dict[str, Any]) -> dict[str, Any]:
        """This member's figures for ``/metrics`` or ``/stats`` (see ``gather``)."""
        ...

    def newest_position(self, name: str) -> int | None:
        """The newest position topic ``name`` holds (or its floor); None if unknown."""
        ...

    def load(self, name: str, floor: int, items: Sequence[Sequenced]) -> None:
        """Fill topic ``name`` with its history: ``items`` (its events, oldest first,
        maybe older than other topics' newest), nothing at or before ``floor``
        known to be complete."""

    def missed(self, names: Sequence[str], position: int, reason: str) -> None:
        """Tell the streams of ``names`` that events were lost at ``position`` (a
        position no event of theirs has): an ``sse-fast-missed`` marker."""

    def wants(self, name: str, opening: bool = True) -> bool:
        """Whether an open stream of topic patterns (or, with ``opening``, one being opened)
        would hold topic ``name`` (a broker that prepares only the topics held prepares it:
        see "Patterns")."""
        ...

    def pattern_streams(self) -> int:
        """How many streams of topic patterns are open or being opened."""
        ...

    def flush_pending(self) -> None:
        """Write out what was applied now rather than at the loop's next turn (a
        restore applies a long history in chunks without giving the loop a turn:
        flushed frames are what the history budget may evict)."""


class Membership:
    """A broker's tie to its member: where sequenced events go (bound once, by the hub),
    and whether the broker is leaving. A broker made of parts gives them this, not
    itself (``brokers/redis/``)."""

    def __init__(self) -> None:
        self._member: Member | None = None
        #: the broker is closing: its loops stop, reads under way are not applied
        self.closing = False

    def bind(self, member: Member) -> None:
        """Where sequenced events go from now on (once)."""
        if self._member is not None:
            raise RuntimeError("this broker is already bound to a hub")
        self._member = member

    @property
    def member(self) -> Member:
        """The member bound; ``RuntimeError`` before one is."""
        if self._member is None:
            raise RuntimeError("the broker is not bound to a hub (Hub(broker=...) binds it)")
        return self._member

    def deliver(self, items: Sequence[Sequenced]) -> None:
        """Hand sequenced events to the member (``Member.apply``)."""
        self.member.apply(items)

    def leave(self) -> None:
        """The broker closes: every loop of its parts stops at its next turn."""
        self.closing = True


class Broker(abc.ABC):
    """Sequences publish requests and delivers the sequenced events (see the contract)."""

    #: how many sequences of positions the broker keeps (see "Partitions")
    partitions: int = 1
    #: the oldest position this member may claim to know (see "History claims")
    first_position: int
    #: a position every event up to which is known to exist (a broker shared by
    #: several nodes knows more than this member applied); 0 if none
    horizon: int = 0
    #: whether every published event is stored in this member's rings (so the
    #: ``max_topics`` limit on topics with history applies to publishes here)
    stores_every_topic: bool = True
    #: whether small publishes awaited in one turn of the loop are worth handing over
    #: together, to ``publish_nowait`` (a broker that writes each publish: the hub's
    #: ``hub/_publish_group.py``)
    groups_publishes: bool = False
    #: how far the start's restoring of history from a data directory is (``durable/``);
    #: None until a start restores some
    progress: RestoreProgress | None = None

    def __init__(self) -> None:
        #: the member this broker delivers to (``bind``), and whether it is closing
        self.membership = Membership()
        #: ranges of positions that may have been given to events nobody can
        #: replay (a machine crash lost them before they reached the disk):
        #: a ``Last-Event-ID`` among them is answered ``evicted``
        self.lost: list[tuple[int, int]] = []

    def partition_of(self, name: str) -> int:
        """The partition of topic ``name`` (0 to ``partitions`` - 1; always 0 with one)."""
        return 0

    def first_position_of(self, partition: int) -> int:
        """``first_position`` in ``partition`` (the one ``first_position`` with one)."""
        return self.first_position

    def horizon_of(self, partition: int) -> int:
        """``horizon`` in ``partition`` (the one ``horizon`` with one)."""
        return self.horizon

    def bind(self, member: Member) -> None:
        """Called once by the hub: where this member's sequenced events go."""
        self.membership.bind(member)

    @property
    def member(self) -> Member:
        """The hub bound to this broker (``bind``); ``RuntimeError`` before it is bound."""
        return self.membership.member

    def deliver(self, items: Sequence[Sequenced]) -> None:
        """Hand sequenced events to the bound member (``Member.apply``)."""
        self.membership.member.apply(items)

    async def start(self) -> None:  # noqa: B027  (an optional hook)
        """Connect (at the server's startup); ``first_position`` is final afterwards."""

    async def close(self) -> None:  # noqa: B027  (an optional hook)
        """Disconnect (at shutdown)."""

    @property
    def available(self) -> bool:
        """Whether ``publish`` can succeed now (readiness)."""
        return True

    @property
    def unavailable_for(self) -> float:
        """Seconds since the broker became unable to publish (0 while it can)."""
        return 0.0

    @property
    def partitions_down(self) -> int:
        """How many of the ``partitions`` cannot be published to now (all of them, or none,
        for a broker of one sequence)."""
        return 0 if self.available else self.partitions

    def prepare(self, names: Sequence[str]) -> Awaitable[None] | None:
        """Called before a stream attaches to ``names``: a broker that delivers
        only the topics a member holds subscribes to new ones and loads their
        history here (``member.load``). None when there is nothing to wait for."""
        return None

    @property
    def patterns_refusal(self) -> str | None:
        """Why this broker cannot serve streams of topic patterns (None: it can)."""
        return None

    def complete_up_to(self) -> int:
        """With several partitions: in each, every topic born at or below this position
        that the member ``wants`` was delivered (0: nothing is known; see "Patterns")."""
        return 0

    def expand(self, patterns: Sequence[str]) -> Awaitable[Expansion] | None:
        """The topics kept where every member reads them whose names start with the
        literal prefixes of ``patterns`` (see "Patterns"); None for a broker that stores
        every topic in each member (the member's own table is the answer)."""
        return None

    def release(self, name: str) -> None:  # noqa: B027  (an optional hook)
        """The member dropped topic ``name`` (no subscriber, no recent activity)."""

    async def gather(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every member's ``report(query)`` (this process alone by default)."""
        return [self.member.report(query)]

    async def store_presence(self, figures: dict[str, dict[str, Any]]) -> None:  # noqa: B027
        """Keep this member's presence figures of these topics where every node
        reads them (``hub/_presence.py``); nothing to do without other nodes."""

    async def read_presence(self, topic: str) -> list[dict[str, Any]] | None:
        """Every node's live presence figures of ``topic``, or None when this broker
        has no view beyond this node (``gather`` then covers its workers)."""
        return None

    @abc.abstractmethod
    async def publish(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        """Sequence ``requests`` (all or none) and deliver them; return their ids."""

    def publish_nowait(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        """``publish`` for synchronous code; only a broker in this process can."""
        raise RuntimeError(
            f"publish_nowait() needs the local broker, not {type(self).__name__}; "
            "use await hub.publish()"
        )

    def stats(self) -> dict[str, Any]:
        """Figures for ``/stats``."""
        return {}


__all__ = ["Broker", "Expansion", "Member", "Membership"]
