"""The hub mounted in a host application (``app.mount("/sse", edge)``), under
uvicorn (a coroutine ``send``) and Granian (an eager one): the host's route
handlers publish in process and subscribers get the events; the edge's own
endpoints work below the mount point; a reconnect resumes; SIGTERM drains the
streams (the final frame with its retry hint) so the server exits. Real processes: the
two servers themselves, their sockets and their SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

import pytest

from sse_fast.testing import HOST, ServerProcess, SSEClient, collect, http_request

APP = "tests.support.mounted_hub_app:app"
SERVERS = {
    "uvicorn": [sys.executable, "-m", "uvicorn", APP, "--port", "{port}", "--no-access-log"],
    "granian": [
        *(sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop"),
        *("--port", "{port}", "--log-level", "warning", APP),
    ],
}


pytestmark = pytest.mark.processes(
    "uvicorn and Granian serving the mounted hub, SIGTERM's drain included"
)


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Any:
    with ServerProcess(command=SERVERS[request.param], drain_timeout=2) as server:
        yield server


async def _post(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, _, reply = await http_request(
        HOST,
        port,
        "POST",
        path,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert status == 200, reply
    return dict(json.loads(reply))


def test_route_handlers_publish_to_the_mounted_hub(server: ServerProcess) -> None:
    async def main() -> None:
        client = SSEClient(HOST, server.port, ["user/1"], path="/sse/events")
        await client.connect()
        (first,) = (await _post(server.port, "/notify", {"user": 1, "text": "hi"}))["ids"]
        (second,) = (await _post(server.port, "/sse/publish", {"topic": "user/1", "data": "x"}))[
            "ids"
        ]
        events = await collect(client, 2, timeout=10)
        assert [(e.event, e.data, e.id) for e in events] == [
            ("notice", '{"text":"hi"}', first),
            ("message", "x", second),
        ]
        client.close()
        # a reconnect from the first id resumes with the second
        again = SSEClient(HOST, server.port, ["user/1"], path="/sse/events", last_event_id=first)
        await again.connect()
        assert again.response_headers.get("sse-fast-resume") == "resumed"
        (event,) = await collect(again, 1, timeout=10)
        assert event.id == second
        again.close()
        status, _, _ = await http_request(HOST, server.port, "GET", "/sse/nothing", timeout=5)
        assert status == 404

    asyncio.run(main())


def test_sigterm_drains_the_mounted_hub_and_the_server_exits(server: ServerProcess) -> None:
    async def main() -> list[SSEClient]:
        clients = [
            SSEClient(HOST, server.port, [f"user/{n}"], path="/sse/events") for n in range(20)
        ]
        await asyncio.gather(*(c.connect() for c in clients))
        assert server.proc is not None
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*(collect(c, 10**6, timeout=10) for c in clients))
        assert all(c.closed for c in clients)  # drained: each stream ended
        assert all(c.retry is not None for c in clients)  # with the drain's retry hint
        assert time.monotonic() - started < 6
        return clients

    asyncio.run(main())
    assert server.proc is not None
    assert server.proc.wait(10) is not None
