"""The publishing side of a run: the publishers keeping the rate (``PublishPhase``) and
the prober publishing while the clients connect (``Prober``).

Theory of operation. ``make_publisher`` makes one publisher as the run's options say
(keep-alive HTTP to sse_fast's API or to an ``HttpPublish``, or a ``CommandPublish``
run per event). ``PublishPhase`` runs ``publishers`` of them through a phase (the
warmup, then the measured window), each taking its share of the rate; the topics take
turns, and each event's data is JSON with its publish time ``t``, its publisher ``w``
(``<run id>-<n>``: no two runs share one) and its sequence number ``s`` per publisher
and topic, so a subscriber (which sees one
topic) counts any gap as lost. Only events stamped at or after ``window_from`` count as
published. ``Prober`` publishes from a thread of its own while the clients connect
(publisher ``<run id>-probe``), stamped before the window: its events never count.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from ..loadtarget import CommandPublish, HttpPublish
from ._publishers import CommandPublisher, KeepAlivePublisher

if TYPE_CHECKING:
    from ._load_options import LoadOptions

__all__ = ["Prober", "PublishPhase", "Published", "make_publisher", "publisher_kind"]


#: how many unanswered sequence numbers the events carry (the latest), per publisher and topic
UNANSWERED_KEPT = 64


@dataclass
class Published:
    """What the publishers did in the measured window."""

    published: int
    errors: int
    elapsed: float
    failures: dict[str, int]
    cpu_marks: list[float]
    #: publishes whose answer was lost (the server may or may not have taken them)
    unanswered: int = 0


class PublishPhase:
    """The publishers of one run, ticking at the run's rate."""

    def __init__(self, options: LoadOptions, topic_names: list[str], run_id: str = "") -> None:
        self.options = options
        #: each publisher's name in its events (``w``): the run's id and its number, so
        #: that no two runs' sequences meet (a server may replay an earlier run's events)
        self.names: list[str | int] = [
            f"{run_id}-{index}" if run_id else index for index in range(options.publishers)
        ]
        subtopics = options.pattern_subtopics
        #: where each publish goes, in turn, and the topic its sequence numbers count
        #: in (a pattern stream of ``<topic>/*`` sees every subtopic's: one sequence)
        self.targets = (
            [(f"{name}/{k}", name) for k in range(subtopics) for name in topic_names]
            if subtopics
            else [(name, name) for name in topic_names]
        )
        self.topic_names = topic_names
        self.publishers = (
            []
            if options.no_publish
            else [make_publisher(options) for _ in range(options.publishers)]
        )
        self.padding = "x" * max(0, options.payload_bytes - 48)
        self.turns = [0] * options.publishers  # publishes so far (the topics take turns)
        self.seqs: list[dict[str, int]] = [{} for _ in range(options.publishers)]
        #: the sequence numbers (the latest ones) whose publish got no answer, per
        #: publisher and topic: every later event lists them (``u``), so a gap there is
        #: not counted as lost (a publish never acknowledged promises nothing)
        self.unanswered_seqs: list[dict[str, list[int]]] = [{} for _ in range(options.publishers)]
        self.unanswered = 0
        # Events stamped at or after window_from are the measured ones, for the
        # clients and for the publish count alike: no race with the command pipe.
        self.window_from = float("inf")
        self.published = 0

    async def all_ticks(self, until: float) -> None:
        """Every publisher publishes its share of the rate until ``until`` (monotonic);
        without publishers, the time passes."""
        if not self.publishers:  # the server publishes by itself: only the time passes
            await asyncio.sleep(max(0.0, until - time.monotonic()))
        await asyncio.gather(*(self.tick(i, until) for i in range(len(self.publishers))))

    async def tick(self, index: int, until: float) -> None:
        """Publisher ``index`` publishes its share of the rate until ``until``."""
        options = self.options
        interval = options.publishers / options.rate
        next_at = time.monotonic() + index * interval / options.publishers
        while True:
            now = time.monotonic()
            if now >= until:
                return
            if options.strict_window and next_at >= until:
                await asyncio.sleep(until - now)  # the next slot is past the phase
                return
            if now < next_at:
                await asyncio.sleep(next_at - now)
            await self.publish_one(index)
            next_at += interval
            if next_at < time.monotonic() - 1.0:  # cannot keep up: do not burst
                next_at = time.monotonic()

    async def publish_one(self, index: int) -> None:
        """Publisher ``index``'s next event, to the next topic in turn. Sequence numbers
        are per publisher and topic (a pattern's: ``targets``): a subscriber sees one,
        and a gap is a loss. A publish refused for sure (no connection, an answer that is
        not 2xx) gives its number back; one whose answer was lost keeps it (it may have
        been published)."""
        targets = self.targets
        turn = self.turns[index]
        self.turns[index] = turn + 1
        topic, counted = targets[turn % len(targets)]
        seq = self.seqs[index].get(counted, 0)
        self.seqs[index][counted] = seq + 1
        stamp = time.time()
        body: dict[str, object] = {"t": stamp, "w": self.names[index], "s": seq, "p": self.padding}
        unanswered = self.unanswered_seqs[index].get(counted)
        if unanswered:
            body["u"] = unanswered
        data = orjson.dumps(body).decode()
        publisher = self.publishers[index]
        if await publisher.publish(topic, data):
            if stamp >= self.window_from:
                self.published += 1
        elif publisher.refused:
            self.seqs[index][counted] = seq
        else:  # its answer was lost: it may have been published, or not
            kept = self.unanswered_seqs[index].setdefault(counted, [])
            kept.append(seq)
            del kept[:-UNANSWERED_KEPT]
            if stamp >= self.window_from:
                self.unanswered += 1

    def close(self, elapsed: float, cpu_marks: list[float]) -> Published:
        """Close the publishers; what they did in the window."""
        failures: dict[str, int] = {}
        for publisher in self.publishers:
            publisher.close()
            for key, count in publisher.failures.items():
                failures[key] = failures.get(key, 0) + count
        errors = sum(p.errors for p in self.publishers)
        return Published(self.published, errors, elapsed, failures, cpu_marks, self.unanswered)


def make_publisher(options: LoadOptions) -> KeepAlivePublisher | CommandPublisher:
    """One publisher as ``options`` say: a command, an HTTP publish, or ``publish_request``
    on ``host``:``port`` (sse_fast's API by default)."""
    if isinstance(options.publish, CommandPublish):
        return CommandPublisher(options.publish)
    if isinstance(options.publish, HttpPublish):
        address = options.publish.address
        return KeepAlivePublisher(address.host, address.port, options.publish.request)
    return KeepAlivePublisher(options.host, options.port, options.publish_request)


def publisher_kind(options: LoadOptions) -> str:
    """``"none"`` (the server publishes), ``"command"`` or ``"http"``."""
    if options.no_publish:
        return "none"
    return "command" if isinstance(options.publish, CommandPublish) else "http"


class Prober:
    """Publishes a probe event to every topic each ``interval`` s from a thread of its
    own while the clients connect, and once more when stopped."""

    def __init__(
        self,
        make: Callable[[], KeepAlivePublisher | CommandPublisher],
        topics: list[str],
        interval: float,
        run_id: str = "",
    ) -> None:
        self.make = make
        self.name: str | int = f"{run_id}-probe" if run_id else -1  # its events' ``w``
        self.topics = topics
        self.interval = interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def start(self) -> None:
        """Start probing, in a thread of its own."""
        self.thread.start()

    def stop(self) -> None:
        """Publish one more probe to every topic, and stop."""
        if self.thread.is_alive():
            self.done.set()
            self.thread.join(30)

    def _run(self) -> None:
        async def main() -> None:
            publisher = self.make()
            seq = 0
            last = False
            while True:
                last = self.done.is_set()
                for topic in self.topics:
                    body = {"t": time.time(), "w": self.name, "s": seq, "p": ""}
                    data = orjson.dumps(body).decode()
                    self.sent += await publisher.publish(topic, data)
                seq += 1
                if last:
                    break
                await asyncio.get_running_loop().run_in_executor(
                    None, self.done.wait, self.interval
                )
            publisher.close()

        asyncio.run(main())
