"""One load run: start client processes, connect, publish at a rate, collect a Result.

Theory of operation. ``run_load`` starts ``processes`` client processes
(``clients.subscriber_process``) that connect their share of the connections over
several 127.0.0.x source addresses and report. Each connection asks for its own
path and headers (``subscribe``, a ``sse_fast.loadtarget.Subscription``, filled with
its topic and its index as ``{user}``; sse_fast's ``/events?topic=`` by default).
While they connect, a prober publishes a probe event to every topic each
``probe_interval`` s (when there is a publisher), so each connection's time to its
first event is known; probes are stamped before the measured window and never count
in ``published``, ``expected``, ``delivered`` or ``lost``.

Then, on one uvloop, ``publishers`` publishers (keep-alive HTTP, or a command run
per event: ``publish``) send events at ``rate``: first a warmup, then the measured
window. Each event's data is JSON with its wall-clock publish time (``t``), its
publisher (``w``, ``<run id>-<n>``: each run's its own) and that publisher's sequence
number (``s``); an event stamped before the run began is one the server kept from
before (Nchan's buffer, say): counted apart (``before_run``), never as delivered,
lost, duplicated, latency or first event. The clients find
them where ``stamps`` says (the server may wrap the data in its own JSON), measure
latency and count lost and duplicate events. With ``no_publish`` nobody publishes:
the server's own events are read with ``stamps``, nothing is expected, loss comes
from gaps in their sequence numbers. The window's start goes to the clients before
the warmup (``Command.MEASURE``), and only events stamped at or after it count, on
both sides. After ``drain`` seconds the clients send their final reports
(``Command.STOP``), which merge into the ``Result``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from ._clients import Command, subscriber_process
from ._load_options import LoadOptions
from ._phases import Prober, Published, PublishPhase, make_publisher, publisher_kind
from ._procfs import cpu_seconds, rss_kb
from ._result import (
    Result,
    merged,
    ms,
    optional_results,
    reconnect_on_close_results,
    timing_results,
)

__all__ = ["LoadOptions", "Result", "run_load"]  # Result is defined in _result.py

LOOPBACK_PREFIX = "127.0.0."


def require_httptools() -> None:
    """Refuse (``ImportError``, saying how to install it) to run without httptools."""
    try:
        import httptools  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"the load generator parses HTTP with httptools ({exc}); install it with "
            "pip install httptools, or the loadgen extra: pip install '.[loadgen]' in a "
            "checkout of sse_fast"
        ) from exc


def run_load(options: LoadOptions | None = None, /, **keywords: Any) -> Result:
    """Connect, warm up, publish at ``rate`` for ``duration`` seconds, collect.

    Takes a ``LoadOptions`` or its fields as keyword arguments (``connections``,
    ``rate`` and ``duration`` are required; ``host``, ``port``: the server, by default
    ``subscribe``'s address or 127.0.0.1:8000; ``name``: what the line calls it).
    Any SSE server (see ``sse_fast.loadtarget``; all on loopback):

    * ``subscribe``: a ``Subscription`` (URL and headers, templates with ``{topic}``
      and ``{user}``); ``host``/``port`` default to its address. Without it,
      ``subscribe_path(topic)`` on ``host``:``port`` (sse_fast's ``/events?topic=``).
    * ``publish``: an ``HttpPublish`` or a ``CommandPublish``; without it,
      ``publish_request(topic, data)`` on ``host``:``port`` (sse_fast's ``POST
      /publish``). ``no_publish``: the server publishes by itself; nothing is expected.
    * ``stamps``: a ``Stamps``, where each event's publish time, sequence number and
      publisher are (``t``, ``s``, ``w`` of its JSON data by default) and which event
      names count. A ``reader`` function must be picklable (a top-level function).
    * ``topic_names``: the topics (default ``topics`` of them, ``bench-0``, ...).

    Every run measures each connection's connect time (request written -> response
    head) and time to its first event that counts (``connect_*``, ``first_event_*``);
    ``probe`` (default: when there is a publisher and at most ``PROBED_TOPICS`` topics;
    True forces it) publishes a probe event to every
    topic each ``probe_interval`` s while connecting, and once more right after all
    are connected, so every connection gets a first event early. Probes are stamped
    before the measured window: they never count in ``published``, ``expected``,
    ``delivered`` or ``lost``.

    Optional features (off by default):

    * ``first_event_probe``: a connection storm. Every client process connects its
      share with ``connect_concurrency`` connects in flight (pass ``connections``
      for all at once) while probing as above; each client's connect time and time
      to its first event are then measured from the moment its process began
      connecting (so ``first_event_max_ms`` is the time until all are live).
    * ``reconnect_on_close``: a stream the server ends is reconnected as a browser
      does it, after its ``retry`` (else ``retry`` s), with ``Last-Event-ID``; events
      missing across the gap count as lost (``reconnected_on_close`` in the result).
    * ``read_every``: only every n-th connection of each client process reads its
      events; the others take their bytes in and count them. Deliveries, loss and
      latencies are then the sample's (``reading_connections``), and the latency the
      server's rather than the load generator's: read, thousands of streams (compressed
      ones decoded) cost the client the cores the server runs on. No per-core figure.
    * ``slow_every``: every n-th client is a slow consumer (receive buffer
      ``slow_rcvbuf``; reads for ``slow_read`` s, then pauses ``slow_pause`` s);
      its latencies are reported apart (``slow_*``), the p50/p99 are then the
      fast clients' only.
    * ``reconnect_after``: that many seconds into the measured window every
      client drops its connection and reconnects at once with ``Last-Event-ID``
      (the last id it saw); events missing afterwards count as lost.
    * ``fault``: called in a thread ``fault_after`` seconds into the measured window
      (e.g. a server restart: with ``reconnect_on_close`` the clients come back, and
      ``reconnected_on_close_last`` - ``fault_began`` is how long until the last did);
      the window ends once it returned.
    * ``drain``: seconds to wait for deliveries in flight after publishing.
    * ``subscriber_ports``: subscribers connect to these ports in turn (the nodes
      of a fleet) instead of ``port``; publishes still go to ``port``.
    * ``strict_window``: a publisher whose next slot falls after the end of a phase
      stops instead of publishing once more (by default each of ``publishers``
      overshoots by up to one interval, ``publishers / rate`` s, which inflates the
      publish count of short windows at low rates with many publishers).
    """
    if options is None:
        known = {f.name for f in fields(LoadOptions)}
        unknown = sorted(set(keywords) - known)
        if unknown:
            raise TypeError(f"run_load() got unexpected keyword argument(s): {unknown}")
        options = LoadOptions(**keywords)
    elif keywords:
        raise TypeError("run_load() takes a LoadOptions or keyword arguments, not both")
    require_httptools()
    load = _LoadRun(options)
    try:
        return load.run()
    finally:
        load.close()


@dataclass
class _Connected:
    """What the client processes reported once connected."""

    reports: list[dict[str, Any]]
    seconds: float
    connected: int = 0
    reading: int = 0  # of them, those that read their events (``read_every``)
    errors: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.connected = sum(r["connected"] for r in self.reports)
        self.reading = sum(r.get("reading", r["connected"]) for r in self.reports)
        self.errors = sum(r["errors"] for r in self.reports)
        for report in self.reports:
            for key, count in report.get("failures", {}).items():
                self.failures[key] = self.failures.get(key, 0) + count


class _LoadRun:
    """One run of ``run_load``: the client processes, their pipes, the phases."""

    def __init__(self, options: LoadOptions) -> None:
        self.options = options
        self.processes = options.processes or max(1, math.ceil(options.connections / 9000))
        sources = options.sources or max(1, math.ceil(options.connections / 8000))
        # 127.0.0.2 and up: ordinary loopback clients (127.0.0.1) keep their own port range
        self.source_ips = [f"{LOOPBACK_PREFIX}{i + 2}" for i in range(sources)]
        self.topic_names = options.topic_names or [f"bench-{i}" for i in range(options.topics)]
        self.pipes: list[Any] = []
        self.children: list[Any] = []
        self.fault_began: float | None = None
        #: this run's own: its publishers are named after it (``<run>-<n>``), so their
        #: sequences never meet an earlier run's, and events stamped before it began
        #: are counted apart by the clients (``before_run``)
        self.run_id = secrets.token_hex(4)
        self.run_began = time.time()

    def run(self) -> Result:
        options = self.options
        base_rss = rss_kb(options.server_pids())
        self.start_clients()
        connected = self.connect()
        options.progress(
            f"{options.name}: {connected.connected}/{options.connections} connected in "
            f"{connected.seconds:.1f}s ({connected.errors} errors)"
        )
        time.sleep(min(2.0, options.warmup))
        idle_rss = rss_kb(options.server_pids())
        try:
            import uvloop

            published = uvloop.run(self.publish())
        except ImportError:  # pragma: no cover
            published = asyncio.run(self.publish())
        time.sleep(options.drain)  # let deliveries in flight arrive
        published.cpu_marks.append(cpu_seconds(options.server_pids()))
        for pipe in self.pipes:
            pipe.send(Command.STOP)
        finals = [pipe.recv() if pipe.poll(60) else {} for pipe in self.pipes]
        result = self.result(connected, published, finals, (base_rss, idle_rss))
        options.progress(result.line())
        return result

    def start_clients(self) -> None:
        options = self.options
        subscribe = options.subscribe
        topics = [self.topic_names[i % options.topics] for i in range(options.connections)]
        if options.pattern_subtopics:
            topics = [f"{topic}/*" for topic in topics]
        host, port = options.host, options.port
        headers: list[str] | None = None
        if subscribe is None:
            paths = [options.subscribe_path(topic) for topic in topics]
        else:
            host, port = subscribe.address.host, subscribe.address.port
            if host == "localhost":  # the client sockets are IPv4 (127.0.0.x sources)
                host = "127.0.0.1"
            paths = [subscribe.path(topic, user) for user, topic in enumerate(topics)]
            if subscribe.headers:
                headers = [
                    "".join(f"{k}: {v}\r\n" for k, v in subscribe.header_values(t, u).items())
                    for u, t in enumerate(topics)
                ]
        context = multiprocessing.get_context("spawn")
        client_options = options.client_options()
        # each process's share spreads over the nodes evenly (its own rotation)
        ports: int | list[int] = (
            list(options.subscriber_ports) if options.subscriber_ports else port
        )
        for index in range(self.processes):
            share = paths[index :: self.processes]
            parent, child = context.Pipe()
            args: tuple[Any, ...] = (
                host,
                ports,
                share,
                self.source_ips,
                child,
                options.http_version,
            )
            mine = {**client_options, "run_began": self.run_began}
            if headers is not None:
                mine["headers"] = headers[index :: self.processes]
            args += (mine,)
            proc = context.Process(target=subscriber_process, args=args, daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.children.append(proc)

    def connect(self) -> _Connected:
        """Wait for every client process's first report (probing during a storm)."""
        options = self.options
        probed = (
            [f"{name}/0" for name in self.topic_names]
            if options.pattern_subtopics
            else self.topic_names
        )
        prober = Prober(
            lambda: make_publisher(options), probed, options.probe_interval, self.run_id
        )
        started = time.monotonic()
        if options.probing:
            prober.start()
        reports = [
            pipe.recv() if pipe.poll(120) else {"connected": 0, "errors": 0} for pipe in self.pipes
        ]
        seconds = time.monotonic() - started
        if options.probing:
            prober.stop()  # publishes one more probe right after all are connected
        return _Connected(reports, seconds)

    async def publish(self) -> Published:
        """Warm up, then publish through the measured window."""
        options = self.options
        phase = PublishPhase(options, self.topic_names, self.run_id)
        # The window's start goes to the clients before the warmup: a client
        # process starved of CPU may read its command pipe late, and one that
        # got it after the window began would reset its counts and miss events.
        window_from = time.time() + options.warmup + 0.5
        # the server's own events go on after the window: it ends for the clients too
        window = (
            (window_from, window_from + options.duration) if options.no_publish else window_from
        )
        for pipe in self.pipes:
            pipe.send((Command.MEASURE, window))
        # set before the warmup: its last publish may come after window_from (a slot
        # is kept even past a phase's end), and the clients count it then
        phase.window_from = window_from
        await phase.all_ticks(time.monotonic() + options.warmup)
        # The server's processes are found meanwhile, off the loop: finding them by
        # port reads every process's descriptors, a second or more on a loaded machine,
        # and the window must not pass while the loop waits on that (a 1-s run once
        # published nothing).
        loop = asyncio.get_running_loop()
        finding = loop.run_in_executor(None, options.server_pids)
        await phase.all_ticks(time.monotonic() + max(0.0, window_from - time.time()))
        cpu_marks = [cpu_seconds(await finding)]
        begin = time.monotonic()
        if options.reconnect_after is not None:
            asyncio.get_running_loop().call_later(options.reconnect_after, self.reconnect)
        fault = None
        if options.fault is not None:
            fault = asyncio.ensure_future(self.fault(options.fault, options.fault_after))
        await phase.all_ticks(begin + options.duration)
        if fault is not None:
            self.fault_began = await fault
        elapsed = time.monotonic() - begin
        return phase.close(elapsed, cpu_marks)

    async def fault(self, call: Callable[[], Any], after: float) -> float:
        """Call ``call`` in a thread ``after`` s from now; when it began (wall time)."""
        await asyncio.sleep(after)
        self.options.progress(f"{self.options.name}: the run's fault begins")
        began = time.time()
        await asyncio.get_running_loop().run_in_executor(None, call)
        return began

    def reconnect(self) -> None:
        self.options.progress(
            f"{self.options.name}: all clients drop and reconnect with Last-Event-ID"
        )
        for pipe in self.pipes:
            pipe.send(Command.RECONNECT)

    def result(
        self,
        connected: _Connected,
        published: Published,
        finals: list[dict[str, Any]],
        rss: tuple[int, int],
    ) -> Result:
        options = self.options
        base_rss, idle_rss = rss
        histogram = merged(finals, "histogram")
        delivered = sum(f.get("received", 0) for f in finals)
        count, elapsed = connected.connected, published.elapsed
        if options.read_every > 1:  # a sample reads its events: what is expected is theirs
            count = connected.reading
        per_topic = count / options.topics
        sent = published.published
        expected = int(sent * per_topic) if options.topics > 1 else sent * count
        if options.no_publish:
            expected = 0
        result = Result(
            target=options.name,
            connections=options.connections,
            connected=connected.connected,
            connect_errors=connected.errors,
            connect_seconds=round(connected.seconds, 2),
            topics=options.topics,
            publish_rate=options.rate,
            published=sent,
            publish_errors=published.errors,
            connect_failures=connected.failures,
            publish_failures=published.failures,
            publish_unanswered=published.unanswered,
            duration=round(elapsed, 2),
            expected=expected,
            delivered=delivered,
            delivered_per_second=round(delivered / elapsed, 1) if elapsed else 0.0,
            lost=sum(f.get("lost", 0) for f in finals),
            duplicates=sum(f.get("duplicates", 0) for f in finals),
            closed_by_server=sum(f.get("closed", 0) for f in finals),
            p50_ms=ms(histogram.percentile(0.50)),
            p99_ms=ms(histogram.percentile(0.99)),
            p999_ms=ms(histogram.percentile(0.999)),
            max_ms=ms(histogram.maximum),
            server_rss_idle_kb=idle_rss or None,
            server_rss_base_kb=base_rss or None,
            rss_per_connection_kb=round((idle_rss - base_rss) / connected.connected, 2)
            if connected.connected and idle_rss
            else None,
            client_processes=self.processes,
            publishers=options.publishers,
            payload_bytes=options.payload_bytes,
            http_version=options.http_version,
            publisher=publisher_kind(options),
            unstamped=sum(f.get("foreign", 0) for f in finals),
            before_run=sum(f.get("before_run", 0) for f in finals),
            delivered_unanswered=sum(f.get("delivered_unanswered", 0) for f in finals),
        )
        result.add_up()
        if options.read_every > 1:
            _sample_results(result, connected, finals)
        timing_results(result, finals)
        optional_results(
            result,
            connected.reports,
            finals,
            options.first_event_probe,
            options.slow_every,
            options.reconnect_after,
        )
        if options.reconnect_on_close:
            reconnect_on_close_results(result, finals, options.reconnect_after is None)
        if options.fault is not None:
            result.fault_began = self.fault_began
        _server_cpu(result, published, bool(options.server_pids()))
        if options.read_every > 1:  # delivered counts the sample's: no per-core figure
            result.delivered_per_server_core_second = None
        return result

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send(Command.EXIT)
        for proc in self.children:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


def _sample_results(result: Result, connected: _Connected, finals: list[dict[str, Any]]) -> None:
    """With ``read_every``: how many read, and the body bytes per event of the others."""
    result.reading_connections = connected.reading
    drainers = connected.connected - connected.reading
    events = sum(f.get("events_read", 0) for f in finals)
    if drainers and events and connected.reading:
        per_reader = events / connected.reading  # each drainer had as many
        drained = sum(f.get("drained_bytes", 0) for f in finals)
        result.drained_bytes_per_event = round(drained / drainers / per_reader, 1)


def _server_cpu(result: Result, published: Published, has_pids: bool) -> None:
    marks = published.cpu_marks
    if has_pids and len(marks) == 2 and marks[1] > marks[0]:
        used = marks[1] - marks[0]
        result.server_cpu_seconds = round(used, 2)
        result.server_cores_used = round(used / (published.elapsed + 1.0), 2)
        result.delivered_per_server_core_second = round(result.delivered / used, 1)
