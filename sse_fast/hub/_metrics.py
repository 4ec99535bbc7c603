"""Process-local metrics rendered in the Prometheus text format (no dependency).

Counters are plain ints on one object the hub owns (``Metrics``); the fan-out
path only adds to them. With several workers, ``/metrics`` gathers every
worker's report (``hub/_figures.py``: its ``Metrics.snapshot()`` and its own
figures) through the broker, and ``render`` turns them into the whole server's
text, so one scrape is the whole server.

What is exposed, in which order, with which help text, labels and figure, is the
metrics table's (``_catalogue.py``): ``render`` walks it, and ``Metrics`` reports
and sums the attributes its entries name.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..protocol import Resume
from ._catalogue import CATALOGUE, Counted, CountedBy, MetricInfo, Scrape, Timed, header, worker_of
from ._streams import StreamListener

if TYPE_CHECKING:
    from ._subscription import Subscription

__all__ = ["LATENCY_BUCKETS", "Histogram", "Metrics", "render"]

#: the buckets of the publish-to-write histogram, in seconds
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

    def snapshot(self) -> dict[str, Any]:
        """The counts as plain JSON (a worker's report)."""
        return {"counts": list(self.counts), "count": self.count, "total": self.total}

    def add(self, theirs: dict[str, Any] | None) -> None:
        """Add another worker's ``snapshot()`` (ignored without the same buckets)."""
        if theirs and len(theirs["counts"]) == len(self.counts):
            self.counts = [a + b for a, b in zip(self.counts, theirs["counts"], strict=True)]
            self.count += theirs["count"]
            self.total += theirs["total"]

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


def _attributes(kind: type[Counted | CountedBy | Timed]) -> tuple[str, ...]:
    """The ``Metrics`` attributes the catalogue's figures of ``kind`` read."""
    return tuple(info.figure.attribute for info in CATALOGUE if isinstance(info.figure, kind))


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
        # mirror mode (sse_fast/app/_upstream.py): counted by the worker reading upstream
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
        #: compressed streams' bytes before and after, by coding (``_coding.py``)
        self.compression_input_bytes_total: dict[str, int] = {}
        self.compression_output_bytes_total: dict[str, int] = {}
        self.publish_latency = Histogram()

    def joined(self, subscription: Subscription) -> None:
        """Count a stream that joined, and its resume outcome when it gave an id."""
        if subscription.resume != Resume.NONE:
            self.resume_total[subscription.resume] += 1
        self.connections_total += 1

    def refuse(self, reason: str, count: int = 1) -> None:
        """Count ``count`` requests refused for ``reason`` (``sse_fast_refused_total``)."""
        self.refused_total[reason] = self.refused_total.get(reason, 0) + count

    def compressed(self, coding: str, before: int, after: int) -> None:
        """Count ``before`` bytes compressed into ``after`` with ``coding``."""
        into = self.compression_input_bytes_total
        into[coding] = into.get(coding, 0) + before
        out = self.compression_output_bytes_total
        out[coding] = out.get(coding, 0) + after

    #: the whole numbers the catalogue exposes (``Counted``), summed over workers
    COUNTERS = _attributes(Counted)
    #: the counts by label value (``CountedBy``), summed over workers
    BY_LABEL = _attributes(CountedBy)
    #: the histograms (``Timed``), summed over workers
    HISTOGRAMS = _attributes(Timed)

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain JSON (what a worker reports for a server-wide scrape)."""
        return {
            **{name: getattr(self, name) for name in self.COUNTERS},
            **{name: dict(getattr(self, name)) for name in self.BY_LABEL},
            **{name: getattr(self, name).snapshot() for name in self.HISTOGRAMS},
        }

    @classmethod
    def merged(cls, snapshots: Iterable[dict[str, Any]]) -> Metrics:
        """The sum of several workers' snapshots."""
        out = cls()
        for snapshot in snapshots:
            for name in cls.COUNTERS:
                setattr(out, name, getattr(out, name) + snapshot.get(name, 0))
            for name in cls.BY_LABEL:
                mine = getattr(out, name)
                for key, count in snapshot.get(name, {}).items():
                    mine[key] = mine.get(key, 0) + count
            for name in cls.HISTOGRAMS:
                getattr(out, name).add(snapshot.get(name))
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _lines(info: MetricInfo, scrape: Scrape) -> list[str]:
    """The exposition lines of one metric: its header and samples."""
    figure = info.figure.of(scrape)
    if isinstance(figure, Histogram):
        return figure.render(info.name)
    if not info.labels:
        return [*header(info.name), f"{info.name} {figure}"]
    (label,) = info.labels
    return [
        *header(info.name),
        *(f'{info.name}{{{label}="{_escape(str(key))}"}} {count}' for key, count in figure),
    ]


def render(
    reports: Iterable[dict[str, Any]], workers_expected: int, *, webhooks: bool = False
) -> str:
    """The Prometheus exposition text for the whole server from every worker's
    report (``hub/_figures.py``): each metric of the catalogue its scrape has, in
    the catalogue's order. ``workers_expected``: the workers configured;
    ``webhooks``: whether ``webhook_urls`` is set."""
    ordered = sorted(reports, key=worker_of)
    merged = Metrics.merged(one["metrics"] for one in ordered)
    scrape = Scrape(ordered, merged, workers_expected, webhooks)
    out: list[str] = []
    for info in CATALOGUE:
        if info.present(scrape):
            out += _lines(info, scrape)
    return "\n".join(out) + "\n"
