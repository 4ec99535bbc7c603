"""A load run's options (``LoadOptions``): what ``run_load`` (``_run.py``) and its
publishing phases (``_phases.py``) read, checked as they are made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..loadtarget import CommandPublish, HttpPublish, Stamps, Subscription
from ._event_reading import picklable
from ._publishers import PublishRequest, sse_fast_publish

__all__ = ["PROBED_TOPICS", "LoadOptions"]

#: up to this many topics, a publishing run probes while connecting unless told not to
PROBED_TOPICS = 64


def _default_path(topic: str) -> str:
    return f"/events?topic={topic}"


def _no_progress(line: str) -> None:
    pass


@dataclass(kw_only=True)
class LoadOptions:
    """What ``run_load`` does; its keyword arguments (see ``run_load``). ``host`` and
    ``port`` default to ``subscribe``'s address (else 127.0.0.1:8000), ``name`` to
    ``host:port``."""

    host: str = ""
    port: int = 0
    name: str = ""
    connections: int
    rate: float
    duration: float
    warmup: float = 2.0
    topics: int = 1
    processes: int = 0  # client processes (0: one per 9,000 connections)
    sources: int = 0  # 127.0.0.x source addresses (0: one per 8,000 connections)
    payload_bytes: int = 64
    subscribe_path: Callable[[str], str] = _default_path
    publish_request: PublishRequest = sse_fast_publish
    server_pids: Callable[[], list[int]] = list
    http_version: str = "1.1"
    publishers: int = 1
    progress: Callable[[str], None] = _no_progress
    connect_concurrency: int = 256
    first_event_probe: bool = False
    probe_interval: float = 0.1
    slow_every: int = 0
    slow_read: float = 0.5
    slow_pause: float = 2.0
    slow_rcvbuf: int = 4096
    reconnect_after: float | None = None
    drain: float = 3.0
    strict_window: bool = False
    subscriber_ports: list[int] | None = None
    subscribe: Subscription | None = None  # None: subscribe_path on host:port
    publish: HttpPublish | CommandPublish | None = None  # None: publish_request on host:port
    no_publish: bool = False  # the server publishes by itself
    stamps: Stamps = field(default_factory=Stamps)
    topic_names: list[str] | None = None  # None: bench-0, bench-1, ... (topics of them)
    probe: bool | None = None  # None: probe while connecting, with a publisher and <= 64 topics
    reconnect_on_close: bool = False
    #: the server numbers each stream's events from the start (a ticker's counter): a
    #: reconnected stream follows its sequence afresh, not as repeats of the last one
    seq_per_stream: bool = False
    retry: float = 3.0  # seconds before a reconnect when the stream named no retry
    #: > 0: subscribe by pattern: each client asks for ``<topic>/*`` and the publishes of
    #: ``<topic>`` go to its subtopics ``<topic>/0`` ... ``<topic>/<n-1>`` in turn
    pattern_subtopics: int = 0
    #: called (in a thread) ``fault_after`` s into the measured window, e.g. to restart
    #: the server; the window ends once it returned
    fault: Callable[[], Any] | None = None
    fault_after: float = 0.0
    #: ask for compressed streams: every subscribe request's Accept-Encoding ("" for
    #: none); bytes on the wire per event are reported beside the decoded ones
    accept_encoding: str = ""
    #: > 1: only every n-th stream of each client process reads its events (decodes,
    #: parses, counts, times them); the others take their bytes in and count them
    #: (``drained_bytes_per_event``). The client then costs next to nothing but the
    #: sample's reading: a latency that is the server's, not the load generator's
    #: (its decoding of thousands of compressed streams, on the same cores)
    read_every: int = 1

    def __post_init__(self) -> None:
        if self.subscribe is not None:
            self.host = self.host or self.subscribe.address.host
            self.port = self.port or self.subscribe.address.port
        self.host = self.host or "127.0.0.1"
        self.port = self.port or 8000
        self.name = self.name or f"{self.host}:{self.port}"
        if self.topic_names is not None:
            if not self.topic_names:
                raise ValueError("topic_names is empty: give at least one topic")
            self.topics = len(self.topic_names)
        if self.stamps != Stamps() or self.stamps.reader is not None:
            picklable(self.stamps)
        if self.read_every < 1:
            raise ValueError(f"read_every must be 1 (every stream) or more, not {self.read_every}")
        if self.read_every > 1:
            mixed = [
                name
                for name, on in (
                    ("slow_every", self.slow_every),
                    ("reconnect_on_close", self.reconnect_on_close),
                    ("reconnect_after", self.reconnect_after is not None),
                    ("first_event_probe", self.first_event_probe),
                )
                if on
            ]
            if mixed:
                raise ValueError(
                    f"read_every={self.read_every} reads a sample of the streams; it does not "
                    f"combine with {', '.join(mixed)}, which judge every stream: run them apart"
                )

    @property
    def probing(self) -> bool:
        """Whether probes are published while connecting."""
        if self.no_publish:
            return False
        if self.first_event_probe or self.probe:
            return True
        # by default, up to PROBED_TOPICS topics: a probe per topic each probe_interval
        # would otherwise be a publish load of its own while the clients connect
        return self.probe is None and self.topics <= PROBED_TOPICS

    def client_options(self) -> dict[str, Any]:
        """The ``options`` of each client process (only what differs from its defaults)."""
        options: dict[str, Any] = {}
        if self.connect_concurrency != 256:
            options["concurrency"] = self.connect_concurrency
        if self.stamps != Stamps() or self.stamps.reader is not None:
            options["stamps"] = self.stamps
        if self.reconnect_on_close:
            options.update(reconnect_on_close=True, retry=self.retry)
        if self.seq_per_stream:
            options["seq_per_stream"] = True
        if self.first_event_probe:
            options["storm"] = True
        if self.slow_every:
            options.update(
                slow_every=self.slow_every,
                slow_read=self.slow_read,
                slow_pause=self.slow_pause,
                slow_rcvbuf=self.slow_rcvbuf,
            )
        if self.reconnect_after is not None:
            options["reconnect"] = True
        if self.accept_encoding:
            options["accept_encoding"] = self.accept_encoding
        if self.read_every > 1:
            options["read_every"] = self.read_every
        return options
