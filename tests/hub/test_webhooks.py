"""Webhooks (``sse_fast/hub/_webhooks.py``, ``sse_fast/webhooks.py``): a real
``sse-fast serve`` POSTs signed batches of connects and disconnects to a real receiver process
(``tests/support/webhook_receiver.py``) that fails, is slow, is down and restarts;
at least once, deduplicated by event id, bounded while the receiver is down."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest

from sse_fast.settings import Settings, SettingsError
from sse_fast.testing import HOST, ServerProcess, free_port, wait_for
from sse_fast.webhooks import WebhookError, sign, verify

from ..support.browser import REPO
from ..support.waiting import until

SECRET = "webhook-secret-for-the-tests"
JWT_SECRET = "webhook-test-jwt-secret-of-32-bytes"


@contextmanager
def receiver(port: int, log: Path, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    """The receiver process, listening when this returns."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.webhook_receiver",
            str(port),
            str(log),
            SECRET,
            *flags,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            try:
                with socket.create_connection((HOST, port), timeout=0.2):
                    return True
            except OSError:
                assert proc.poll() is None, "the receiver exited"
                return False

        until(listening, 10, "the receiver listening")
        yield proc
    finally:
        proc.kill()
        proc.wait()


def received(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line]


def events(log: Path) -> dict[str, dict[str, Any]]:
    """Every event received, once each (by id: delivery is at least once)."""
    return {e["id"]: e for batch in received(log) for e in batch["events"]}


async def webhook_figures(server: ServerProcess) -> dict[str, float]:
    """The server's ``sse_fast_webhook_*`` figures, by name."""
    _, _, body = await server.get("/metrics")
    found = re.findall(r"^(sse_fast_webhook_\w+) (\S+)$", body.decode(), re.M)
    return {name: float(value) for name, value in found}


async def delivered(server: ServerProcess, count: int, timeout: float = 15.0) -> None:
    """Until the server counts ``count`` events taken by the receiver (its 2xx came)."""

    async def taken() -> bool:
        return (await webhook_figures(server))["sse_fast_webhook_delivered_total"] == count

    await wait_for(taken, timeout, what=f"{count} events taken by the receiver")


async def failed(server: ServerProcess, count: int) -> None:
    """Until the server counts ``count`` failed POSTs (refused, an error, no answer)."""

    async def failures() -> bool:
        return (await webhook_figures(server))["sse_fast_webhook_failures_total"] >= count

    await wait_for(failures, 15, what=f"{count} webhook POSTs failed")


async def streams_ended(server: ServerProcess) -> None:
    """Until the server has no stream left (each one's end is then queued: a stream
    leaves the hub just before its end is told, ``Closer.detach``)."""

    async def none() -> bool:
        _, _, body = await server.get("/stats")
        return json.loads(body)["connections"] == 0

    await wait_for(none, 15, what="every stream ended on the server")


async def all_taken(server: ServerProcess) -> None:
    """Until every event the server queued has been taken by the receiver: whatever
    ``webhook_topics`` let through is in the log."""

    async def taken() -> bool:
        figures = await webhook_figures(server)
        queued = figures["sse_fast_webhook_events_total"]
        return figures["sse_fast_webhook_delivered_total"] == queued

    await wait_for(taken, 15, what="every event queued taken by the receiver")


async def all_told(server: ServerProcess) -> None:
    """Until every stream has ended and every event, their ends included, has been
    taken: nothing more comes after this."""
    await streams_ended(server)
    # a later request than the one that found no stream: their ends were queued by then
    await all_taken(server)


def waits(delivery: Any) -> bool:
    """Whether ``delivery``'s task waits on ``webhook_interval`` (for its wake)."""
    return bool(delivery.wake._waiters)


def edge(port: int, **settings: Any) -> ServerProcess:
    return ServerProcess(
        webhook_urls=f"http://{HOST}:{port}/hook",
        webhook_secret=SECRET,
        webhook_interval="0.2",
        webhook_timeout="0.5",
        webhook_max_delay="0.5",
        jwt_secret=JWT_SECRET,
        **settings,
    )


async def streams(
    server: ServerProcess, count: int, topic: str = "news", **headers: str
) -> list[Any]:
    clients = []
    for _ in range(count):
        client = server.client(topic, headers=headers)
        await client.connect()
        clients.append(client)
    return clients


def by_type(found: dict[str, dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return sorted((e for e in found.values() if e["type"] == kind), key=lambda e: e["at"])


@pytest.mark.processes("webhooks from a real server to a receiver that fails and restarts")
def test_connects_and_disconnects_arrive_signed(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "hooks.jsonl"
    sub = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, JWT_SECRET, "HS256")

    async def main(server: ServerProcess) -> dict[str, dict[str, Any]]:
        anonymous = await streams(server, 2)
        (alice,) = await streams(server, 1, "room:1", Authorization=f"Bearer {sub}")
        await wait_for(
            lambda: len(by_type(events(log), "connect")) == 3, 15, what="the three connects"
        )
        for client in anonymous:
            client.close()
        await wait_for(
            lambda: len(by_type(events(log), "disconnect")) == 2,
            15,
            what="the anonymous streams' two disconnects",
        )
        alice.close()
        found: dict[str, dict[str, Any]] = await wait_for(
            lambda: (e := events(log)) and len(e) == 6 and e, 15, what="the six events"
        )
        return found

    with receiver(port, log), edge(port) as server:
        found = asyncio.run(main(server))
    connects, disconnects = by_type(found, "connect"), by_type(found, "disconnect")
    assert [e["topics"] for e in connects] == [["news"], ["news"], ["room:1"]]
    assert [e["subject"] for e in connects] == [None, None, "alice"]
    assert {e["reason"] for e in disconnects} == {"client-disconnected"}
    assert all(e["connected_seconds"] >= 0 for e in disconnects)
    assert {e["stream"] for e in disconnects} <= {e["stream"] for e in connects}
    assert all(batch["dropped"] == 0 for batch in received(log))
    assert all(set(e) >= {"id", "at", "node", "worker", "client"} for e in found.values())


@pytest.mark.processes("webhooks from a real server to a receiver that fails and restarts")
def test_a_failing_then_slow_receiver_gets_every_event_at_least_once(tmp_path: Path) -> None:
    """Three 500s, then two answers slower than the sender's timeout (recorded, yet
    sent again): every event arrives, some more than once, and the ids tell them
    apart."""
    port, log = free_port(), tmp_path / "hooks.jsonl"

    async def main(server: ServerProcess) -> str:
        clients = await streams(server, 5)
        for client in clients:
            client.close()
        # the first batch is recorded by the two slow answers and the one taken
        await wait_for(
            lambda: len(received(log)) >= 3 and len(events(log)) == 10,
            30,
            what="the ten events, the first batch recorded three times",
        )
        _, _, metrics = await server.get("/metrics")
        return metrics.decode()

    flags = ("--fail", "3", "--slow", "1.5", "--slow-count", "5")
    with receiver(port, log, *flags), edge(port) as server:
        metrics = asyncio.run(main(server))
    found = events(log)
    assert len(by_type(found, "connect")) == 5 and len(by_type(found, "disconnect")) == 5
    batches = received(log)
    assert batches[0]["batch"] == batches[1]["batch"] == batches[2]["batch"]  # sent again
    assert sum(len(batch["events"]) for batch in batches) > len(found)
    (failures,) = re.findall(r"^sse_fast_webhook_failures_total (\S+)$", metrics, re.M)
    assert float(failures) >= 5  # three 500s, two timeouts (more if a POST was slow)


@pytest.mark.processes("webhooks from a real server to a receiver that fails and restarts")
def test_a_receiver_that_is_down_and_restarts(tmp_path: Path) -> None:
    """Down: events wait, up to webhook_max_pending, the rest dropped and counted;
    once it is back the waiting ones arrive, with the drop count."""
    port, log = free_port(), tmp_path / "hooks.jsonl"

    async def main(server: ServerProcess) -> None:
        clients = await streams(server, 8)  # 8 connects: 5 kept, 3 dropped
        await failed(server, 2)  # tries against nobody
        # answered late: recorded here before the sender knows it was taken
        with receiver(port, log, "--slow", "0.3", "--slow-count", "1"):
            found = await wait_for(
                lambda: (e := events(log)) and len(e) == 5 and e, 15, what="the five kept"
            )
            assert sum(batch["dropped"] for batch in received(log)) == 3
            assert len(by_type(found, "connect")) == 5
            # down before the answer, the batch would still wait, and the disconnects
            # below would find no room
            await delivered(server, 5)
        # down again, and back: what happened meanwhile arrives
        before = (await webhook_figures(server))["sse_fast_webhook_failures_total"]
        for client in clients[:2]:
            client.close()

        async def tried() -> bool:  # the two disconnects queued, and a try against nobody
            figures = await webhook_figures(server)
            return (
                figures["sse_fast_webhook_events_total"] == 10
                and figures["sse_fast_webhook_failures_total"] > before
            )

        await wait_for(tried, 15, what="the disconnects tried against nobody")
        with receiver(port, log):
            await wait_for(
                lambda: len(by_type(events(log), "disconnect")) == 2,
                15,
                what="the two disconnects made while it was down",
            )
        _, _, metrics = await server.get("/metrics")
        assert "sse_fast_webhook_dropped_total 3" in metrics.decode()
        for client in clients[2:]:
            client.close()
        await streams_ended(server)

    with edge(port, webhook_max_pending="5") as server:
        asyncio.run(main(server))


@pytest.mark.processes("webhooks from a real server to a receiver that fails and restarts")
def test_draining_and_expired_tokens_are_reasons(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "hooks.jsonl"
    short = jwt.encode({"sub": "bob", "exp": int(time.time()) + 2}, JWT_SECRET, "HS256")

    async def main(server: ServerProcess) -> None:
        clients = await streams(server, 1, "room:2", Authorization=f"Bearer {short}")
        clients += await streams(server, 2)
        await wait_for(
            lambda: any(e.get("reason") == "token-expired" for e in events(log).values()),
            15,
            what="the disconnect of the expired token",
        )
        # SIGTERM: the server drains the two left, then sends what waits, then exits
        assert await asyncio.to_thread(server.stop) == 0
        for client in clients:
            client.close()

    with receiver(port, log):
        with edge(port) as server:
            asyncio.run(main(server))
        disconnects = by_type(events(log), "disconnect")
    reasons = sorted(e["reason"] for e in disconnects)
    assert reasons == ["draining", "draining", "token-expired"]
    assert [e["subject"] for e in disconnects if e["reason"] == "token-expired"] == ["bob"]


@pytest.mark.processes("webhooks from a real server to a receiver that fails and restarts")
def test_only_the_named_topics_are_reported(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "hooks.jsonl"

    async def main(server: ServerProcess) -> None:
        clients = await streams(server, 2, "news")
        clients += await streams(server, 1, "orders/7")
        await wait_for(lambda: events(log), 15, what="a first event")
        for client in clients:
            client.close()
        await wait_for(lambda: by_type(events(log), "disconnect"), 15, what="a disconnect")
        await all_told(server)  # nothing else comes

    with receiver(port, log), edge(port, webhook_topics="orders/*") as server:
        asyncio.run(main(server))
    assert {tuple(e["topics"]) for e in events(log).values()} == {("orders/7",)}
    assert [e["type"] for e in sorted(events(log).values(), key=lambda e: e["at"])] == [
        "connect",
        "disconnect",
    ]


@pytest.mark.processes("webhooks from a real server to a receiver that fails and restarts")
def test_a_pattern_stream_is_reported_when_its_pattern_can_reach_the_topics(
    tmp_path: Path,
) -> None:
    """A stream of ``orders/*`` is reported when its pattern can
    reach a topic of ``webhook_topics`` (they overlap), with its patterns beside the
    topics it held at connect; a pattern that cannot (``news/*``) is not."""
    port, log = free_port(), tmp_path / "hooks.jsonl"

    async def main(server: ServerProcess) -> None:
        clients = await streams(server, 1, "orders/7")
        clients += await streams(server, 1, "orders/*")
        clients += await streams(server, 1, "news/*")
        await wait_for(
            lambda: len(by_type(events(log), "connect")) == 2, 15, what="the two connects"
        )
        await all_taken(server)  # nothing else comes (the connects were queued at connect)
        for client in clients:
            client.close()
        await wait_for(
            lambda: len(by_type(events(log), "disconnect")) == 2, 15, what="the two disconnects"
        )

    with receiver(port, log), edge(port, webhook_topics="orders/*") as server:
        asyncio.run(main(server))
    connects = by_type(events(log), "connect")
    # orders/7 has no history yet: the pattern stream holds it with its first event
    assert [(e["topics"], e["patterns"]) for e in connects] == [
        (["orders/7"], []),
        ([], ["orders/*"]),
    ]


def test_verify_refuses_what_it_must() -> None:
    body = b'{"batch":"b","events":[]}'
    now = 1_790_000_000
    good = {"SSE-Fast-Timestamp": str(now), "SSE-Fast-Signature": sign(SECRET, str(now), body)}
    assert verify(body, good, SECRET, now=now + 10) == {"batch": "b", "events": []}
    assert verify(body, {k.lower(): v for k, v in good.items()}, SECRET, now=now)
    cases = [
        (body, good, "another secret of sixteen", now, "does not match"),
        (body + b" ", good, SECRET, now, "does not match"),
        (body, good, SECRET, now + 301, "outside the 300 s window"),
        (body, {**good, "SSE-Fast-Timestamp": str(now + 1)}, SECRET, now, "does not match"),
        (body, {"SSE-Fast-Signature": "v1=00"}, SECRET, now, "no SSE-Fast-Timestamp"),
        (body, {**good, "SSE-Fast-Timestamp": "soon"}, SECRET, now, "whole number"),
        (body, {**good, "SSE-Fast-Signature": "v1=\u00e9"}, SECRET, now, "does not match"),
    ]
    for data, headers, secret, at, message in cases:
        with pytest.raises(WebhookError, match=message):
            verify(data, headers, secret, now=at)


def test_settings_say_what_webhooks_need() -> None:
    with pytest.raises(SettingsError, match="at least 16 characters"):
        Settings(webhook_urls="http://127.0.0.1:9/hook")
    with pytest.raises(SettingsError, match="no http:// or https:// URL"):
        Settings(webhook_urls="ftp://x/hook", webhook_secret=SECRET)
    assert Settings(webhook_urls="https://a/hook, http://b/hook", webhook_secret=SECRET)


def test_a_full_batch_goes_out_without_waiting_for_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``webhook_interval`` paces small batches; BATCH events waiting are sent at
    once, and the wait after them is the interval again."""
    import orjson

    from sse_fast.hub._metrics import Metrics
    from sse_fast.hub._webhooks import BATCH, Webhooks

    async def main() -> None:
        settings = Settings(
            webhook_urls="http://127.0.0.1:9/hook",
            webhook_secret=SECRET,
            webhook_interval=60.0,
            jwt_secret=JWT_SECRET,
        )
        hooks = Webhooks(settings, Metrics())
        sent: list[int] = []

        async def deliver(delivery: Any, body: bytes) -> None:
            sent.append(len(orjson.loads(body)["events"]))

        monkeypatch.setattr(hooks, "_deliver", deliver)
        hooks.start()
        (delivery,) = hooks.deliveries
        await wait_for(lambda: waits(delivery), what="the delivery task waiting on the interval")
        for n in range(BATCH + 1):
            delivery.add({"id": str(n)}, hooks.metrics)
        # back to its wait: it sends nothing more before the interval (or a stop)
        await wait_for(lambda: sent and waits(delivery), what="a batch, then the wait again")
        assert sent == [BATCH]  # the one left over waits for the interval
        await hooks.stop()  # and goes out at the stop
        assert sent == [BATCH, 1]

    asyncio.run(main())
