"""The topics a member holds on one Redis: subscribing to new ones and loading their
history, and releasing them (``HeldTopics``, one per ``Connection``).

New topics of one loop iteration (a connection storm) are subscribed to and
read together (``prepare``); live messages of a topic being loaded wait until its
history is given to the member (``arrived``, ``loaded``). Released topics are
unsubscribed at the loop's next turn, together (``release``). On a Redis
Cluster a partition's held topics move with it to another master's connection
(``give_up`` here, ``take`` there). The topics held (``held``) change only here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

from .._sequencing import Sequenced
from ._errors import unavailable

if TYPE_CHECKING:
    from .. import Membership
    from ._connection import Connection
    from ._placement import Placement

__all__ = [
    "HeldTopics",
]


class HeldTopics:
    """The topics a member holds on one Redis (its ``Connection``)."""

    def __init__(
        self, placement: Placement, membership: Membership, connection: Connection
    ) -> None:
        self.placement = placement
        self.membership = membership
        self.connection = connection
        #: topics this member is subscribed to here (or subscribing); changed only here
        self.held: set[str] = set()
        self.loading: dict[str, asyncio.Future[None]] = {}
        #: topics waiting to be loaded together, and the loads under way
        self._batch: tuple[asyncio.Future[None], list[str]] | None = None
        self.loads: set[asyncio.Task[None]] = set()
        #: live messages of topics being loaded, applied after their history
        self.loading_back: dict[str, list[Sequenced]] = {}
        self._release: set[str] = set()
        self._release_scheduled = False

    def arrived(self, topic: str, item: Sequenced, out: list[Sequenced]) -> None:
        """A live message of ``topic``: added to ``out`` (the caller delivers it), or kept
        until its history is loaded."""
        if topic in self.loading:
            self.loading_back.setdefault(topic, []).append(item)
        elif topic in self.held:
            out.append(item)

    def prepare(self, names: Sequence[str]) -> Awaitable[None] | None:
        """Subscribe to the topics of ``names`` not held yet and read their history (the new topics
        of one loop iteration together); an awaitable that ends once they and any still loading are
        ready (``PublishError`` 503 while the subscription is not live), or None when there is
        nothing to wait for."""
        new = [name for name in names if name not in self.held]
        loading = [self.loading[name] for name in names if name in self.loading]
        if not new and not loading:
            return None
        return self._prepare(new, loading)

    async def _prepare(self, new: list[str], loading: list[asyncio.Future[None]]) -> None:
        if new:
            if not self.connection.live:
                shards = self.placement.shards
                why = "cannot subscribe to new topics"
                if shards > 1:
                    why = f"{self.connection} holds {', '.join(new[:5])}; {why}"
                raise unavailable(why)
            if self.connection.born:  # births are told
                wants = self.membership.member.wants
                wanted = {name: None for name in new if wants(name, opening=False)}
                if wanted:  # read in order with the open pattern streams' other topics
                    loading = [*loading, self.connection.new_topics.named(list(wanted))]
                    new = [name for name in new if name not in wanted]
        if new:
            # New topics of one loop iteration (a connection storm) are loaded together:
            # one SUBSCRIBE and one history read, not a Redis connection each.
            loop = asyncio.get_running_loop()
            if self._batch is None:
                self._batch = (loop.create_future(), [])
                loop.call_soon(self._start_batch)
            future, names = self._batch
            for name in new:
                self.held.add(name)
                self.loading[name] = future
                names.append(name)
            loading = [*loading, future]
        for waiting in loading:
            await asyncio.shield(waiting)

    def _start_batch(self) -> None:
        if self._batch is None:  # pragma: no cover - scheduled once per batch
            return
        future, names = self._batch
        self._batch = None
        task = asyncio.get_running_loop().create_task(self._run_batch(future, names))
        self.loads.add(task)
        task.add_done_callback(self.loads.discard)

    async def _run_batch(self, future: asyncio.Future[None], names: list[str]) -> None:
        try:
            await self.connection.subscribe([self.placement.channel(name) for name in names])
            await self.connection.history.load(names)
        except BaseException as exc:
            for name in names:
                if self.loading.get(name) is future:
                    self.held.discard(name)
                    self.loading.pop(name, None)
                    self.loading_back.pop(name, None)
            if not future.done():
                error = unavailable(f"subscribing failed: {exc!r}")
                future.set_exception(error)
                future.exception()  # whoever waits gets it; nobody may be waiting
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        future.set_result(None)

    def route(self, items: list[Sequenced]) -> None:
        """Live messages held back elsewhere (``_new_topics.py``), in order: each delivered, or
        kept until its topic's history is loaded (as ``arrived``), in one delivery."""
        out = []
        for item in items:
            topic = item.topics[0]
            if topic in self.loading:
                self.loading_back.setdefault(topic, []).append(item)
            elif topic in self.held:
                out.append(item)
        if out:
            self.membership.deliver(out)

    def hold(self, names: list[str]) -> asyncio.Future[None]:
        """Hold topics born for pattern streams (``_new_topics.py`` subscribes and reads them):
        loading until ``born_loaded`` (a stream naming one meanwhile waits for it)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for name in names:
            self.held.add(name)
            self.loading[name] = future
        return future

    def born_loaded(self, names: list[str], future: asyncio.Future[None], error: str = "") -> None:
        """Topics ``hold`` held are loaded (``error``: they could not be; they stay held, and
        the resync after the next subscription reads them)."""
        for name in names:
            if self.loading.get(name) is future:
                self.loading.pop(name)
                waiting = self.loading_back.pop(name, [])
                if waiting and not error:
                    self.membership.deliver(waiting)
        if future.done():
            return
        if error:
            future.set_exception(unavailable(error))
            future.exception()  # whoever waits gets it; nobody may be waiting
        else:
            future.set_result(None)

    def loaded(self, name: str) -> None:
        """Topic ``name``'s history was given to the member: what arrived meanwhile follows."""
        self.loading.pop(name, None)
        waiting = self.loading_back.pop(name, [])
        if waiting:
            self.membership.deliver(waiting)

    def release(self, name: str) -> None:
        """Drop topic ``name`` (not while it loads): it is unsubscribed at the loop's next turn,
        with the others released meanwhile."""
        if name not in self.held or name in self.loading:
            return
        self.held.discard(name)
        self._release.add(name)
        if not self._release_scheduled:
            self._release_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_release)

    def give_up(self, partition: int) -> list[str]:
        """The held topics of ``partition``, no longer held here (its new connection
        ``take``s them); topics still loading stay, and their load fails here."""
        of = self.placement.partition_of
        names = [n for n in self.held if of(n) == partition and n not in self.loading]
        self.held.difference_update(names)
        return names

    def take(self, names: list[str]) -> None:
        """Hold ``names`` (handed over by another connection's ``give_up``, or born for pattern
        streams while the subscription was away): subscribed and read since what the member
        holds at this connection's next resync."""
        self.held.update(names)

    def _send_release(self) -> None:
        self._release_scheduled = False
        names = [name for name in self._release if name not in self.held]
        self._release.clear()
        if names:
            channel = self.placement.channel
            self.connection.unsubscribe([channel(name) for name in names])
