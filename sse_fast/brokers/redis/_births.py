"""Topics born in Redis that this member's pattern streams want (``Births``, one per
``Connection``; one sequence only).

Theory of operation
-------------------
A node holds only the topics its streams need (``_holding.py``), but a stream of topic
patterns (``user/42/*``) needs topics nobody named, some not born yet. The publish
script keeps a directory of topics: ``names`` (by name) and ``births`` (by the position
of a topic's first event since its stream was created), and tells each birth on the
``born`` channel, ``<position> <topic>``, before the event itself (``publish.lua``).

* Opening. A pattern stream's existing topics are read from the directory by the
  patterns' literal prefixes (``RedisBroker.expand``) and prepared as named ones are,
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
  topics again and the rescan finds the births, delivered together, in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..._patterns import literal_prefix
from ..._tasks import stop_task
from .. import Expansion
from .._sequencing import Sequenced
from ._scripts import COMMAND_TIMEOUT
from ._state import LOAD_CHUNK, Read

if TYPE_CHECKING:
    from ._broker import RedisBroker
    from ._connection import Connection

__all__ = ["Births", "read_directory"]

log = logging.getLogger("sse_fast.redis")


class Births:
    """The births one connection is told, and the adoption of the wanted ones."""

    def __init__(self, broker: RedisBroker, connection: Connection) -> None:
        self.broker = broker
        self.connection = connection
        #: the newest birth position handled (adopted, or not wanted): a rescan reads after it;
        #: 0 until the first subscription
        self.handled = 0
        #: topics adopted through births (``/stats``)
        self.adopted = 0
        #: a batch failed: the connection subscribes again (and rescans)
        self.failed = False
        self._waiting: list[tuple[int, str]] = []  # wanted births not in a batch yet
        self._batch: list[tuple[int, str]] = []  # the births of the batch under way
        self._held: list[Sequenced] | None = None  # live messages held back meanwhile
        self._task: asyncio.Task[None] | None = None
        self._marker: tuple[bytes, asyncio.Future[None]] | None = None
        # topics a stream named that pattern streams want, waiting to be read as births
        self._named: dict[str, asyncio.Future[None]] = {}
        # until a (re)subscription's rescan: births told do not move ``handled`` (the rescan
        # reads from it, and what it missed is older than what the new subscription tells)
        self._rescanning = True

    # ---------------------------------------------------------------- messages

    def told(self, data: bytes) -> None:
        """A message on the ``born`` channel: a birth, or a marker (ours is awaited)."""
        if data.startswith(b"~"):
            marker = self._marker
            if marker is not None and marker[0] == data and not marker[1].done():
                marker[1].set_result(None)
            return
        head, _, raw = data.partition(b" ")
        position, name = int(head), raw.decode()
        if not self._rescanning:
            self.handled = max(self.handled, position)
        if name in self.connection.holding.held or not self.broker.member.wants(name):
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
        future = self.connection.holding.hold(names)
        after = self.connection.states[0].seen + 1
        for name in names:
            self._named[name] = future
            self._waiting.append((after, name))
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
            self.connection.holding.route(held)

    # ---------------------------------------------------------------- (re)subscription

    async def rescan(self) -> list[str]:
        """After (re)subscribing: the wanted topics born since the newest birth handled and
        not held (the caller holds and subscribes them; the resync reads them). The first
        subscription starts at the newest birth."""
        client = self.connection.client
        assert client is not None
        key = self.broker.placement.births_key()
        if not self.handled:
            newest = await client.zrevrange(key, 0, 0, withscores=True)
            self.handled = max(self.handled, int(newest[0][1])) if newest else 1
            self._rescanning = False
            return []
        found: Any = await client.zrangebyscore(key, f"({self.handled}", "+inf", withscores=True)
        held = self.connection.holding.held
        wants = self.broker.member.wants
        names = []
        for raw, score in found:
            name = raw.decode()
            self.handled = max(self.handled, int(score))
            if name not in held and wants(name):
                names.append(name)
        waiting = set(names)
        self._waiting = [(p, n) for p, n in self._waiting if n not in waiting]
        self._rescanning = False
        return names

    def reset(self) -> None:
        """The subscription is gone: stop adopting; the births not handled are rescanned
        after the next subscription (the messages held back are read again by the resync)."""
        self._forget_waiting("the Redis subscription was lost")
        self._held = None
        self.failed = False
        self._rescanning = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop the batch under way."""
        task, self._task = self._task, None
        await stop_task(task)

    # ---------------------------------------------------------------- adopting

    async def _run(self) -> None:
        try:
            while self._waiting:
                self._batch, self._waiting = self._waiting, []
                await self._adopt(self._batch)
                self._batch = []
        except (RedisError, OSError, TimeoutError, ConnectionError) as exc:
            log.warning(
                "%s: topics born for pattern streams not read (%r): subscribing again",
                self.connection,
                exc,
            )
            self._give_up()
        except Exception:  # a fault here must not hold the live messages back for good
            log.exception("%s: adopting topics born for pattern streams failed", self.connection)
            self._give_up()
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _adopt(self, batch: list[tuple[int, str]]) -> None:
        connection = self.connection
        holding = connection.holding
        placement = self.broker.placement
        fresh = list(dict.fromkeys(name for _, name in batch if name not in holding.held))
        named = {name: self._named.pop(name) for _, name in batch if name in self._named}
        names = [*fresh, *named]
        # the loads' futures: the births' one, and each named topic's stream's
        loading = [(fresh, holding.hold(fresh)), *(([n], f) for n, f in named.items())]
        reads: list[Read] = []
        try:
            if names:
                await connection.subscribe([placement.channel(name) for name in names])
                for start in range(0, len(names), LOAD_CHUNK):  # Redis is not blocked long
                    chunk = names[start : start + LOAD_CHUNK]
                    reads.append(await connection.history.read_new(0, chunk))
            await self._sync()
        except BaseException as exc:
            for mine, future in loading:
                holding.born_loaded(mine, future, f"reading topics born for patterns: {exc!r}")
            raise
        # from here to the delivery, one turn of the loop: the flush merges it all
        cut = min((position for position, _ in self._waiting), default=None)
        later = self._load(reads, cut)
        for mine, future in loading:
            holding.born_loaded(mine, future)
        self._release(later, cut)

    async def _sync(self) -> None:
        """Publish a marker on ``born`` and wait for it to come back: every message
        published before it has then arrived."""
        loop = asyncio.get_running_loop()
        token = b"~" + os.urandom(8).hex().encode()
        arrived: asyncio.Future[None] = loop.create_future()
        self._marker = (token, arrived)
        try:
            channel = self.broker.placement.born_channel()
            assert channel is not None
            await self.connection.send(channel, token)
            await asyncio.wait_for(arrived, COMMAND_TIMEOUT)
        finally:
            self._marker = None

    def _load(self, reads: list[Read], cut: int | None) -> list[Sequenced]:
        """Give the member the topics read, with their history below ``cut`` (the next
        wanted birth); the rest of it is returned."""
        member = self.broker.member
        history = self.connection.history
        later: list[Sequenced] = []
        for read in reads:
            for name, (_, _, items) in read.topics.items():
                now = items if cut is None else [i for i in items if i.position < cut]
                later += items[len(now) :]
                member.load(name, history.floor_of(name, read), now)
                self.adopted += 1
        return later

    def _release(self, later: list[Sequenced], cut: int | None) -> None:
        """Deliver the messages held back (and ``later``) below ``cut``, in order of
        position; those at or after it stay held for the next batch."""
        held = [*(self._held or ()), *later]
        if cut is None:
            out, self._held = held, None
        else:
            out = [item for item in held if item.position < cut]
            self._held = [item for item in held if item.position >= cut]
        out.sort(key=_position)
        self.connection.holding.route(out)

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
        unhandled = [position for position, _ in (*self._batch, *self._waiting)]
        if unhandled:
            self.handled = min(self.handled, min(unhandled) - 1)
        self._batch, self._waiting = [], []
        named, self._named = self._named, {}
        for name, future in named.items():
            self.connection.holding.born_loaded([name], future, why)


def _position(item: Sequenced) -> int:
    return item.position


async def read_directory(broker: RedisBroker, patterns: Sequence[str]) -> Expansion:
    """The topics in the directory whose names start with the literal prefixes of
    ``patterns`` (``EXPAND_SCRIPT``: one call, a prefix covered by a shorter one left out),
    and the position up to which a matching topic may have gone without trace: the
    history age, or the dataset's floor; ``PublishError`` 503 while Redis is away."""
    prefixes = sorted({literal_prefix(pattern) for pattern in patterns})
    prefixes = [p for p in prefixes if not any(p != q and p.startswith(q) for q in prefixes)]
    text, keys, args = broker.placement.expand_call(prefixes)
    try:
        reply = await broker.feed.script(text)(keys=keys, args=args)
    except (RedisError, OSError, TimeoutError) as exc:
        why = f"reading the topics of {', '.join(patterns)}: {exc!r}"
        raise broker.unavailable_error(why) from None
    now, floor = int(reply[0]), int(reply[1])
    names = {name.decode() for found in reply[2:] for name in found}
    return Expansion(sorted(names), max(floor, now - int(broker.history_age * 1_000_000)))
