"""The dependency-free Prometheus renderer, read back by prometheus_client's own
parser: every family, type, sample, label and value as written; on a real server
too."""

from __future__ import annotations

import asyncio
import math

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sse_fast.hub._metrics import Metrics, render
from sse_fast.testing import HOST, ServerProcess, collect


def parse(text: str) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    return {
        family.name: (family.type, [(s.name, s.labels, s.value) for s in family.samples])
        for family in text_string_to_metric_families(text)
    }


def test_every_family_reads_back_as_written() -> None:
    metrics = Metrics()
    metrics.connections_total = 12
    metrics.published_total = 7
    metrics.delivered_total = 70
    metrics.lag_disconnects_total = 2
    metrics.stall_disconnects_total = 1
    metrics.cut_total = 3
    metrics.resume_total["resumed"] = 4
    metrics.refuse("publish_rate")
    metrics.refuse("publish_rate")
    metrics.refuse('odd "reason"\\with\nlines')  # label values that need escaping
    for seconds in (0.0001, 0.003, 0.02, 0.02, 0.7, 99.0):
        metrics.publish_latency.observe(seconds)
    # legal topic names include characters a label value must carry as they are
    topics = [("orders/42", 5), ("a:b@c!$&'()+,;=%-~.", 2)]
    report = {
        "metrics": metrics.snapshot(),
        "connections_open": 9,
        "topics": 30,
        "subscribers": topics,
        "broker_up": True,
    }
    families = parse(render([report], workers_expected=1))
    assert families["sse_fast_connections_open"] == (
        "gauge",
        [("sse_fast_connections_open", {}, 9.0)],
    )
    assert families["sse_fast_topics"][1] == [("sse_fast_topics", {}, 30.0)]
    for name, value in (
        ("sse_fast_connections", 12),
        ("sse_fast_published", 7),
        ("sse_fast_delivered", 70),
        ("sse_fast_lag_disconnects", 2),
        ("sse_fast_stall_disconnects", 1),
        ("sse_fast_connections_cut", 3),
    ):
        assert families[name] == ("counter", [(f"{name}_total", {}, float(value))]), name
    assert families["sse_fast_subscribers"] == (
        "gauge",
        [("sse_fast_subscribers", {"topic": t}, float(n)) for t, n in topics],
    )
    resume = {s[1]["outcome"]: s[2] for s in families["sse_fast_resume"][1]}
    assert resume == {"resumed": 4.0, "unknown": 0.0, "evicted": 0.0}
    refused = {s[1]["reason"]: s[2] for s in families["sse_fast_refused"][1]}
    assert refused == {"publish_rate": 2.0, 'odd "reason"\\with\nlines': 1.0}

    kind, samples = families["sse_fast_publish_to_write_seconds"]
    assert kind == "histogram"
    buckets = [(s[1]["le"], s[2]) for s in samples if s[0].endswith("_bucket")]
    bounds = [float(le) for le, _ in buckets]
    counts = [count for _, count in buckets]
    assert bounds == sorted(bounds) and math.isinf(bounds[-1])
    assert counts == sorted(counts), "buckets are cumulative"
    assert counts[-1] == 6.0
    for bound, count in zip(bounds, counts, strict=True):
        expected = sum(1 for v in (0.0001, 0.003, 0.02, 0.02, 0.7, 99.0) if v <= bound)
        assert count == expected, bound
    values = {s[0]: s[2] for s in samples}
    assert values["sse_fast_publish_to_write_seconds_count"] == 6.0
    assert math.isclose(values["sse_fast_publish_to_write_seconds_sum"], 99.7431, rel_tol=1e-6)


@pytest.mark.processes("a real server's /metrics, all workers summed")
def test_a_real_servers_metrics_parse_and_count() -> None:
    async def main(server: ServerProcess) -> None:
        client = server.client("m")
        await client.connect()
        for n in range(3):
            code, _, _ = await server.publish(orjson.dumps({"topic": "m", "data": n}))
            assert code == 200
        assert [e.data for e in await collect(client, 3)] == ["0", "1", "2"]
        code, headers, body = await server.get("/metrics")
        assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        families = parse(body.decode())
        assert families["sse_fast_connections_open"][1][0][2] == 1.0
        assert families["sse_fast_published"][1][0][2] == 3.0
        assert families["sse_fast_delivered"][1][0][2] == 3.0
        assert ("sse_fast_subscribers", {"topic": "m"}, 1.0) in families["sse_fast_subscribers"][1]
        client.close()

    with ServerProcess() as server:
        assert server.port and HOST
        asyncio.run(main(server))


def test_several_workers_render_as_one_server() -> None:
    """Counters and histograms are summed, subscribers summed per topic, and the
    per-worker gauges carry a worker label; prometheus_client reads it back."""
    figures = []
    for worker, (published, latency) in enumerate([(3, 0.0002), (4, 0.3)]):
        metrics = Metrics()
        metrics.published_total = published
        metrics.refuse("publish_rate")
        metrics.resume_total["evicted"] = worker
        metrics.publish_latency.observe(latency)
        figures.append(
            orjson.loads(
                orjson.dumps(  # as it travels through the relay
                    {
                        "metrics": metrics.snapshot(),
                        "connections_open": 5 + worker,
                        "topics": 2,
                        "subscribers": [["a", 5], ["b", worker]],
                        "broker_up": worker == 0,
                        "worker": worker,
                    }
                )
            )
        )
    families = parse(render(figures, workers_expected=3))
    assert families["sse_fast_published"][1] == [("sse_fast_published_total", {}, 7.0)]
    assert families["sse_fast_connections_open"][1][0][2] == 11
    assert ("sse_fast_refused_total", {"reason": "publish_rate"}, 2.0) in families[
        "sse_fast_refused"
    ][1]
    assert ("sse_fast_resume_total", {"outcome": "evicted"}, 1.0) in families["sse_fast_resume"][1]
    samples = {s[0]: s[2] for s in families["sse_fast_publish_to_write_seconds"][1]}
    assert samples["sse_fast_publish_to_write_seconds_count"] == 2
    assert math.isclose(samples["sse_fast_publish_to_write_seconds_sum"], 0.3002)
    subscribers = {s[1]["topic"]: s[2] for s in families["sse_fast_subscribers"][1]}
    assert subscribers == {"a": 10, "b": 1}
    per_worker = {s[1]["worker"]: s[2] for s in families["sse_fast_worker_connections_open"][1]}
    assert per_worker == {"0": 5, "1": 6}
    up = {s[1]["worker"]: s[2] for s in families["sse_fast_worker_broker_up"][1]}
    assert up == {"0": 1, "1": 0}
    assert families["sse_fast_workers"][1][0][2] == 3
    assert families["sse_fast_workers_reporting"][1][0][2] == 2


def test_every_count_a_worker_keeps_is_reported_and_summed() -> None:
    """Each attribute of ``Metrics`` is named by one figure of the metrics table, so
    a worker reports it and the scrape sums it over the workers: no count kept but
    never exposed (the table, not a list beside it, says what is reported)."""
    from sse_fast.hub._catalogue import CATALOGUE, Counted, CountedBy, Timed

    read = {
        info.figure.attribute: info
        for info in CATALOGUE
        if isinstance(info.figure, Counted | CountedBy | Timed)
    }
    assert set(vars(Metrics())) == set(read), "a count of Metrics the table does not name"
    reports = []
    for worker in range(2):
        metrics = Metrics()
        for n, (name, value) in enumerate(sorted(vars(metrics).items()), start=1):
            if isinstance(value, int):
                setattr(metrics, name, n * 10 + worker)
        metrics.refuse("publish_rate", 3)
        metrics.resume_total["unknown"] += 2
        metrics.publish_latency.observe(0.003)
        snapshot = orjson.loads(orjson.dumps(metrics.snapshot()))  # as through the relay
        reports.append(
            {
                "metrics": snapshot,
                "connections_open": 1,
                "topics": 1,
                "subscribers": [],
                "worker": worker,
                "upstream_reading": worker == 0,  # mirror mode's counters exposed too
            }
        )
    families = parse(render(reports, workers_expected=2, webhooks=True))
    samples = {s[0]: s[2] for _, listed in families.values() for s in listed if not s[1]}
    for n, (name, value) in enumerate(sorted(vars(Metrics()).items()), start=1):
        if isinstance(value, int):
            assert samples[read[name].name] == 2 * n * 10 + 1, name
    refused = {s[1]["reason"]: s[2] for s in families["sse_fast_refused"][1]}
    assert refused == {"publish_rate": 6}
    resume = {s[1]["outcome"]: s[2] for s in families["sse_fast_resume"][1]}
    assert resume == {"resumed": 0, "unknown": 4, "evicted": 0}
    assert samples["sse_fast_publish_to_write_seconds_count"] == 2
