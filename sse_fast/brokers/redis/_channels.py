"""The channels of one pub/sub subscription: subscribing with confirmations,
releasing, and what the server's subscribe and unsubscribe messages mean
(``Channels``, one per ``Connection``).

* ``subscribe`` sends ``SUBSCRIBE`` in batches of 512 channels (on a Redis
  Cluster ``SSUBSCRIBE``, one command per slot: a command's channels must share
  one) and waits until the reader has seen every confirmation (``confirmed``).
  Two subscribers of one channel wait for the same confirmation; one that gives
  up leaves it to the other.
* A confirmation for a channel confirmed before means redis-py reconnected and
  subscribed again by itself: messages of the gap are lost to this connection,
  so it is replaced (``Reconnect``).
* ``release`` unsubscribes in the background. On a Cluster, an ``sunsubscribe``
  for a channel not released here is the server's: the channel's slot is no
  longer that node's (resharding, a failover), and the connection follows the
  map (``Moved``).
* ``fail`` tells whoever waits for confirmations that the subscription is gone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._partitions import key_slot
from ._scripts import COMMAND_TIMEOUT
from ._state import Moved, Reconnect, ignore_result

__all__ = ["Channels"]


class Channels:
    """Confirmed and released channels of one subscription, changed only here."""

    def __init__(self, sharded: bool, name: str) -> None:
        #: sharded pub/sub (a Redis Cluster's master)
        self.sharded = sharded
        self._name = name
        self._confirmed: set[bytes] = set()
        self._waiters: dict[bytes, asyncio.Future[None]] = {}
        self._releasing: set[bytes] = set()

    def reset(self) -> None:
        """A new subscription: nothing confirmed or released yet."""
        self._confirmed = set()
        self._releasing = set()

    async def subscribe(
        self, pubsub: Any, channels: list[bytes], timeout: float = COMMAND_TIMEOUT * 2
    ) -> None:
        """SUBSCRIBE (SSUBSCRIBE per slot) and wait for every confirmation (the reader's);
        ``TimeoutError`` past ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        waiters = []
        for channel in channels:
            waiter = self._waiters.get(channel)
            if waiter is None or waiter.done():
                waiter = self._waiters[channel] = loop.create_future()
            waiters.append(waiter)
        if self.sharded:
            for group in by_slot(channels):
                for start in range(0, len(group), 512):
                    await pubsub.ssubscribe(*group[start : start + 512])
        else:
            for start in range(0, len(channels), 512):
                await pubsub.subscribe(*channels[start : start + 512])
        # waited for without cancelling them: a channel's waiter is shared by whoever
        # subscribes to it meanwhile (gather cancelled by its timeout cancelled them, and
        # another subscriber, its own task not cancelled, got CancelledError)
        if not waiters:
            return  # (asyncio.wait refuses an empty set)
        done, pending = await asyncio.wait(set(waiters), timeout=timeout)
        for waiter in done:
            waiter.result()  # the subscription was lost: raised
        if pending:
            raise TimeoutError(f"{len(pending)} of {len(waiters)} subscriptions not confirmed")

    def release(self, pubsub: Any, channels: list[bytes]) -> None:
        """UNSUBSCRIBE (SUNSUBSCRIBE per slot) in the background; not waited for."""
        loop = asyncio.get_running_loop()
        if self.sharded:
            self._releasing.update(channels)
            for group in by_slot(channels):
                loop.create_task(pubsub.sunsubscribe(*group)).add_done_callback(ignore_result)
        else:
            loop.create_task(pubsub.unsubscribe(*channels)).add_done_callback(ignore_result)

    def confirmed(self, channel: bytes) -> None:
        """A (s)subscribe confirmation; ``Reconnect`` for one seen before on this subscription."""
        if channel in self._confirmed:
            raise Reconnect("the subscription reconnected by itself")
        self._confirmed.add(channel)
        waiter = self._waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def unsubscribed(self, channel: bytes, sharded: bool) -> None:
        """An (s)unsubscribe message; ``Moved`` for one the server pushed (its slot left)."""
        self._confirmed.discard(channel)
        if not sharded:
            return
        if channel in self._releasing:
            self._releasing.discard(channel)
        else:
            raise Moved(f"{self._name} no longer serves {channel.decode(errors='replace')}")

    def fail(self, exc: BaseException) -> None:
        """Whoever waits for a confirmation gets ``exc``."""
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(exc)
                waiter.exception()  # whoever waits gets it; nobody may be waiting
        self._waiters = {}


def by_slot(channels: list[bytes]) -> list[list[bytes]]:
    """``channels`` grouped by Cluster slot (``SSUBSCRIBE`` takes channels of one slot)."""
    groups: dict[int, list[bytes]] = {}
    for channel in channels:
        groups.setdefault(key_slot(channel), []).append(channel)
    return list(groups.values())
