"""Webhooks, the sending side: each stream's connect and disconnect batched per
URL, signed and POSTed at least once, bounded in memory, never on the fan-out
path. What a receiver gets, the signature and ``verify`` are in
``sse_fast/webhooks.py`` (the contract; it loads nothing of the hub).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from .._patterns import matches, meets
from .._tasks import stop_task
from ..settings._checks import split_list
from ..webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from ._streams import StreamListener

if TYPE_CHECKING:
    import httpx

    from ..settings import FeatureSettings
    from ._metrics import Metrics
    from ._subscription import Subscription

__all__ = ["BATCH", "SHUTDOWN_GRACE", "Webhooks"]

log = logging.getLogger("sse_fast.webhooks")

#: the most events in one POST (with this many more waiting, the next POST does not wait
#: for ``webhook_interval``)
BATCH = 1000
#: seconds ``stop`` gives the deliveries to send what waits
SHUTDOWN_GRACE = 2.0
FIRST_DELAY = 0.5


class Delivery:
    """The events waiting for one URL, and the task that sends them."""

    def __init__(self, url: str, max_pending: int) -> None:
        self.url = url
        self.pending: deque[dict[str, Any]] = deque()
        self.max_pending = max_pending
        self.dropped = 0  # since the last batch the receiver took
        self.wake = asyncio.Event()

    def add(self, event: dict[str, Any], metrics: Metrics) -> None:
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            metrics.webhook_dropped_total += 1
            return
        self.pending.append(event)
        if len(self.pending) == BATCH:  # a full POST waits: no need to wait for the interval
            self.wake.set()


class Webhooks(StreamListener):
    """The webhooks of one worker (``Hub.webhooks`` when ``webhook_urls`` is set): a
    listener of the hub's ``Streams`` that follows the streams of its topics."""

    def __init__(
        self,
        settings: FeatureSettings,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        node: str = "",
    ) -> None:
        """``node``: the name the events carry (``node_name``; the host's when empty)."""
        self.settings = settings
        self.metrics = metrics
        self.node = node or os.uname().nodename
        self.secret = settings.webhook_secret
        self.topics = split_list(settings.webhook_topics)
        self.deliveries = [
            Delivery(url, settings.webhook_max_pending) for url in split_list(settings.webhook_urls)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._stopping = False
        self.monotonic = clock  # the hub's (streams' connected_at)
        self.clock: Callable[[], float] = time.time  # wall clock, in the events

    # ------------------------------------------------------------ events

    def _wanted(self, subscription: Subscription) -> bool:
        # a pattern stream: also when its pattern can reach a topic of webhook_topics
        return any(matches(topic.name, self.topics) for topic in subscription.topics) or any(
            meets(pattern, (wanted,)) for pattern in subscription.patterns for wanted in self.topics
        )

    def _event(self, kind: str, subscription: Subscription) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "type": kind,
            "at": self.clock(),
            "node": self.node,
            "worker": os.getpid(),
            "stream": subscription.id,
            "topics": [topic.name for topic in subscription.topics],
            "patterns": list(subscription.patterns),
            "subject": subscription.subject,
            "client": subscription.client,
        }

    def _queue(self, event: dict[str, Any]) -> None:
        self.metrics.webhook_events_total += 1
        for delivery in self.deliveries:
            delivery.add(event, self.metrics)

    def joined(self, subscription: Subscription) -> None:
        """A stream of the webhook topics opened: its connect is queued."""
        if self._wanted(subscription):
            self._queue(self._event("connect", subscription))

    def follows(self, subscription: Subscription) -> bool:
        """Its end is queued too (``ended``) when it is a stream of the webhook topics."""
        return self._wanted(subscription)

    def ended(self, subscription: Subscription, reason: str) -> None:
        """A stream of the webhook topics ended (its ``closed`` resolved): its
        disconnect is queued, with the reason."""
        event = self._event("disconnect", subscription)
        event["reason"] = reason
        elapsed = self.monotonic() - subscription.connected_at
        event["connected_seconds"] = round(max(0.0, elapsed), 3)
        self._queue(event)

    # ------------------------------------------------------------ sending

    def start(self) -> None:
        """Start a delivery task per URL; ``RuntimeError`` when ``httpx`` (the server extra) is not
        installed."""
        try:
            import httpx
        except ImportError:
            raise RuntimeError(
                "webhooks need httpx: python -m pip install 'sse_fast[server]'"
            ) from None
        self._client = httpx.AsyncClient(timeout=self.settings.webhook_timeout)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(d)) for d in self.deliveries]

    async def stop(self) -> None:
        """Deliver what waits for at most ``SHUTDOWN_GRACE`` seconds, then stop."""
        self._stopping = True
        for delivery in self.deliveries:
            delivery.wake.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=SHUTDOWN_GRACE)
            for task in late:
                await stop_task(task)
        lost = sum(len(d.pending) for d in self.deliveries)
        if lost:
            log.warning("webhooks: %d events not delivered at shutdown", lost)
        if self._client is not None:
            await self._client.aclose()

    async def _run(self, delivery: Delivery) -> None:
        while True:
            try:
                if await self._step(delivery):
                    return
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: say so, and keep delivering
                log.exception("webhook delivery to %s failed", delivery.url)
                await asyncio.sleep(1.0)

    async def _step(self, delivery: Delivery) -> bool:
        """Send one batch if there is one; True when stopping with nothing left."""
        if not self._stopping and len(delivery.pending) < BATCH:
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(self.settings.webhook_interval):
                    await delivery.wake.wait()
            if not self._stopping:  # woken by a full batch: the next one waits again
                delivery.wake.clear()
        if not delivery.pending:
            return self._stopping
        count = min(len(delivery.pending), BATCH)
        events = [delivery.pending[i] for i in range(count)]
        dropped, delivery.dropped = delivery.dropped, 0
        body = orjson.dumps(
            {
                "batch": uuid.uuid4().hex,
                "sent_at": self.clock(),
                "dropped": dropped,
                "events": events,
            }
        )
        await self._deliver(delivery, body)
        for _ in range(count):  # taken: only now out of memory (at least once)
            delivery.pending.popleft()
        self.metrics.webhook_delivered_total += count
        return False

    async def _deliver(self, delivery: Delivery, body: bytes) -> None:
        """POST ``body`` until a 2xx (retrying with backoff); cancelled at shutdown."""
        assert self._client is not None
        delay = FIRST_DELAY
        while True:
            timestamp = str(int(self.clock()))
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            }
            try:
                reply = await self._client.post(delivery.url, content=body, headers=headers)
                if 200 <= reply.status_code < 300:
                    return
                problem = f"answered {reply.status_code}"
            except Exception as exc:  # refused, reset, timed out: try again
                problem = f"{type(exc).__name__}: {exc}"
            self.metrics.webhook_failures_total += 1
            log.warning("webhook %s %s; again in %.1f s", delivery.url, problem, delay)
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.settings.webhook_max_delay)
