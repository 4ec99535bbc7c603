"""Topics born in Redis that this member's pattern streams want (``NewTopics``, one per
``Connection``, over the partitions it carries).

Theory of operation
-------------------
A node holds only the topics its streams need (``_held_topics.py``), but a stream of topic
patterns (``user/42/*``) needs topics nobody named, some not born yet. The publish
script keeps a directory of topics per partition: ``names`` (by name) and ``births`` (by
the position of a topic's first event since its stream was created), and tells each
birth on the partition's ``born`` channel, ``<position> <topic>``, before the event
itself (``publish.lua``, ``publish_partition.lua``). Positions of different partitions
are not comparable: everything below is per partition, but for the marker (one
connection's partitions are one Redis's, whose messages arrive in the order published).

* Opening. A pattern stream's existing topics are read from the directory by the
  patterns' literal prefixes (``Feed.expand``) and prepared as named ones are,
  while the hub counts its patterns as opening: a birth told meanwhile is wanted
  (``Member.wants``), never missed.
* Births while open. A wanted birth of a topic not held here starts holding back
  this connection's live messages (``hold``). The new topics of the births so far are
  subscribed to and read together; then a marker published on ``born`` comes back
  through the subscription, so every message published before the read has arrived.
  The topics go to the member with their history below the next wanted birth waiting
  (if any), and the messages held back below it are delivered, in order of position,
  in the same turn of the loop: the fan-out's flush merges them, so a pattern stream
  gets a new topic's first events in their place among its other topics' events.
  What is at or after the next birth waits for that birth's batch.
* Named meanwhile. A stream naming a topic that an open pattern stream wants, and
  that is not held yet (its birth may still be on its way), has it read the same way
  (``named``): read apart, its first events could go out ahead of older events of
  the pattern stream's other topics still on the subscription. (A pattern stream
  being opened reads its topics apart: it is not open yet, its resume orders them.)
* Lost births. Pub/sub loses messages with its subscription. After each
  (re)subscription the births since the newest one handled are read from ``births``
  (``rescan``), and the wanted ones are held, to be read with the resync.
* Failure. A batch that fails (Redis away, no marker back in time) makes the connection
  subscribe again, holding back what it held until then; the resync reads the held
  topics again and the rescan finds the births, delivered together, in order. A
  subscription lost under a batch ends it there (``reset``): its topics stay held and
  stop loading at once, and the batch touches nothing more even if its cancellation
  was lost (Python 3.11's ``asyncio.wait_for``, which redis-py sends through, can
  swallow one).
* Done up to (several partitions). A pattern stream's cursor says where it is in the
  partitions it has topics in, and one position for all the others (``hub/_cursor.py``):
  every event its patterns match there up to it was delivered. ``done(p)`` is such a
  position for partition ``p`` and every pattern stream of the member: every birth up to
  it was handled (a topic born and held here: up to just before it, its event follows on
  the subscription) and none is waiting. It moves with the births told, each rescan (a
  position every later birth is above, then the births up to it read) and each
  ``confirm`` (such positions, then a marker back), so that it moves in a partition
  where nothing is published. Such a position (``CLOCK_SCRIPT``) is the newest one
  handed out, or Redis time less one microsecond if later: an event's position is at
  least the Redis time of its publish, so this rests on Redis's clock not stepping back.
  Nothing is written: a position behind what a node saw stays visible.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..._patterns import literal_prefix
from ..._tasks import cancelled_here, stop_task
from .. import Expansion
from .._sequencing import Sequenced
from ._errors import unavailable
from ._scripts import COMMAND_TIMEOUT
from ._state import Read

if TYPE_CHECKING:
    from .. import Member, Membership
    from ._connection import Connection
    from ._history import History
    from ._placement import Placement

__all__ = ["NewTopics", "read_directory"]

log = logging.getLogger("sse_fast.redis")


class NewTopics:
    """The births one connection is told, and the adoption of the wanted ones."""

    def __init__(
        self, placement: Placement, membership: Membership, connection: Connection
    ) -> None:
        self.placement = placement
        self.membership = membership
        self.connection = connection
        #: per partition, the newest birth position handled (adopted, or not wanted): a rescan
        #: reads after it; none until the partition's first subscription here
        self.handled: dict[int, int] = {}
        #: topics held through births (``/stats``): adopted by a batch, or found by a
        #: rescan after a failed batch or a lost subscription
        self.adopted = 0
        #: a batch failed: the connection subscribes again (and rescans)
        self.failed = False
        self._waiting: list[tuple[int, str]] = []  # wanted births not in a batch yet
        self._batch: list[tuple[int, str]] = []  # the births of the batch under way
        #: its topics being loaded (``HeldTopics.hold``), and their futures
        self._loading: list[tuple[list[str], asyncio.Future[None]]] = []
        self._held: list[Sequenced] | None = None  # live messages held back meanwhile
        self._task: asyncio.Task[None] | None = None
        self._markers: dict[bytes, asyncio.Future[None]] = {}
        # topics a stream named that pattern streams want, waiting to be read as births
        self._named: dict[str, asyncio.Future[None]] = {}
        # until a (re)subscription's rescan: births told do not move ``handled`` (the rescan
        # reads from it, and what it missed is older than what the new subscription tells)
        self._rescanning = True
        self._subscription = 0  # how many were lost (``confirm`` spans one)

    # ---------------------------------------------------------------- messages

    def told(self, partition: int, data: bytes) -> None:
        """A message on ``partition``'s ``born`` channel: a birth, or a marker (ours is
        awaited)."""
        if data.startswith(b"~"):
            arrived = self._markers.get(data)
            if arrived is not None and not arrived.done():
                arrived.set_result(None)
            return
        head, _, raw = data.partition(b" ")
        position, name = int(head), raw.decode()
        if not self._rescanning and partition in self.handled:
            # just before it: a topic held here has its event follow on the subscription
            self.handled[partition] = max(self.handled[partition], position - 1)
        if name in self.connection.topics.held or not self.membership.member.wants(name):
            return
        self._waiting.append((position, name))
        if self._held is None:
            self._held = []
        if self.connection.live:
            self.start()

    def named(self, names: list[str]) -> asyncio.Future[None]:
        """Topics a stream names, not held, that open pattern streams want: read as births are
        (live messages held back, a marker, one delivery), so that a pattern stream gets
        their events in their place (read apart, a topic's first events could come ahead
        of older events of its other topics still on their way); the future ends once
        they are loaded. Their events come after every position seen so far."""
        future = self.connection.topics.hold(names)
        states = self.connection.states
        partition_of = self.placement.partition_of
        for name in names:
            self._named[name] = future
            self._waiting.append((states[partition_of(name)].seen + 1, name))
        if self._held is None:
            self._held = []
        self.start()
        return future

    def hold(self, item: Sequenced) -> bool:
        """A live message: held back while births are adopted (True), else not (False)."""
        held = self._held
        if held is None:
            return False
        held.append(item)
        return True

    def start(self) -> None:
        """Adopt the births waiting, if any (once the subscription is live); with none
        waiting or under way, nothing is held back any more."""
        if self._task is not None or self.failed:  # (failed: the next subscription's rescan)
            return
        if self._waiting:
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif self._held is not None:
            held, self._held = self._held, None
            self.connection.topics.route(held)

    # ---------------------------------------------------------------- (re)subscription

    async def rescan(self) -> list[str]:
        """After (re)subscribing: the wanted topics born since the newest birth handled in
        each partition and not held (the caller holds and subscribes them; the resync reads
        them). A partition's first subscription here starts at its position."""
        client = self.connection.client
        assert client is not None
        placement = self.placement
        partitions = list(self.connection.partitions)
        async with client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                # a position first that every later birth is above: every birth up to
                # it is in ``births`` when it is read, every later one is told
                await self._clock(pipe, partition)
                after = self.handled.get(partition)
                if after is None:
                    pipe.echo("")
                else:
                    pipe.zrangebyscore(
                        placement.births_key(partition), f"({after}", "+inf", withscores=True
                    )
            replies: list[Any] = await pipe.execute()
        held = self.connection.topics.held
        wants = self.membership.member.wants
        names = []
        for index, partition in enumerate(partitions):
            position, found = replies[2 * index], replies[2 * index + 1]
            newest = max(int(position or 0), 1)
            if partition in self.handled:
                for raw, score in found:
                    name = raw.decode()
                    newest = max(newest, int(score))
                    if name not in held and wants(name):
                        names.append(name)
            self.handled[partition] = max(self.handled.get(partition, 0), newest)
        waiting = set(names)
        self._waiting = [(p, n) for p, n in self._waiting if n not in waiting]
        self._rescanning = False
        # held from now on through their births too (a failed batch's, a lost
        # subscription's): each is read once, ``handled`` moved past it
        self.adopted += len(names)
        return names

    async def confirm(self) -> None:
        """Move ``done`` in every partition of this connection: a position every later
        birth is above (``CLOCK_SCRIPT``), then a marker back (every birth up to it has
        then been told)."""
        if self._rescanning or self.failed or not self.connection.live:
            return
        if not self.membership.member.pattern_streams():  # nothing to move (a new one reads)
            return
        client = self.connection.client
        assert client is not None
        partitions = list(self.connection.partitions)
        async with client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                await self._clock(pipe, partition)
            async with asyncio.timeout(COMMAND_TIMEOUT):
                positions: list[Any] = await pipe.execute()
        subscription = self._subscription
        await self._sync()
        if subscription != self._subscription or self._rescanning or self.failed:
            return  # the subscription was replaced meanwhile: its rescan says
        for partition, position in zip(partitions, positions, strict=True):
            if partition in self.handled and position is not None:
                self.handled[partition] = max(self.handled[partition], int(position))

    async def _clock(self, pipe: Any, partition: int) -> None:
        """Queue on ``pipe`` a position of ``partition`` every later birth is above."""
        text, keys, args = self.placement.clock_call(partition)
        await self.connection.script(text)(keys=keys, args=args, client=pipe)

    def done(self) -> int | None:
        """In every partition here, every birth up to it was handled and none is waiting
        (the module doc); 0 before a partition's first subscription, None without any."""
        partitions = self.connection.partitions
        if not partitions:
            return None
        handled = self.handled
        done = min(handled.get(partition, 0) for partition in partitions)
        if self._batch or self._waiting:
            of = self.placement.partition_of
            for position, name in (*self._batch, *self._waiting):
                if position <= done and of(name) in handled:
                    done = position - 1
        return done

    def give_up(self, partition: int) -> int | None:
        """``partition`` moves to another connection: what was handled of it (``take``)."""
        return self.handled.pop(partition, None)

    def take(self, partition: int, handled: int | None) -> None:
        """Carry ``partition``'s births from ``handled`` (``give_up`` elsewhere)."""
        if handled is not None:
            self.handled[partition] = min(handled, self.handled.get(partition, handled))

    def reset(self) -> None:
        """The subscription is gone: stop adopting; the births not handled are rescanned
        after the next subscription (the messages held back are read again by the resync)."""
        self._forget_waiting("the Redis subscription was lost")
        self._held = None
        self.failed = False
        self._rescanning = True
        self._subscription += 1
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop the batch under way."""
        task, self._task = self._task, None
        await stop_task(task)

    # ---------------------------------------------------------------- adopting

    async def _run(self) -> None:
        # the subscription this task adopts for: once it is replaced (``reset``), the task
        # touches nothing more, even if its cancellation was lost (Python 3.11's
        # ``asyncio.wait_for``, which redis-py sends through, can swallow one)
        subscription = self._subscription
        try:
            while self._waiting and subscription == self._subscription:
                self._batch, self._waiting = self._waiting, []
                if not await self._adopt(self._batch, subscription):
                    return
                self._batch = []
        except (RedisError, OSError, TimeoutError, ConnectionError) as exc:
            if subscription != self._subscription:
                return  # replaced meanwhile: the next subscription's rescan reads them
            log.warning(
                "%s: topics born for pattern streams not read (%r): subscribing again",
                self.connection,
                exc,
            )
            self._give_up()
        except (Exception, asyncio.CancelledError) as exc:
            if cancelled_here(exc):
                raise
            # a fault here (a CancelledError from another task's future too) must not hold
            # the live messages back for good
            log.exception("%s: adopting topics born for pattern streams failed", self.connection)
            if subscription == self._subscription:
                self._give_up()
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _adopt(self, batch: list[tuple[int, str]], subscription: int) -> bool:
        """Subscribe to the births' new topics, read them, and deliver them with what was
        held back; False if the subscription was replaced meanwhile (nothing delivered)."""
        connection = self.connection
        holding = connection.topics
        placement = self.placement
        fresh = list(dict.fromkeys(name for _, name in batch if name not in holding.held))
        named = {name: self._named.pop(name) for _, name in batch if name in self._named}
        names = [*fresh, *named]
        # the loads' futures: the births' one, and each named topic's stream's
        loading = [(fresh, holding.hold(fresh)), *(([n], f) for n, f in named.items())]
        self._loading = loading
        reads: list[Read] = []
        try:
            if names:
                await connection.subscribe([placement.channel(name) for name in names])
                for partition, chunk in connection.history.chunks(names):
                    reads.append(await connection.history.read_new(partition, chunk))
            await self._sync()
            if subscription != self._subscription:
                raise ConnectionError("the Redis subscription was replaced")
        except BaseException as exc:
            if subscription == self._subscription:
                self._loading = []
            for mine, future in loading:  # (each once: none if ``reset`` did it)
                holding.born_loaded(mine, future, f"reading topics born for patterns: {exc!r}")
            if subscription != self._subscription and not isinstance(exc, asyncio.CancelledError):
                return False  # (its resync reads them: they stay held)
            raise
        # from here to the delivery, one turn of the loop: the flush merges it all
        cuts = _cuts(self._waiting, placement.partition_of)
        later, loaded = _load(
            self.membership.member,
            self.placement.partition_of,
            self.connection.history,
            reads,
            cuts,
        )
        self.adopted += loaded
        self._loading = []
        for mine, future in loading:
            holding.born_loaded(mine, future)
        self._release(later, cuts)
        return True

    async def _sync(self) -> None:
        """Publish a marker on a ``born`` channel of this connection and wait for it to
        come back: every message published before it has then arrived."""
        loop = asyncio.get_running_loop()
        token = b"~" + os.urandom(8).hex().encode()
        arrived: asyncio.Future[None] = loop.create_future()
        self._markers[token] = arrived
        try:
            channel = self.placement.born_channel(self.connection.partitions[0])
            await self.connection.send(channel, token)
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await arrived
        finally:
            del self._markers[token]

    def _release(self, later: list[Sequenced], cuts: dict[int, int]) -> None:
        """Deliver the messages held back (and ``later``) below their partition's cut, in
        order of position; those at or after it stay held for the next batch."""
        held = [*(self._held or ()), *later]
        if not cuts:
            out, self._held = held, None
        else:
            of = self.placement.partition_of
            out, self._held = [], []
            for item in held:
                cut = cuts.get(of(item.topics[0]))
                (out if cut is None or item.position < cut else self._held).append(item)
        out.sort(key=_position)
        self.connection.topics.route(out)

    def _give_up(self) -> None:
        """A batch failed: the connection subscribes again. What was held back stays held
        (and what arrives until then): the resync after the next subscription reads every
        held topic again after the newest position the member has, and the rescan finds
        the births not handled, all delivered together, in order."""
        self._forget_waiting("reading them failed: the connection subscribes again")
        if self._held is None:
            self._held = []
        self.failed = True

    def _forget_waiting(self, why: str) -> None:
        """Drop the births waiting or under way: the next subscription's rescan reads them
        again (``handled`` goes back before them). Named topics still waiting have their
        streams refused (503, ``why``); they stay held, and the resync reads them."""
        of = self.placement.partition_of
        for position, name in (*self._batch, *self._waiting):
            partition = of(name)
            if partition in self.handled:
                self.handled[partition] = min(self.handled[partition], position - 1)
        self._batch, self._waiting = [], []
        named, self._named = self._named, {}
        for name, future in named.items():
            self.connection.topics.born_loaded([name], future, why)
        # the batch under way's topics, loading until now: held, read by the resync, and
        # their live messages from now on go to the member (not held back for a load that
        # may finish only under the next subscription, if its cancellation was lost)
        loading, self._loading = self._loading, []
        for names, future in loading:
            self.connection.topics.born_loaded(names, future, why)


def _position(item: Sequenced) -> int:
    return item.position


def _cuts(waiting: list[tuple[int, str]], of: Callable[[str], int]) -> dict[int, int]:
    """Per partition, the first wanted birth waiting."""
    cuts: dict[int, int] = {}
    for position, name in waiting:
        partition = of(name)
        cuts[partition] = min(position, cuts.get(partition, position))
    return cuts


def _load(
    member: Member,
    of: Callable[[str], int],
    history: History,
    reads: list[Read],
    cuts: dict[int, int],
) -> tuple[list[Sequenced], int]:
    """Give ``member`` the topics read, with their history below their partition's cut
    (the next wanted birth there; ``of``: a topic's partition): the rest of it, and how
    many topics."""
    later: list[Sequenced] = []
    count = 0
    for read in reads:
        for name, (_, _, items) in read.topics.items():
            cut = cuts.get(of(name))
            now = items if cut is None else [i for i in items if i.position < cut]
            later += items[len(now) :]
            member.load(name, history.floor_of(name, read), now)
            count += 1
    return later, count


async def read_directory(
    carrying: Sequence[Connection],
    placement: Placement,
    history_age: float,
    patterns: Sequence[str],
) -> Expansion:
    """The topics in the directory whose names start with the literal prefixes of
    ``patterns`` (``EXPAND_SCRIPT``: one call per partition, a prefix covered by a shorter
    one left out), and per partition the position up to which a matching topic may have
    gone without trace (the history age, or the dataset's floor) and the one up to which
    every topic born is among the names; ``PublishError`` 503 while a Redis is away."""
    prefixes = sorted({literal_prefix(pattern) for pattern in patterns})
    prefixes = [p for p in prefixes if not any(p != q and p.startswith(q) for q in prefixes)]
    age = int(history_age * 1_000_000)
    replies: dict[int, Any] = {}

    async def read(connection: Connection) -> None:
        client = connection.client
        if client is None or not connection.partitions:
            raise ConnectionError(f"{connection} is not connected")
        partitions = list(connection.partitions)
        async with client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                text, keys, args = placement.expand_call(partition, prefixes)
                await connection.script(text)(keys=keys, args=args, client=pipe)
            async with asyncio.timeout(COMMAND_TIMEOUT):
                found = await pipe.execute()
        replies.update(zip(partitions, found, strict=True))

    try:
        await asyncio.gather(*(read(c) for c in carrying))
    except (RedisError, OSError, TimeoutError, ConnectionError) as exc:
        why = f"reading the topics of {', '.join(patterns)}: {exc!r}"
        raise unavailable(why) from None
    missing = set(range(placement.partitions)) - replies.keys()
    if missing:
        unread = ", ".join(map(str, sorted(missing)[:5]))
        why = f"reading the topics of {', '.join(patterns)}: partitions {unread} not carried"
        raise unavailable(why)
    names: set[str] = set()
    gone, complete = [], []
    for partition in range(placement.partitions):
        reply = replies[partition]
        now, floor, position = int(reply[0]), int(reply[1]), int(reply[2])
        names.update(name.decode() for found in reply[3:] for name in found)
        gone.append(max(floor, now - age))
        complete.append(position)
    return Expansion(sorted(names), max(gone), tuple(gone), min(complete))
