"""A worker's start under ``sse-fast serve`` (``start_failure_file`` set), in
process: the lifespan completes at once, liveness answers, readiness and the
other endpoints wait for the hub; a start that fails is written to the run's
report and the process that made it gets SIGTERM (``app/_start.py``,
``sse_fast/_startup.py``). The same with real servers: ``tests/e2e/test_start.py``.
Real processes: only the SIGTERM, to a stand-in for the process the report names."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sse_fast._core import Parser
from sse_fast.app import App
from sse_fast.brokers.durable import StoreError
from sse_fast.brokers.durable._restore import RestoreProgress
from sse_fast.brokers.local import LocalBroker
from sse_fast.hub import Hub
from sse_fast.settings import Settings
from sse_fast.settings._handoff import Handoff
from tests.support.asgi_harness import request


class HeldBroker(LocalBroker):
    """A broker whose start restores nothing until ``go_on`` is set (then fails
    with ``failure``, if given), 40 of 100 events applied meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.go_on = asyncio.Event()
        self.failure: Exception | None = None

    async def start(self) -> None:
        self.progress = RestoreProgress()
        self.progress.total, self.progress.applied = 100, 40
        await self.go_on.wait()
        self.progress.applied = 100
        if self.failure is not None:
            raise self.failure


def starting_app(report: Path) -> tuple[App, HeldBroker]:
    settings = Settings(allow_anonymous_publish=True)
    broker = HeldBroker()
    handoff = Handoff(start_failure_file=str(report))  # under serve
    return App(settings, hub=Hub(settings, broker=broker), handoff=handoff), broker


async def _answers(app: App) -> dict[str, tuple[int, dict[str, str], dict[str, Any]]]:
    out = {}
    for method, path, body in (
        ("GET", "/livez", b""),
        ("GET", "/healthz", b""),
        ("GET", "/readyz", b""),
        ("GET", "/events?topic=t", b""),
        ("POST", "/publish", b'{"topic": "t", "data": 1}'),
        ("GET", "/stats", b""),
    ):
        bare, _, query = path.partition("?")
        name, _, value = query.partition("=")
        status, headers, raw = await request(
            app, method, bare, body, query=[(name, value)] if query else None
        )
        if headers.get("content-type", "").startswith("text/event-stream"):
            out[path] = (status, headers, _come_back(raw))
        else:
            out[path] = (status, headers, json.loads(raw))
    return out


def _come_back(raw: bytes) -> dict[str, Any]:
    """The one frame of a stream asked for while the server cannot serve it yet: its
    data, and its ``retry`` (ms) as ``"retry"``."""
    parser = Parser()
    (event,) = parser.feed(raw)
    assert event.event == "sse-fast-disconnect" and not event.id, event
    assert parser.retry is not None
    return {**json.loads(event.data), "retry": parser.retry}


def test_a_starting_worker_answers_liveness_and_refuses_the_rest(tmp_path: Path) -> None:
    app, broker = starting_app(tmp_path / "failure")

    async def main() -> None:
        await app.lifespan.startup()  # returns at once: the hub starts behind it
        answers = await _answers(app)
        assert answers["/livez"][:1] == (200,)
        assert answers["/livez"][2]["starting"] == "restoring history (40 of 100 events)"
        assert answers["/healthz"][0] == 200
        assert answers["/readyz"][0] == 503
        assert answers["/readyz"][2] == {
            "status": "starting",
            "reason": "restoring history (40 of 100 events)",
        }
        # a stream is not refused (a browser would never come back): it is told when
        status, _, told = answers["/events?topic=t"]
        assert status == 200
        assert told["reason"] == "starting"
        assert told["message"] == (
            "this server serves no streams yet: restoring history (40 of 100 events); "
            "reconnect after the retry, here or at another server"
        )
        assert 2000 <= told["retry"] <= 2000 + app.settings.drain_retry_jitter_ms
        for path in ("/publish", "/stats"):
            status, headers, body = answers[path]
            assert status == 503, (path, body)
            assert headers["retry-after"] == "2"
            assert body["error"].startswith(
                "this server is starting and serves no streams or publishes yet: "
                "restoring history (40 of 100 events); try again in 2 s"
            )
        broker.go_on.set()
        for _ in range(100):  # the start's task finishes within a few turns
            if not app.start.pending:
                break
            await asyncio.sleep(0)
        status, _, reply = await request(app, "GET", "/readyz")
        assert (status, json.loads(reply)) == (200, {"status": "ready"})
        status, _, reply = await request(app, "POST", "/publish", b'{"topic": "t", "data": 1}')
        assert status == 200, reply
        await app.lifespan.shutdown()
        assert app.hub.metrics.refused_total["starting"] == 3

    asyncio.run(main())


@pytest.mark.processes("a failed start's SIGTERM to the process the report names")
def test_a_failed_start_is_reported_and_stops_the_server(tmp_path: Path) -> None:
    """The report names the process to stop (here a stand-in, not the test)."""
    supervisor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "supervisor").write_text(str(supervisor.pid))
        app, broker = starting_app(tmp_path / "failure")
        why = "the data directory /data holds a foreign file: move it away"
        broker.failure = StoreError(why)

        async def main() -> None:
            await app.lifespan.startup()
            broker.go_on.set()
            for _ in range(100):
                if app.start.failure:
                    break
                await asyncio.sleep(0)
            answers = await _answers(app)
            assert answers["/readyz"][:1] == (503,)
            assert answers["/readyz"][2]["reason"] == f"the start failed: {why}"
            status, _, told = answers["/events?topic=t"]
            assert status == 200 and told["reason"] == "starting"
            assert f"serves no streams yet: the start failed: {why}" in told["message"]
            await app.lifespan.shutdown()

        asyncio.run(main())
        assert supervisor.wait(10) == -signal.SIGTERM
        assert (tmp_path / "failure").read_text() == why + "\n"
    finally:
        supervisor.kill()
        supervisor.wait()


def test_without_the_report_the_startup_waits_for_the_hub(tmp_path: Path) -> None:
    """A host application (no ``start_failure_file``): the lifespan startup is the
    hub's, nothing is refused as starting."""
    settings = Settings(allow_anonymous_publish=True)
    broker = HeldBroker()
    app = App(settings, hub=Hub(settings, broker=broker))

    async def main() -> None:
        startup = asyncio.get_running_loop().create_task(app.lifespan.startup())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not startup.done()  # held by the broker's start
        broker.go_on.set()
        await startup
        status, _, _ = await request(app, "GET", "/readyz")
        assert status == 200
        await app.lifespan.shutdown()

    asyncio.run(main())
