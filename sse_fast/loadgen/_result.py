"""What a load run measured: ``Result``, the figures the client processes report
merged into it, and ``Result.problems()``, which says what went wrong and what to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..protocol import Reason
from ._stats import LatencyHistogram

__all__ = [
    "Result",
    "merged",
    "ms",
    "optional_results",
    "reconnect_on_close_results",
    "timing_results",
]


#: a client loop late by this much (ms) is worth a word (``Result.warnings``)
LAG_WARNING_MS = 1000.0
#: connect failures a server's connection limits give: statuses, or sse_fast's answers
#: telling a stream to come back later (what a browser retries)
LIMIT_REFUSALS = frozenset(
    {
        "HTTP 429",
        "HTTP 503",
        *(
            f"told to come back ({reason})"
            for reason in (
                Reason.MAX_CONNECTIONS,
                Reason.MAX_CONNECTIONS_PER_IP,
                Reason.CONNECT_RATE,
            )
        ),
    }
)


@dataclass
class Result:
    """What a load run measured: connections, publishes, deliveries, latencies (ms), the server's
    memory and CPU, and the figures of the optional features (None when not used)."""

    target: str
    connections: int
    connected: int
    connect_errors: int
    connect_seconds: float
    topics: int
    publish_rate: float
    published: int
    publish_errors: int
    duration: float
    expected: int
    delivered: int
    delivered_per_second: float
    lost: int
    duplicates: int
    closed_by_server: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    server_rss_idle_kb: int | None = None
    server_rss_base_kb: int | None = None
    rss_per_connection_kb: float | None = None
    client_processes: int = 1
    publishers: int = 1
    payload_bytes: int = 0
    server_cpu_seconds: float | None = None
    server_cores_used: float | None = None
    delivered_per_server_core_second: float | None = None
    http_version: str = "1.1"
    publisher: str = "http"  # "http", "command", or "none" (the server publishes by itself)
    unstamped: int = 0  # events of a counted name without a time or sequence where looked
    # per connection, from its request written (in a storm: from the storm's start) to
    # its response head, and to its first event that counts (None: none measured)
    connect_p50_ms: float | None = None
    connect_p99_ms: float | None = None
    first_event_clients: int | None = None  # clients that got a first event
    first_event_p50_ms: float | None = None
    first_event_p99_ms: float | None = None
    first_event_max_ms: float | None = None  # in a storm: all connected and live (if all got one)
    # optional features of run_load (None when not used)
    storm_connect_seconds: float | None = None  # slowest client process: all connected
    reconnected_on_close: int | None = None  # streams the server ended, reconnected
    reconnected_on_close_last: float | None = None  # wall time of the last of them (0: none)
    fault_began: float | None = None  # wall time the run's ``fault`` was called
    come_backs: int | None = None  # reconnects told to come back later (a 200 ended at once)
    # the longest a client process's loop was late in the measured window: the times it
    # took (latencies, a stream back) are late by up to as much
    client_lag_max_ms: float | None = None
    slow_connections: int | None = None
    slow_delivered: int | None = None
    slow_p50_ms: float | None = None
    slow_p99_ms: float | None = None
    slow_max_ms: float | None = None
    reconnect_after: float | None = None  # seconds into the measured window
    reconnected: int | None = None
    reconnect_errors: int | None = None
    reconnect_seconds: float | None = None  # slowest client process
    reconnected_with_last_event_id: int | None = None
    connected_at_end: int | None = None
    connect_failures: dict[str, int] = field(default_factory=dict)
    #: with ``reconnect_on_close``: why connects failed over the whole run (the first
    #: connects' and the reconnects')
    failures_in_run: dict[str, int] = field(default_factory=dict)
    publish_failures: dict[str, int] = field(default_factory=dict)
    #: publishes in the window whose answer was lost: not in ``published`` nor
    #: ``expected``; a gap at one is not counted as lost (it was never acknowledged)
    publish_unanswered: int = 0
    #: events of those unanswered publishes delivered all the same (in ``delivered``)
    delivered_unanswered: int = 0
    #: expected events neither delivered nor counted lost: no later event showed their
    #: gap (streams open but silent, or the server gone). ``delivered`` -
    #: ``delivered_unanswered`` + ``lost`` + this = ``expected``
    not_delivered_not_lost: int = 0
    #: events stamped before this run began (a server replaying what it kept, such as
    #: Nchan's buffer, to a new subscriber): counted apart, in no other figure
    before_run: int = 0
    #: the streams by their response's Content-Encoding ("identity": none)
    content_codings: dict[str, int] = field(default_factory=dict)
    #: while measuring, per event that counts: response body bytes as they came
    #: (compressed when the streams are) and the same decoded (frames, ids, heartbeats
    #: included); None when no event was read
    wire_bytes_per_event: float | None = None
    decoded_bytes_per_event: float | None = None
    #: with ``read_every`` > 1: the connections that read their events (a sample); the
    #: deliveries, expected, lost and latencies are theirs alone, and the others'
    #: body bytes per event (as many events as a reader read each) are
    #: ``drained_bytes_per_event``, about ``wire_bytes_per_event`` when they got the
    #: same streams. None when every connection reads
    reading_connections: int | None = None
    drained_bytes_per_event: float | None = None

    def add_up(self) -> None:
        """Fill ``not_delivered_not_lost``: what is left of ``expected`` once the delivered
        ones that were expected and the lost ones are taken away."""
        if self.publisher == "none":
            self.not_delivered_not_lost = 0
            return
        expected_delivered = self.delivered - self.delivered_unanswered
        self.not_delivered_not_lost = max(0, self.expected - expected_delivered - self.lost)

    def problems(self) -> list[str]:
        """What went wrong in this run, each with its likely cause and fix; empty
        when every connection was made, every publish accepted and every event
        delivered once."""
        out = []
        if self.connect_errors:
            causes = ", ".join(f"{n} x {k}" for k, n in sorted(self.connect_failures.items()))
            line = f"{self.connect_errors} of {self.connections} connections failed ({causes})"
            if any(k in LIMIT_REFUSALS for k in self.connect_failures):
                line += (
                    ": the server's connection limits refused them (sse-fast serve allows "
                    "1,000 streams and 100 new ones per second per client address by default); "
                    "start it with SSE_FAST_MAX_CONNECTIONS_PER_IP=0 "
                    "SSE_FAST_CONNECT_RATE_PER_IP=0 (or --max-connections-per-ip 0 "
                    "--connect-rate-per-ip 0) for a load test"
                )
            elif "refused" in self.connect_failures:
                line += ": is the server running on that port?"
            out.append(line)
        if self.publish_errors:
            causes = "; ".join(f"{n} x {k}" for k, n in sorted(self.publish_failures.items()))
            line = f"{self.publish_errors} publish(es) failed ({causes})"
            if any(k.startswith("HTTP 401") for k in self.publish_failures):
                line += (
                    ": publishing needs the server's token: pass --token TOKEN "
                    "(or set SSE_FAST_PUBLISH_TOKEN); `sse-fast serve` prints the token it "
                    "generated when none was configured"
                )
            elif any(k.startswith("HTTP 429") for k in self.publish_failures):
                line += ": the server's publish rate limit (--publish-rate) refused them"
            if self.publish_unanswered:
                line += (
                    f"; {self.publish_unanswered} got no answer (the server may have taken "
                    "them): not expected, and not counted lost where missing"
                )
            out.append(line)
        if self.lost or self.duplicates:
            out.append(f"{self.lost} event(s) lost and {self.duplicates} duplicated")
        if self.delivered - self.delivered_unanswered < self.expected:
            line = f"delivered {self.delivered} of {self.expected} expected events"
            if self.delivered_unanswered:
                line += (
                    f" ({self.delivered_unanswered} of them from publishes whose answer was "
                    "lost, not expected)"
                )
            if self.not_delivered_not_lost:
                line += (
                    f"; {self.not_delivered_not_lost} neither delivered nor lost: no later "
                    "event showed them missing (streams open but silent, or the server gone)"
                )
            out.append(line)
        if self.connected and not self.published and self.publisher != "none":
            out.append("nothing was published in the measured window")
        if self.connected and self.publisher == "none" and not self.delivered:
            out.append(
                "no event counted in the measured window: does the server publish by "
                "itself (--no-publish)? Check --event (the event names that count)"
            )
        if self.unstamped and (self.delivered < self.expected or not self.delivered):
            out.append(
                f"{self.unstamped} event(s) had no publish time or sequence number where "
                "they were looked for: point --time-field/--seq-field (dotted paths into "
                "the event's JSON data, e.g. body.t) at them, or name the events that "
                "count with --event"
            )
        return out

    def warnings(self) -> list[str]:
        """What makes the figures less sure without failing the run: events the server sent
        from before this run (counted apart), the client processes starved of CPU (their
        loops late by ``LAG_WARNING_MS`` or more)."""
        out = []
        if self.before_run:
            out.append(
                f"{self.before_run} event(s) stamped before this run began were counted "
                "apart (before-run): the server replayed what it kept to new subscribers "
                "(Nchan: set nchan_subscriber_first_message newest)"
            )
        if self.client_lag_max_ms is not None and self.client_lag_max_ms >= LAG_WARNING_MS:
            out.append(
                f"the load generator's client processes ran up to "
                f"{self.client_lag_max_ms / 1000:.1f} s late (starved of CPU): the times "
                "they took (latencies, connects, first events, streams back) are late by up "
                "to as much. Give them cores the server does not use, or fewer connections"
            )
        return out

    def line(self) -> str:
        """A one-line summary of the run."""
        rss = "-"
        if self.server_rss_idle_kb:
            rss = f"{self.server_rss_idle_kb / 1024:.1f}MB"
            if self.rss_per_connection_kb:
                rss += f" ({self.rss_per_connection_kb:.1f} KB/conn)"
        per_core = (
            f" server={self.server_cores_used:.2f} cores "
            f"({self.delivered_per_server_core_second:,.0f}/core-s)"
            if self.delivered_per_server_core_second
            else ""
        )
        if self.publisher == "none":
            published = f"server-published x {self.topics} topic(s), nothing expected: "
            delivered = f"delivered={self.delivered}"
        else:
            published = (
                f"rate={self.publish_rate:g}/s x {self.topics} topic(s) published={self.published} "
            )
            delivered = f"delivered={self.delivered}/{self.expected}"
        counted = f"lost={self.lost}"
        if self.publisher != "none":  # delivered - of-unanswered + lost + this = expected
            counted += (
                f" not-delivered-not-lost={self.not_delivered_not_lost}"
                f" may-have-been-published={self.publish_unanswered}"
                f" (delivered {self.delivered_unanswered})"
            )
        extra = f" unstamped={self.unstamped}" if self.unstamped else ""
        if self.reading_connections is not None:
            extra += f" read-by={self.reading_connections}"
            if self.drained_bytes_per_event is not None:
                extra += f" (others {self.drained_bytes_per_event:,.0f}B/ev)"
        if self.before_run:
            extra += f" before-run={self.before_run}"
        if self.reconnected_on_close is not None:
            extra += f" reconnects={self.reconnected_on_close}"
        compressed = {k: n for k, n in self.content_codings.items() if k != "identity"}
        if compressed and self.wire_bytes_per_event is not None:
            extra += (
                f" wire={self.wire_bytes_per_event:,.0f}B/ev ({'+'.join(sorted(compressed))}; "
                f"decoded {self.decoded_bytes_per_event:,.0f}B/ev)"
            )
        return (
            f"{self.target:>14} conns={self.connected}/{self.connections} "
            f"(err {self.connect_errors}, {self.connect_seconds:.1f}s) "
            f"connect={_ms(self.connect_p50_ms)}/{_ms(self.connect_p99_ms)} "
            f"first-event={_ms(self.first_event_p50_ms)}/{_ms(self.first_event_p99_ms)} "
            f"{published}{delivered} "
            f"({self.delivered_per_second:,.0f}/s) {counted} dup={self.duplicates}{extra} "
            f"p50={_ms(self.p50_ms)} p99={_ms(self.p99_ms)} p999={_ms(self.p999_ms)} "
            f"max={_ms(self.max_ms if self.p50_ms == self.p50_ms else None)} rss={rss}{per_core}"
        )


def _ms(value: float | None) -> str:
    """``12.3ms``, or ``-`` when nothing was measured (None, NaN)."""
    return "-" if value is None or value != value else f"{value:.1f}ms"


def merged(finals: list[dict[str, Any]], key: str) -> LatencyHistogram:
    """The histograms under ``key`` of the client processes' final reports, merged into one."""
    histogram = LatencyHistogram()
    for final in finals:
        if final.get(key):
            histogram.merge(final[key])
    return histogram


def ms(seconds: float) -> float:
    """``seconds`` in milliseconds, rounded to two decimals."""
    return round(seconds * 1e3, 2)


def timing_results(result: Result, finals: list[dict[str, Any]]) -> None:
    """Fill the connect and first-event figures (p50/p99 of every connection's)."""
    connect = merged(finals, "connect_time")
    first = merged(finals, "first_event")
    if connect.total:
        result.connect_p50_ms = ms(connect.percentile(0.5))
        result.connect_p99_ms = ms(connect.percentile(0.99))
    result.first_event_clients = first.total
    if first.total:
        result.first_event_p50_ms = ms(first.percentile(0.5))
        result.first_event_p99_ms = ms(first.percentile(0.99))
        result.first_event_max_ms = ms(first.maximum)
    lags = [f["loop_lag_max"] for f in finals if "loop_lag_max" in f]
    if lags:
        result.client_lag_max_ms = ms(max(lags))
    events = sum(f.get("events_read", 0) for f in finals)
    if events:
        result.wire_bytes_per_event = round(sum(f.get("wire_bytes", 0) for f in finals) / events, 1)
        result.decoded_bytes_per_event = round(
            sum(f.get("decoded_bytes", 0) for f in finals) / events, 1
        )
    for final in finals:
        for coding, count in final.get("codings", {}).items():
            result.content_codings[coding] = result.content_codings.get(coding, 0) + count


def optional_results(
    result: Result,
    reports: list[dict[str, Any]],
    finals: list[dict[str, Any]],
    storm: bool,
    slow_every: int,
    reconnect_after: float | None,
) -> None:
    """Fill the Result fields of run_load's optional features."""
    if storm:
        result.storm_connect_seconds = round(max(r.get("seconds", 0.0) for r in reports), 2)
    if slow_every:
        slow = merged(finals, "slow_histogram")
        result.slow_connections = sum(f.get("slow_connections", 0) for f in finals)
        result.slow_delivered = sum(f.get("slow_received", 0) for f in finals)
        result.slow_p50_ms = ms(slow.percentile(0.5))
        result.slow_p99_ms = ms(slow.percentile(0.99))
        result.slow_max_ms = ms(slow.maximum)
    if reconnect_after is not None:
        result.reconnect_after = reconnect_after
        result.reconnected = sum(f.get("reconnects", 0) for f in finals)
        result.reconnect_errors = sum(f.get("reconnect_errors", 0) for f in finals)
        result.reconnect_seconds = round(max(f.get("reconnect_seconds", 0.0) for f in finals), 2)
        result.reconnected_with_last_event_id = sum(f.get("resumed_with_id", 0) for f in finals)
    if storm or slow_every or reconnect_after is not None:
        result.connected_at_end = sum(f.get("connected_now", 0) for f in finals)


def reconnect_on_close_results(
    result: Result, finals: list[dict[str, Any]], reconnect_errors: bool
) -> None:
    """Fill the figures of ``reconnect_on_close``: the streams back, the come-backs, the
    failures over the whole run, and (``reconnect_errors``: no ``reconnect_after``,
    which counts its own) the reconnects that failed."""
    result.reconnected_on_close = sum(f.get("reconnects_on_close", 0) for f in finals)
    result.come_backs = sum(f.get("come_backs", 0) for f in finals)
    result.connected_at_end = sum(f.get("live_at_end", 0) for f in finals)
    result.reconnected_on_close_last = max(
        (f.get("last_reconnect_on_close", 0.0) for f in finals), default=0.0
    )
    for final in finals:
        for key, count in final.get("failures", {}).items():
            result.failures_in_run[key] = result.failures_in_run.get(key, 0) + count
    if reconnect_errors:
        result.reconnect_errors = sum(f.get("reconnect_errors", 0) for f in finals)
