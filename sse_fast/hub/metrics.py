"""Process-local metrics rendered in the Prometheus text format (no dependency).

Counters are plain ints on one object the hub owns; the fan-out path only adds
to them. With several workers, ``/metrics`` gathers every worker's
``snapshot()`` (through the broker) and renders their sum, so one scrape is
the whole server (``app/operations.py``).

``CATALOGUE`` lists every metric ``/metrics`` may expose, with its type, help text,
labels and when it is present: the exposition takes each metric's ``# HELP`` and
``# TYPE`` lines (``header``) and label names (``metric``) from it, and the docs'
metrics reference is generated from it, so neither can drift from the other.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..protocol import Resume
from .streams import StreamListener

if TYPE_CHECKING:
    from .subscription import Subscription

__all__ = [
    "CATALOGUE",
    "LATENCY_BUCKETS",
    "REFUSAL_REASONS",
    "Histogram",
    "MetricInfo",
    "Metrics",
    "header",
    "metric",
    "render",
]

#: the buckets of ``sse_fast_publish_to_write_seconds`` (publish to write), in seconds
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class Histogram:
    """A cumulative histogram with fixed buckets."""

    __slots__ = ("buckets", "count", "counts", "total")

    def __init__(self, buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        """Count ``value`` (``times`` times: events accepted together)."""
        self.counts[bisect.bisect_left(self.buckets, value)] += times
        self.count += times
        self.total += value * times

    def render(self, name: str) -> list[str]:
        """The exposition lines of the catalogued histogram ``name``: its ``# HELP``
        and ``# TYPE`` lines (``header``), the cumulative buckets, sum and count."""
        lines = header(name)
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.total:.6f}")
        lines.append(f"{name}_count {self.count}")
        return lines


class Metrics(StreamListener):
    """All counters of one worker (a listener of the hub's ``Streams``: it counts
    the streams that join, and their resume outcomes)."""

    def __init__(self) -> None:
        self.connections_total = 0
        self.published_total = 0
        self.publishes_grouped_total = 0  # publishes stored with others of their turn
        self.delivered_total = 0
        self.lag_disconnects_total = 0
        self.stall_disconnects_total = 0
        self.cut_total = 0
        self.history_breaks_total = 0
        self.publish_streams_total = 0
        self.publish_streams_open = 0  # a gauge; sums across workers like the counters
        self.ignored_cookies_total = 0  # auth cookies that failed, on public topics
        # mirror mode (sse_fast/app/upstream.py): counted by the worker reading upstream
        self.upstream_events_total = 0
        self.upstream_dropped_total = 0
        self.upstream_errors_total = 0
        self.upstream_missed_total = 0
        self.upstream_reconnects_total = 0
        # webhooks (sse_fast/webhooks.py)
        self.webhook_events_total = 0
        self.webhook_delivered_total = 0
        self.webhook_dropped_total = 0
        self.webhook_failures_total = 0
        self.resume_total = {"resumed": 0, "unknown": 0, "evicted": 0}
        self.refused_total: dict[str, int] = {}
        self.publish_latency = Histogram()

    def joined(self, subscription: Subscription) -> None:
        """Count a stream that joined, and its resume outcome when it gave an id."""
        if subscription.resume != Resume.NONE:
            self.resume_total[subscription.resume] += 1
        self.connections_total += 1

    def refuse(self, reason: str, count: int = 1) -> None:
        """Count ``count`` requests refused for ``reason`` (``sse_fast_refused_total``)."""
        self.refused_total[reason] = self.refused_total.get(reason, 0) + count

    COUNTERS = (
        "connections_total",
        "published_total",
        "publishes_grouped_total",
        "delivered_total",
        "lag_disconnects_total",
        "stall_disconnects_total",
        "cut_total",
        "history_breaks_total",
        "publish_streams_total",
        "publish_streams_open",
        "ignored_cookies_total",
        "upstream_events_total",
        "upstream_dropped_total",
        "upstream_errors_total",
        "upstream_missed_total",
        "upstream_reconnects_total",
        "webhook_events_total",
        "webhook_delivered_total",
        "webhook_dropped_total",
        "webhook_failures_total",
    )

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain JSON (what a worker reports for a server-wide scrape)."""
        latency = self.publish_latency
        return {
            **{name: getattr(self, name) for name in self.COUNTERS},
            "resume_total": dict(self.resume_total),
            "refused_total": dict(self.refused_total),
            "publish_latency": {
                "counts": list(latency.counts),
                "count": latency.count,
                "total": latency.total,
            },
        }

    @classmethod
    def merged(cls, snapshots: Iterable[dict[str, Any]]) -> Metrics:
        """The sum of several workers' snapshots."""
        out = cls()
        latency = out.publish_latency
        for snapshot in snapshots:
            for name in cls.COUNTERS:
                setattr(out, name, getattr(out, name) + snapshot.get(name, 0))
            for outcome, count in snapshot.get("resume_total", {}).items():
                out.resume_total[outcome] = out.resume_total.get(outcome, 0) + count
            for reason, count in snapshot.get("refused_total", {}).items():
                out.refused_total[reason] = out.refused_total.get(reason, 0) + count
            theirs = snapshot.get("publish_latency")
            if theirs and len(theirs["counts"]) == len(latency.counts):
                latency.counts = [
                    a + b for a, b in zip(latency.counts, theirs["counts"], strict=True)
                ]
                latency.count += theirs["count"]
                latency.total += theirs["total"]
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass(frozen=True)
class MetricInfo:
    """One metric of ``/metrics``: its name, Prometheus type, help text, labels, and
    when it is present (``always``, or the setting that brings it)."""

    #: the metric's name as exposed (a counter's with its ``_total``)
    name: str
    #: its Prometheus type: ``counter``, ``gauge`` or ``histogram``
    kind: str
    #: its ``# HELP`` text (one line)
    help: str
    #: the names of its labels (a histogram's ``le`` is implied)
    labels: tuple[str, ...] = ()
    #: when it is exposed: ``always``, or a short phrase naming what brings it
    when: str = "always"


_PERSISTENCE = "with persistence on (no Redis)"
_MIRROR = "in mirror mode"
_WEBHOOKS = "with webhook_urls"

#: the values of ``sse_fast_refused_total``'s ``reason`` label, and what each means
#: (tests/hub/test_metrics_catalogue.py finds every reason the code refuses with here)
REFUSAL_REASONS: dict[str, str] = {
    "bad_request": "a request the endpoint cannot read (the default reason)",
    "bad_query": "a malformed query string, too many fields, or a bad paging parameter",
    "bad_topic": "a missing, malformed or too long topic name",
    "too_many_topics": "more topics on one stream than max_topics_per_connection",
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
    "ops_forbidden": "/metrics, /stats or /presence from outside ops_networks, no ops_token set "
    "(403)",
    "ops_no_credential": "/metrics, /stats or /presence from outside ops_networks without "
    "the ops_token (401)",
    "ops_bad_token": "a wrong ops_token on /metrics, /stats or /presence (401)",
    "max_connections": "the worker holds max_connections streams (503)",
    "max_connections_per_ip": "the client address holds max_connections_per_ip streams (429)",
    "connect_rate": "new streams from one address over connect_rate_per_ip (429)",
    "publish_rate": "publishes of one credential over publish_rate (429)",
    "draining": "the server is shutting down (503)",
    "starting": "the worker is starting (restoring history); only /livez, /healthz, /readyz and "
    "/schema answer yet (503)",
    "broker_unavailable": "the broker (relay or Redis) cannot take a subscription now (503)",
    "unavailable": "a publish stream ended because the broker became unavailable",
    "expired": "a publish stream ended because its credential expired",
    "storage": "the data directory could not keep a publish (503)",
    "publish_stream_ended": "a publish stream ended by the server without a reason of its own",
}

#: every metric ``/metrics`` may expose, in the order it is exposed: the one source
#: of their names, types, help texts and labels (the exposition's ``# HELP`` and
#: ``# TYPE`` lines are read from it, and the docs' metrics reference is generated
#: from it)
CATALOGUE: tuple[MetricInfo, ...] = (
    MetricInfo("sse_fast_connections_open", "gauge", "Open SSE streams."),
    MetricInfo("sse_fast_topics", "gauge", "Topics held in memory."),
    MetricInfo("sse_fast_connections_total", "counter", "SSE streams accepted."),
    MetricInfo("sse_fast_published_total", "counter", "Events published."),
    MetricInfo(
        "sse_fast_publishes_grouped_total",
        "counter",
        "Publish requests stored in one write with others awaited in the same turn of "
        "the worker's event loop (one worker with the data directory; 0 otherwise: with "
        "several workers the relay groups what it receives, uncounted).",
    ),
    MetricInfo("sse_fast_delivered_total", "counter", "Event deliveries written to streams."),
    MetricInfo(
        "sse_fast_lag_disconnects_total",
        "counter",
        "Streams closed because they fell further behind than the ring holds.",
    ),
    MetricInfo(
        "sse_fast_stall_disconnects_total",
        "counter",
        "Streams closed because one write stayed blocked past catch_up_timeout.",
    ),
    MetricInfo(
        "sse_fast_connections_cut_total",
        "counter",
        "Connections reset because a stream the server ended could not deliver its "
        "final write in time (a client that does not read).",
    ),
    MetricInfo(
        "sse_fast_history_breaks_total",
        "counter",
        "Times a worker rejoined its broker without the events in between (its open "
        "streams were sent sse-fast-missed).",
    ),
    MetricInfo("sse_fast_publish_streams_open", "gauge", "Open POST /publish/stream requests."),
    MetricInfo(
        "sse_fast_publish_streams_total", "counter", "POST /publish/stream requests accepted."
    ),
    MetricInfo(
        "sse_fast_ignored_cookies_total",
        "counter",
        "Auth cookies that failed verification (expired, another key, garbage) on "
        "subscriptions to public topics only: ignored, the stream served.",
    ),
    MetricInfo(
        "sse_fast_subscribers",
        "gauge",
        "Subscribers per topic (the busiest topics).",
        ("topic",),
    ),
    MetricInfo("sse_fast_resume_total", "counter", "Resume attempts by outcome.", ("outcome",)),
    MetricInfo("sse_fast_refused_total", "counter", "Requests refused, by reason.", ("reason",)),
    MetricInfo(
        "sse_fast_publish_to_write_seconds",
        "histogram",
        "Time from a publish being accepted to its last in-sync subscriber write, "
        "observed by each worker (with several, one observation per publish per worker).",
    ),
    # the whole server's (app/operations.py)
    MetricInfo("sse_fast_workers", "gauge", "Worker processes configured."),
    MetricInfo(
        "sse_fast_workers_reporting", "gauge", "Workers whose figures this scrape includes."
    ),
    MetricInfo(
        "sse_fast_worker_connections_open", "gauge", "Open SSE streams per worker.", ("worker",)
    ),
    MetricInfo(
        "sse_fast_worker_history_bytes",
        "gauge",
        "Bytes of history (frames and their overhead) the worker keeps for resume.",
        ("worker",),
    ),
    MetricInfo(
        "sse_fast_worker_history_budget_bytes",
        "gauge",
        "The worker's budget of history bytes (max_history_bytes, or its default).",
        ("worker",),
    ),
    MetricInfo(
        "sse_fast_worker_history_budget_evicted_total",
        "counter",
        "Frames evicted to keep the worker's history within its budget (resumes into "
        "them are told evicted).",
        ("worker",),
    ),
    MetricInfo(
        "sse_fast_worker_broker_up",
        "gauge",
        "Whether the worker can publish (broker reachable).",
        ("worker",),
    ),
    MetricInfo(
        "sse_fast_data_bytes",
        "gauge",
        "Bytes the data directory takes (durable history).",
        when=_PERSISTENCE,
    ),
    MetricInfo(
        "sse_fast_data_max_bytes",
        "gauge",
        "The data directory's budget (data_max_bytes).",
        when=_PERSISTENCE,
    ),
    MetricInfo(
        "sse_fast_upstream_connected",
        "gauge",
        "Whether the upstream stream is connected.",
        when=_MIRROR,
    ),
    MetricInfo(
        "sse_fast_upstream_events_total",
        "counter",
        "Upstream events republished.",
        when=_MIRROR,
    ),
    MetricInfo(
        "sse_fast_upstream_dropped_total",
        "counter",
        "Upstream events the transform dropped.",
        when=_MIRROR,
    ),
    MetricInfo(
        "sse_fast_upstream_errors_total",
        "counter",
        "Upstream events skipped: the transform failed or its result was invalid.",
        when=_MIRROR,
    ),
    MetricInfo(
        "sse_fast_upstream_missed_total",
        "counter",
        "Times the upstream could not resume us (events lost upstream).",
        when=_MIRROR,
    ),
    MetricInfo(
        "sse_fast_upstream_reconnects_total",
        "counter",
        "Reconnects to the upstream.",
        when=_MIRROR,
    ),
    MetricInfo(
        "sse_fast_webhook_events_total",
        "counter",
        "Stream connects and disconnects queued for the webhooks (each once).",
        when=_WEBHOOKS,
    ),
    MetricInfo(
        "sse_fast_webhook_delivered_total",
        "counter",
        "Webhook events a receiver took (per URL).",
        when=_WEBHOOKS,
    ),
    MetricInfo(
        "sse_fast_webhook_dropped_total",
        "counter",
        "Webhook events dropped: a receiver down with its queue full (per URL).",
        when=_WEBHOOKS,
    ),
    MetricInfo(
        "sse_fast_webhook_failures_total",
        "counter",
        "Webhook POSTs that got no 2xx (each is retried).",
        when=_WEBHOOKS,
    ),
)

_BY_NAME = {info.name: info for info in CATALOGUE}
_HEADERS = {
    info.name: (f"# HELP {info.name} {info.help}", f"# TYPE {info.name} {info.kind}")
    for info in CATALOGUE
}


def metric(name: str) -> MetricInfo:
    """The catalogue's entry for ``name`` (``KeyError`` if it has none: every metric
    the server exposes is catalogued)."""
    return _BY_NAME[name]


def header(name: str) -> list[str]:
    """The ``# HELP`` and ``# TYPE`` lines of the metric ``name``, from the catalogue."""
    return list(_HEADERS[name])


#: the one-value metrics of ``Metrics``: the metric's name and the attribute it reads
SINGLE = (
    ("sse_fast_connections_total", "connections_total"),
    ("sse_fast_published_total", "published_total"),
    ("sse_fast_publishes_grouped_total", "publishes_grouped_total"),
    ("sse_fast_delivered_total", "delivered_total"),
    ("sse_fast_lag_disconnects_total", "lag_disconnects_total"),
    ("sse_fast_stall_disconnects_total", "stall_disconnects_total"),
    ("sse_fast_connections_cut_total", "cut_total"),
    ("sse_fast_history_breaks_total", "history_breaks_total"),
    ("sse_fast_publish_streams_open", "publish_streams_open"),
    ("sse_fast_publish_streams_total", "publish_streams_total"),
    ("sse_fast_ignored_cookies_total", "ignored_cookies_total"),
)


def _one(name: str, value: float) -> list[str]:
    help_line, type_line = _HEADERS[name]
    return [help_line, type_line, f"{name} {value}"]


def _labelled(name: str, values: Iterable[tuple[Any, Any]]) -> list[str]:
    """A metric with one label (the catalogue's), one sample per ``(value, count)``."""
    (label,) = _BY_NAME[name].labels
    return [
        *_HEADERS[name],
        *(f'{name}{{{label}="{_escape(str(key))}"}} {count}' for key, count in values),
    ]


def render(
    metrics: Metrics,
    *,
    connections_open: int,
    topics: int,
    subscribers_by_topic: list[tuple[str, int]],
    extra: Iterable[str] = (),
) -> str:
    """The Prometheus exposition text for one worker."""
    out = _one("sse_fast_connections_open", connections_open)
    out += _one("sse_fast_topics", topics)
    for name, attribute in SINGLE:
        out += _one(name, getattr(metrics, attribute))
    out += _labelled("sse_fast_subscribers", subscribers_by_topic)
    out += _labelled("sse_fast_resume_total", metrics.resume_total.items())
    out += _labelled("sse_fast_refused_total", sorted(metrics.refused_total.items()))
    out += metrics.publish_latency.render("sse_fast_publish_to_write_seconds")
    out.extend(extra)
    return "\n".join(out) + "\n"
