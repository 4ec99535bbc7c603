"""A worker put together: the composition root of one ``App`` (``sse-fast serve``'s
workers, and an app embedded in another server).

Theory of operation
-------------------
``worker_parts`` makes every part of a worker once, in dependency order, and gives
each its collaborators and hooks as it makes it: the broker the settings choose
(``broker_for``), the hub on it, then the app's parts on the hub. Nothing is
finished from outside once made: a part that reports figures into the hub (mirror
mode's reader, ``ReaderState``) is made before the hub and given to it; the
operations endpoints and the lifespan are given the reader they watch. ``App``
takes the parts as they come (``_routing.py``).

The supervising process (``serve``) is put together elsewhere: ``sse_fast/_compose.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ..brokers.durable._directory import directory_bytes
from ..hub import Hub
from ..settings import Settings
from ..settings._handoff import Handoff
from ._admission import Admission, ClientAddress
from ._auth import Authenticator
from ._cors import Cors
from ._events import EventsEndpoint
from ._lifespan import Lifespan
from ._operations import Operations
from ._publish import PublishEndpoint
from ._publish_stream import PublishStreamEndpoint
from ._start import WorkerStart

if TYPE_CHECKING:
    from ..brokers import Broker
    from ._upstream import Upstream

__all__ = [
    "NOT_UNDER_SERVE",
    "RELAY_JOIN_LIMIT",
    "WorkerParts",
    "broker_for",
    "data_figures",
    "worker_parts",
]

#: the hand-off of an app that no ``sse-fast serve`` started: no relay, no data
#: directory, no signal handlers of its own
NOT_UNDER_SERVE = Handoff()

#: seconds a starting worker under serve waits for the relay (its supervisor stops the
#: server sooner if the relay cannot start)
RELAY_JOIN_LIMIT = 3600.0


@dataclass(frozen=True)
class WorkerParts:
    """The parts of one worker, made by ``worker_parts``."""

    settings: Settings
    hub: Hub
    auth: Authenticator
    admission: Admission
    client_address: ClientAddress
    cors: Cors
    events: EventsEndpoint
    publish: PublishEndpoint
    publish_stream: PublishStreamEndpoint
    start: WorkerStart
    operations: Operations
    lifespan: Lifespan
    #: mirror mode's reader (None unless ``upstream`` is set)
    upstream: Upstream | None


def worker_parts(
    settings: Settings,
    hub: Hub | None = None,
    wall_clock: Callable[[], float] = time.time,
    handoff: Handoff = NOT_UNDER_SERVE,
) -> WorkerParts:
    """Every part of a worker with ``settings``, made once (see the module docstring).
    ``hub``: one made by the caller (an embedding's, a test's); else the hub on the
    broker the settings and ``handoff`` choose. ``wall_clock``: what tokens' ``exp``,
    ``nbf`` and ``iat`` are read against. ``handoff``: what ``sse-fast serve``
    decided for its workers (``Handoff.from_env()`` under it)."""
    reader = None
    if settings.upstream:
        if hub is not None:
            raise ValueError(
                "mirror mode (upstream) reports into the hub made with it: give no hub "
                "(App(settings)), or mirror no upstream"
            )
        from ._upstream import ReaderState  # mirror mode needs httpx: only when it is on

        reader = ReaderState(reading=not handoff.upstream_lock)
    if hub is None:
        reports: list[Callable[[], dict[str, Any]]] = []
        if reader is not None:
            reports.append(reader.report)
        if handoff.store_dir:  # durable history: the data directory's size
            reports.append(partial(data_figures, handoff.store_dir, settings.data_max_bytes))
        hub = Hub(settings, broker=broker_for(settings, handoff), reports=reports)
    upstream = None
    if reader is not None:
        from ._upstream import Upstream

        upstream = Upstream(
            settings.relay_mode, settings.limits, hub, reader, handoff.upstream_lock
        )
    # each part is given the sections of the settings it reads (``settings.limits``, ...)
    auth = Authenticator(
        settings.access, wall_clock, public_presence_topics=settings.public_presence_topics
    )
    admission = Admission(settings.limits)
    client_address = ClientAddress(settings.limits)
    cors = Cors(settings.access)
    start = WorkerStart(hub)
    operations = Operations(
        settings.access,
        hub,
        client_address,
        start,
        upstream,
        workers=settings.workers,
        broker_down_limit=settings.broker_down_limit,
        webhooks=bool(settings.webhook_urls),
    )
    limits, streams = settings.limits, settings.streams
    return WorkerParts(
        settings=settings,
        hub=hub,
        auth=auth,
        admission=admission,
        client_address=client_address,
        cors=cors,
        events=EventsEndpoint(limits, streams, hub, auth, admission, client_address, cors),
        # under serve, a body's wait is cut at its socket (Granian's outlives a cancel)
        publish=PublishEndpoint(
            limits, streams, hub, auth, admission, cors, handoff.install_signal_handlers
        ),
        publish_stream=PublishStreamEndpoint(limits, streams, hub, auth, admission, cors),
        start=start,
        operations=operations,
        lifespan=Lifespan(handoff, hub, start, upstream),
        upstream=upstream,
    )


def broker_for(settings: Settings, handoff: Handoff = NOT_UNDER_SERVE) -> Broker:
    """The broker a worker with ``settings`` publishes through: ``RedisBroker``
    (``redis_url``), ``RelayBroker`` (the hand-off's ``relay_socket``), or
    ``LocalBroker``, durable on the hand-off's ``store_dir`` or in memory."""
    if settings.redis_url:
        from ..brokers.redis import RedisBroker

        urls = settings.redis_urls
        url: Any = urls[0] if len(urls) == 1 else urls  # one Redis, or the shards in order
        layout: dict[str, Any] = {}
        if len(urls) > 1 or settings.redis_partition_count > 1:
            layout["partitions"] = settings.redis_partition_count
        return RedisBroker(
            url,
            **layout,
            prefix=settings.redis_prefix,
            history_frames=settings.redis_history_frames,
            history_age=settings.redis_history_age,
            probe_interval=settings.redis_probe_interval,
            wait_replicas=settings.redis_wait_replicas,
            load_frames=settings.ring_max_frames,
            node=settings.node_name or None,
            workers=settings.workers,
        )
    if handoff.relay_socket:
        from ..brokers._relay import RelayBroker

        # under serve the relay starts beside the workers, restoring history too:
        # its supervisor, not this wait, says when it failed (``_startup.py``)
        return RelayBroker(
            handoff.relay_socket,
            store_dir=handoff.store_dir,
            connect_timeout=RELAY_JOIN_LIMIT if handoff.start_failure_file else 10.0,
        )
    from ..brokers.local import LocalBroker

    if handoff.store_dir:
        from ..brokers.durable import EventLog
        from ..brokers.durable._log import log_options

        options = log_options(settings.storage, settings.streams, handoff.store_dir)
        return LocalBroker(EventLog(**options))
    return LocalBroker()


def data_figures(path: str, max_bytes: int) -> dict[str, Any]:
    """The data directory's part of this worker's ``/metrics`` report (durable history:
    ``brokers/durable``)."""
    return {"data_bytes": directory_bytes(path), "data_max_bytes": max_bytes}
