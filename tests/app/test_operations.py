"""/stats and /metrics name clients and topics (private ones too): only trusted
networks (loopback by default) or an operations token may read them; /healthz
and /readyz stay open. /stats answers a page at a time. Against real servers: the address
that decides is the peer of a real socket; a worker's ``starting`` flag is checked in process."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest

from sse_fast.testing import HOST, ServerProcess, http_request, wait_for

OPS = ("/stats", "/stats?connections=1", "/metrics")


#: the tests against a real server
REAL_SERVER = pytest.mark.processes(
    "a real server's operations endpoints, asked from a real socket"
)


async def get(server: ServerProcess, path: str, **headers: str) -> tuple[int, dict, bytes]:
    return await http_request(HOST, server.port, "GET", path, headers=headers)


@REAL_SERVER
def test_operations_endpoints_need_a_trusted_network_or_the_token() -> None:
    with ServerProcess(ops_networks="10.0.0.0/8", ops_token="ops-secret") as server:

        async def main() -> None:
            for path in ("/healthz", "/readyz"):
                assert (await get(server, path))[0] == 200
            for path in OPS:
                status, headers, body = await get(server, path)
                assert status == 401, path
                assert headers["www-authenticate"].startswith("Bearer")
                message = json.loads(body)["error"]
                assert "operations endpoint" in message and "10.0.0.0/8" in message
                status, _, body = await get(server, path, Authorization="Bearer wrong")
                assert status == 401 and b"invalid operations token" in body
                status, _, _ = await get(server, path, Authorization="Bearer ops-secret")
                assert status == 200, path
            # the publish token is not an operations token
            status, _, _ = await get(server, "/stats", Authorization="Bearer publish")
            assert status == 401
            metrics = (await get(server, "/metrics", Authorization="Bearer ops-secret"))[2]
            assert b'sse_fast_refused_total{reason="ops_no_credential"} 3' in metrics

        asyncio.run(main())


@REAL_SERVER
def test_without_a_token_other_networks_get_403_saying_what_to_do() -> None:
    with ServerProcess(ops_networks="192.0.2.0/24") as server:

        async def main() -> None:
            status, _, body = await get(server, "/metrics")
            assert status == 403
            assert b"192.0.2.0/24" in body and b"ops_token" in body

        asyncio.run(main())


@REAL_SERVER
def test_a_trusted_proxy_does_not_make_the_world_local() -> None:
    """Behind a proxy on loopback, the client is the forwarded address."""
    with ServerProcess(trusted_proxies="127.0.0.1") as server:

        async def main() -> None:
            assert (await get(server, "/stats"))[0] == 200  # the proxy host itself
            forwarded = {"X-Forwarded-For": "203.0.113.9"}
            for path in OPS:
                assert (await get(server, path, **forwarded))[0] == 403, path
            local = {"X-Forwarded-For": "127.0.0.5"}
            assert (await get(server, "/stats", **local))[0] == 200

        asyncio.run(main())


@REAL_SERVER
def test_stats_answers_a_page_at_a_time() -> None:
    with ServerProcess() as server:

        async def main() -> None:
            events = [{"topic": f"page-{i:04}", "data": i} for i in range(2500)]
            for start in range(0, 2500, 1000):
                body = orjson.dumps({"events": events[start : start + 1000]})
                assert (await server.publish(body))[0] == 200
            seen: list[str] = []
            offset: int | None = 0
            pages = 0
            while offset is not None:
                status, _, body = await get(server, f"/stats?offset={offset}&limit=1000")
                assert status == 200
                page = json.loads(body)
                assert page["topics_total"] == 2500 and len(page["topics"]) <= 1000
                seen += page["topics"]
                offset = page["next_offset"]
                pages += 1
            assert pages == 3 and sorted(seen) == sorted(e["topic"] for e in events)
            default = json.loads((await get(server, "/stats"))[2])
            assert len(default["topics"]) == 1000 and default["next_offset"] == 1000
            for bad in ("limit=0", "limit=10001", "offset=-1", "limit=x"):
                status, _, body = await get(server, f"/stats?{bad}")
                assert status == 400 and bad.split("=")[0].encode() in body, bad

        asyncio.run(main())


def test_stats_says_which_worker_is_still_starting() -> None:
    """``/stats`` names each worker's start (``starting``): a worker on Redis answers
    gathers before its start is done, so "every worker answers" is not "every worker
    serves" (``ServerProcess`` waits for none starting). ``Hub.start`` moves it."""
    from sse_fast.app._operations import merge_stats
    from sse_fast.brokers.local import LocalBroker
    from sse_fast.hub import Hub
    from sse_fast.settings import Settings

    class Held(LocalBroker):
        def __init__(self) -> None:
            super().__init__()
            self.go = asyncio.Event()

        async def start(self) -> None:
            await self.go.wait()

    async def main() -> None:
        broker = Held()
        hub = Hub(Settings(), broker=broker)
        query = {"what": "stats"}
        starting = asyncio.get_running_loop().create_task(hub.start())
        await wait_for(lambda: hub.starting)
        assert hub.stats()["starting"] is True
        assert merge_stats([hub.report(query)], False)["workers"][0]["starting"] is True
        broker.go.set()
        await starting
        assert hub.stats()["starting"] is False
        assert merge_stats([hub.report(query)], False)["workers"][0]["starting"] is False
        await hub.stop()

    asyncio.run(main())
