"""The metrics table: every metric ``/metrics`` may expose, each declared once.

* One entry per metric. ``CATALOGUE`` holds, in the order ``/metrics`` exposes
  them, each metric's name, Prometheus type, help text, labels, when it is
  present, and its ``figure``: where its number comes from. No other place in
  the package writes a metric's name (``tests/test_layout.py`` checks it).
* What follows from it. The exposition (``metrics.render``) walks the table and
  asks each present entry's figure for its value in a ``Scrape`` (every
  worker's report, and their counters summed); ``Metrics`` reports and sums the
  attributes the ``Counted``, ``CountedBy`` and ``Timed`` figures name;
  ``/stats`` shows the per-worker figures marked ``in_stats``
  (``STATS_FIGURES``); the docs' metrics reference is generated from it.
* Figures. ``Counted``, ``CountedBy`` and ``Timed``: an attribute of each
  worker's ``Metrics``, summed over the workers. ``Reported``: a key of each
  worker's report (``hub/_figures.py``), combined (``sum``, ``max``, the
  ``first`` worker's, or whether ``any`` is true). ``PerWorker``: the same,
  one sample per worker with a ``worker`` label. ``Busiest``: the subscribers
  of the busiest topics, summed per topic. ``OfServer``: what the scrape knows
  of the server (the workers configured, and how many reported).
* Presence. A metric is exposed when its ``when`` holds for the scrape:
  ``always``; with persistence on (a worker reported its data directory); in
  mirror mode (a worker reported the upstream); with ``webhook_urls``.

Adding a metric: its entry here, in the place it is to be exposed; for a
counter of the worker, the attribute on ``Metrics`` that the code adds to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CATALOGUE",
    "REFUSAL_REASONS",
    "STATS_FIGURES",
    "Busiest",
    "Counted",
    "CountedBy",
    "Figure",
    "MetricInfo",
    "OfServer",
    "PerWorker",
    "Reported",
    "Scrape",
    "Timed",
    "header",
    "metric",
    "worker_of",
]


def worker_of(report: dict[str, Any]) -> int:
    """The number of the worker that sent ``report`` (0 for a server of one worker)."""
    worker = report.get("worker")
    return 0 if worker is None else int(worker)


@dataclass(frozen=True)
class Scrape:
    """What one ``/metrics`` answer is rendered from."""

    #: every worker's report (``hub/_figures.py``), in worker order
    reports: list[dict[str, Any]]
    #: the workers' ``Metrics`` summed (``hub/_metrics.py``), read by each metric's
    #: attribute name
    merged: object
    #: the worker processes configured
    workers_expected: int
    #: whether webhooks are configured (``webhook_urls``)
    webhooks: bool = False

    @property
    def workers_reporting(self) -> int:
        """How many workers' reports this scrape has."""
        return len(self.reports)


class Figure:
    """Where a metric's figure comes from (each kind below says how)."""

    def of(self, scrape: Scrape) -> Any:
        """The figure in ``scrape``: a number, ``(label value, number)`` pairs for a
        labelled metric, or a ``Histogram``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Counted(Figure):
    """A whole number each worker's ``Metrics`` keeps as ``attribute``, summed."""

    attribute: str

    def of(self, scrape: Scrape) -> Any:
        """The sum over the workers."""
        return getattr(scrape.merged, self.attribute)


@dataclass(frozen=True)
class CountedBy(Figure):
    """Counts by label value each worker's ``Metrics`` keeps in the dict
    ``attribute``, summed; in the dict's order, or sorted with ``sort``."""

    attribute: str
    sort: bool = False

    def of(self, scrape: Scrape) -> Any:
        """The ``(label value, sum)`` pairs."""
        counts = getattr(scrape.merged, self.attribute).items()
        return sorted(counts) if self.sort else list(counts)


@dataclass(frozen=True)
class Timed(Figure):
    """A ``Histogram`` each worker's ``Metrics`` keeps as ``attribute``, summed."""

    attribute: str

    def of(self, scrape: Scrape) -> Any:
        """The summed histogram."""
        return getattr(scrape.merged, self.attribute)


#: how ``Reported`` combines the workers' values
_COMBINE: dict[str, Callable[[list[Any]], Any]] = {
    "sum": sum,
    "max": max,
    "first": lambda values: values[0],
    "any": lambda values: int(any(values)),
}


@dataclass(frozen=True)
class Reported(Figure):
    """The value of ``key`` in the reports of the workers that have it, combined by
    ``combine``: ``sum``, ``max``, ``first`` (the lowest worker's) or ``any`` (1 if
    one is true, else 0)."""

    key: str
    combine: Literal["sum", "max", "first", "any"]

    def of(self, scrape: Scrape) -> Any:
        """The combined value."""
        return _COMBINE[self.combine]([one[self.key] for one in scrape.reports if self.key in one])


@dataclass(frozen=True)
class PerWorker(Figure):
    """The whole number ``key`` of each worker's report (0 when missing), labelled by
    worker; with ``in_stats``, ``/stats`` shows it too (``STATS_FIGURES``)."""

    key: str
    in_stats: bool = False

    def of(self, scrape: Scrape) -> Any:
        """The ``(worker, value)`` pairs, in worker order."""
        return [(worker_of(one), int(one.get(self.key, 0))) for one in scrape.reports]


@dataclass(frozen=True)
class Busiest(Figure):
    """The ``(topic, count)`` pairs of ``key`` in each worker's report, summed per
    topic: the ``count`` highest sums, highest first."""

    key: str
    count: int

    def of(self, scrape: Scrape) -> Any:
        """The busiest topics and their sums."""
        totals: dict[str, int] = {}
        for one in scrape.reports:
            for topic, count in one[self.key]:
                totals[topic] = totals.get(topic, 0) + count
        return sorted(totals.items(), key=lambda item: -item[1])[: self.count]


@dataclass(frozen=True)
class OfServer(Figure):
    """The scrape's ``attribute``: ``workers_expected`` or ``workers_reporting``."""

    attribute: str

    def of(self, scrape: Scrape) -> Any:
        """The scrape's value."""
        return getattr(scrape, self.attribute)


_ALWAYS = "always"
_PERSISTENCE = "with persistence on (no Redis)"
_MIRROR = "in mirror mode"
_WEBHOOKS = "with webhook_urls"

#: each ``when`` of the catalogue, and whether it holds for a scrape
_PRESENT: dict[str, Callable[[Scrape], bool]] = {
    _ALWAYS: lambda scrape: True,
    _PERSISTENCE: lambda scrape: any("data_bytes" in one for one in scrape.reports),
    _MIRROR: lambda scrape: any("upstream_reading" in one for one in scrape.reports),
    _WEBHOOKS: lambda scrape: scrape.webhooks,
}


@dataclass(frozen=True)
class MetricInfo:
    """One metric of ``/metrics``: its name, Prometheus type, help text, labels,
    when it is present (``always``, or the setting that brings it), and where its
    figure comes from."""

    #: the metric's name as exposed (a counter's with its ``_total``)
    name: str
    #: its Prometheus type: ``counter``, ``gauge`` or ``histogram``
    kind: str
    #: its ``# HELP`` text (one line)
    help: str
    #: the names of its labels (a histogram's ``le`` is implied)
    labels: tuple[str, ...] = ()
    #: when it is exposed: ``always``, or a short phrase naming what brings it
    when: str = _ALWAYS
    #: where its figure comes from
    figure: Figure = field(kw_only=True)

    def present(self, scrape: Scrape) -> bool:
        """Whether ``scrape`` exposes this metric (its ``when`` holds)."""
        return _PRESENT[self.when](scrape)


#: the values of ``sse_fast_refused_total``'s ``reason`` label, and what each means
#: (tests/hub/test_metrics_catalogue.py finds every reason the code refuses with here)
REFUSAL_REASONS: dict[str, str] = {
    "bad_request": "a request the endpoint cannot read (the default reason)",
    "bad_query": "a malformed query string, too many fields, or a bad paging parameter",
    "bad_topic": "a missing, malformed or too long topic name",
    "too_many_topics": "more topics on one stream than max_topics_per_connection",
    "bad_pattern": "a subscription's topic pattern that is malformed, too long, too broad, "
    "has too many wildcards, or more patterns than max_stream_patterns",
    "pattern_unsupported": "a pattern subscription where the broker cannot serve one "
    "(Redis, for now)",
    "bad_last_event_id": "a Last-Event-ID that is too long or not valid",
    "bad_body": "a Content-Length that is no number, or a client gone before its body",
    "bad_publish": "a publish refused: malformed JSON or fields, bad id or data, a schema "
    "mismatch, no room for a new topic",
    "bad_content_type": "a publish body that is not application/json (or x-ndjson)",
    "bad_content_encoding": "a Content-Encoding other than identity",
    "body_too_large": "a body or batch over max_body_bytes or max_events_per_batch",
    "body_timeout": "a body not all arrived within body_timeout",
    "method": "a method the endpoint does not serve (405)",
    "not_found": "a path that is no endpoint (404)",
    "cors_origin": "a preflight or request from an origin not in cors_origins",
    "no_credential": "no credential where one is needed (401)",
    "bad_token": "a token that is malformed, wrongly signed or not accepted (401)",
    "expired_token": "a JWT past its exp (401)",
    "query_token": "a token in the URL while allow_query_token is off (401)",
    "forbidden_topic": "a credential without the right to the topic (403)",
    "forbidden_pattern": "a pattern that can reach a private topic the credential may not "
    "subscribe to (403; without a credential it is no_credential, 401)",
    "pattern_too_complex": "a pattern that meets the private topics in a way the containment "
    "check could not settle within its work budget (400; fail closed)",
    "ops_forbidden": "/metrics, /stats or /presence from outside ops_networks, no ops_token set "
    "(403)",
    "ops_no_credential": "/metrics, /stats or /presence from outside ops_networks without "
    "the ops_token (401)",
    "ops_bad_token": "a wrong ops_token on /metrics, /stats or /presence (401)",
    "max_connections": "the worker holds max_connections streams (a stream is told to come "
    "back: a 200 of one sse-fast-disconnect frame)",
    "max_connections_per_ip": "the client address holds max_connections_per_ip streams (told "
    "to come back)",
    "connect_rate": "new streams from one address over connect_rate_per_ip (told to come back)",
    "publish_rate": "publishes of one credential over publish_rate (429)",
    "draining": "the server is shutting down (503; a stream is told to come back)",
    "starting": "the worker is starting (restoring history); only /livez, /healthz, /readyz and "
    "/schema answer yet (503; a stream is told to come back)",
    "broker_unavailable": "the broker (relay or Redis) cannot take a subscription now (told to "
    "come back)",
    "unavailable": "a publish stream ended because the broker became unavailable",
    "expired": "a publish stream ended because its credential expired",
    "storage": "the data directory could not keep a publish (503)",
    "publish_stream_ended": "a publish stream ended by the server without a reason of its own",
}

#: every metric ``/metrics`` may expose, in the order it is exposed: the one place
#: a metric is declared (see the module's docstring)
CATALOGUE: tuple[MetricInfo, ...] = (
    MetricInfo(
        "sse_fast_connections_open",
        "gauge",
        "Open SSE streams.",
        figure=Reported("connections_open", "sum"),
    ),
    MetricInfo(
        "sse_fast_topics", "gauge", "Topics held in memory.", figure=Reported("topics", "max")
    ),
    MetricInfo(
        "sse_fast_pattern_streams",
        "gauge",
        "Open streams that name topic patterns.",
        figure=Reported("pattern_streams", "sum"),
    ),
    MetricInfo(
        "sse_fast_patterns",
        "gauge",
        "Distinct topic patterns of the open streams, per worker, summed.",
        figure=Reported("patterns", "sum"),
    ),
    MetricInfo(
        "sse_fast_pattern_joins_total",
        "counter",
        "Topics created while a pattern stream was open that joined it (one per stream).",
        figure=Reported("pattern_joins_total", "sum"),
    ),
    MetricInfo(
        "sse_fast_pattern_match_seconds_total",
        "counter",
        "Seconds spent finding the pattern streams of new topics.",
        figure=Reported("pattern_match_seconds_total", "sum"),
    ),
    MetricInfo(
        "sse_fast_connections_total",
        "counter",
        "SSE streams accepted.",
        figure=Counted("connections_total"),
    ),
    MetricInfo(
        "sse_fast_published_total",
        "counter",
        "Events published.",
        figure=Counted("published_total"),
    ),
    MetricInfo(
        "sse_fast_publishes_grouped_total",
        "counter",
        "Publish requests stored in one write with others awaited in the same turn of "
        "the worker's event loop (one worker with the data directory; 0 otherwise: with "
        "several workers the relay groups what it receives, uncounted).",
        figure=Counted("publishes_grouped_total"),
    ),
    MetricInfo(
        "sse_fast_delivered_total",
        "counter",
        "Event deliveries written to streams.",
        figure=Counted("delivered_total"),
    ),
    MetricInfo(
        "sse_fast_compression_input_bytes_total",
        "counter",
        "Bytes of event streams handed to compression, by content coding (as many times "
        "as streams were sent them).",
        ("coding",),
        figure=CountedBy("compression_input_bytes_total", sort=True),
    ),
    MetricInfo(
        "sse_fast_compression_output_bytes_total",
        "counter",
        "Compressed bytes written to event streams, by content coding: over the input "
        "bytes, the ratio on the wire.",
        ("coding",),
        figure=CountedBy("compression_output_bytes_total", sort=True),
    ),
    MetricInfo(
        "sse_fast_lag_disconnects_total",
        "counter",
        "Streams closed because they fell further behind than the ring holds.",
        figure=Counted("lag_disconnects_total"),
    ),
    MetricInfo(
        "sse_fast_stall_disconnects_total",
        "counter",
        "Streams closed because one write stayed blocked past catch_up_timeout.",
        figure=Counted("stall_disconnects_total"),
    ),
    MetricInfo(
        "sse_fast_connections_cut_total",
        "counter",
        "Connections reset because a stream the server ended could not deliver its "
        "final write in time (a client that does not read).",
        figure=Counted("cut_total"),
    ),
    MetricInfo(
        "sse_fast_history_breaks_total",
        "counter",
        "Times a worker rejoined its broker without the events in between (its open "
        "streams were sent sse-fast-missed).",
        figure=Counted("history_breaks_total"),
    ),
    MetricInfo(
        "sse_fast_publish_streams_open",
        "gauge",
        "Open POST /publish/stream requests.",
        figure=Counted("publish_streams_open"),
    ),
    MetricInfo(
        "sse_fast_publish_streams_total",
        "counter",
        "POST /publish/stream requests accepted.",
        figure=Counted("publish_streams_total"),
    ),
    MetricInfo(
        "sse_fast_ignored_cookies_total",
        "counter",
        "Auth cookies that failed verification (expired, another key, garbage) on "
        "subscriptions to public topics only: ignored, the stream served.",
        figure=Counted("ignored_cookies_total"),
    ),
    MetricInfo(
        "sse_fast_subscribers",
        "gauge",
        "Subscribers per topic (the busiest topics).",
        ("topic",),
        figure=Busiest("subscribers", 100),
    ),
    MetricInfo(
        "sse_fast_resume_total",
        "counter",
        "Resume attempts by outcome.",
        ("outcome",),
        figure=CountedBy("resume_total"),
    ),
    MetricInfo(
        "sse_fast_refused_total",
        "counter",
        "Requests refused, by reason.",
        ("reason",),
        figure=CountedBy("refused_total", sort=True),
    ),
    MetricInfo(
        "sse_fast_publish_to_write_seconds",
        "histogram",
        "Time from a publish being accepted to its last in-sync subscriber write, "
        "observed by each worker (with several, one observation per publish per worker).",
        figure=Timed("publish_latency"),
    ),
    # the whole server's: what the workers report of themselves
    MetricInfo(
        "sse_fast_workers",
        "gauge",
        "Worker processes configured.",
        figure=OfServer("workers_expected"),
    ),
    MetricInfo(
        "sse_fast_workers_reporting",
        "gauge",
        "Workers whose figures this scrape includes.",
        figure=OfServer("workers_reporting"),
    ),
    MetricInfo(
        "sse_fast_worker_connections_open",
        "gauge",
        "Open SSE streams per worker.",
        ("worker",),
        figure=PerWorker("connections_open"),
    ),
    MetricInfo(
        "sse_fast_worker_history_bytes",
        "gauge",
        "Bytes of history (frames and their overhead) the worker keeps for resume.",
        ("worker",),
        figure=PerWorker("history_bytes", in_stats=True),
    ),
    MetricInfo(
        "sse_fast_worker_history_budget_bytes",
        "gauge",
        "The worker's budget of history bytes (max_history_bytes, or its default).",
        ("worker",),
        figure=PerWorker("history_budget_bytes", in_stats=True),
    ),
    MetricInfo(
        "sse_fast_worker_history_budget_evicted_total",
        "counter",
        "Frames evicted to keep the worker's history within its budget (resumes into "
        "them are told evicted).",
        ("worker",),
        figure=PerWorker("history_budget_evicted", in_stats=True),
    ),
    MetricInfo(
        "sse_fast_worker_broker_up",
        "gauge",
        "Whether the worker can publish (broker reachable).",
        ("worker",),
        figure=PerWorker("broker_up"),
    ),
    MetricInfo(
        "sse_fast_worker_broker_partitions_down",
        "gauge",
        "Partitions of the broker the worker cannot publish to now (on Redis shards or a "
        "Redis Cluster: those of the Redis that are down; else all or none).",
        ("worker",),
        figure=PerWorker("broker_partitions_down"),
    ),
    # one data directory for the server: any worker's look at it will do
    MetricInfo(
        "sse_fast_data_bytes",
        "gauge",
        "Bytes the data directory takes (durable history).",
        when=_PERSISTENCE,
        figure=Reported("data_bytes", "max"),
    ),
    MetricInfo(
        "sse_fast_data_max_bytes",
        "gauge",
        "The data directory's budget (data_max_bytes).",
        when=_PERSISTENCE,
        figure=Reported("data_max_bytes", "first"),
    ),
    # mirror mode: only the reader counts, and a worker that read before keeps its counts
    MetricInfo(
        "sse_fast_upstream_connected",
        "gauge",
        "Whether the upstream stream is connected.",
        when=_MIRROR,
        figure=Reported("upstream_up", "any"),
    ),
    MetricInfo(
        "sse_fast_upstream_events_total",
        "counter",
        "Upstream events republished.",
        when=_MIRROR,
        figure=Counted("upstream_events_total"),
    ),
    MetricInfo(
        "sse_fast_upstream_dropped_total",
        "counter",
        "Upstream events the transform dropped.",
        when=_MIRROR,
        figure=Counted("upstream_dropped_total"),
    ),
    MetricInfo(
        "sse_fast_upstream_errors_total",
        "counter",
        "Upstream events skipped: the transform failed or its result was invalid.",
        when=_MIRROR,
        figure=Counted("upstream_errors_total"),
    ),
    MetricInfo(
        "sse_fast_upstream_missed_total",
        "counter",
        "Times the upstream could not resume us (events lost upstream).",
        when=_MIRROR,
        figure=Counted("upstream_missed_total"),
    ),
    MetricInfo(
        "sse_fast_upstream_reconnects_total",
        "counter",
        "Reconnects to the upstream.",
        when=_MIRROR,
        figure=Counted("upstream_reconnects_total"),
    ),
    # webhooks (sse_fast/webhooks.py)
    MetricInfo(
        "sse_fast_webhook_events_total",
        "counter",
        "Stream connects and disconnects queued for the webhooks (each once).",
        when=_WEBHOOKS,
        figure=Counted("webhook_events_total"),
    ),
    MetricInfo(
        "sse_fast_webhook_delivered_total",
        "counter",
        "Webhook events a receiver took (per URL).",
        when=_WEBHOOKS,
        figure=Counted("webhook_delivered_total"),
    ),
    MetricInfo(
        "sse_fast_webhook_dropped_total",
        "counter",
        "Webhook events dropped: a receiver down with its queue full (per URL).",
        when=_WEBHOOKS,
        figure=Counted("webhook_dropped_total"),
    ),
    MetricInfo(
        "sse_fast_webhook_failures_total",
        "counter",
        "Webhook POSTs that got no 2xx (each is retried).",
        when=_WEBHOOKS,
        figure=Counted("webhook_failures_total"),
    ),
)

_BY_NAME = {info.name: info for info in CATALOGUE}
_HEADERS = {
    info.name: (f"# HELP {info.name} {info.help}", f"# TYPE {info.name} {info.kind}")
    for info in CATALOGUE
}

#: the keys of the per-worker figures ``/stats`` shows too (each worker's, and the
#: fullest worker's as the server's)
STATS_FIGURES: tuple[str, ...] = tuple(
    info.figure.key
    for info in CATALOGUE
    if isinstance(info.figure, PerWorker) and info.figure.in_stats
)


def metric(name: str) -> MetricInfo:
    """The catalogue's entry for ``name`` (``KeyError`` if it has none: every metric
    the server exposes is catalogued)."""
    return _BY_NAME[name]


def header(name: str) -> list[str]:
    """The ``# HELP`` and ``# TYPE`` lines of the metric ``name``, from the catalogue."""
    return list(_HEADERS[name])
