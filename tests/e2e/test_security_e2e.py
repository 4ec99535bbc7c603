"""Security rules against a real ``sse-fast serve`` process (tokens, claims,
expiry, cookies, CORS and every limit). Loopback only, bounded in time. Real processes:
one real server, shared by the module's tests."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from typing import Any

import jwt
import orjson
import pytest

from sse_fast.testing import HOST, HTTPResponseError, ServerProcess, collect, http_request

from ..support.come_back import told_to_come_back

SECRET = "e2e-secret-that-is-long-enough-for-hs256"


pytestmark = [
    pytest.mark.processes("a real server's refusals over real sockets"),
    # one worker runs the module: its server started once, not at each of several
    # workers' visits (pytest ends a module-scoped fixture when a worker moves on)
    pytest.mark.xdist_group("security_e2e"),
]


def token(rights: dict[str, Any], **claims: Any) -> str:
    return jwt.encode({"sse_fast": rights, "sub": "e2e", **claims}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def server():
    with ServerProcess(
        allow_anonymous_publish="0",
        jwt_secret=SECRET,
        publish_token="static-token",
        private_topics="user/*,admin",
        cors_origins="https://app.example",
        max_connections=40,
        max_connections_per_ip=30,
        connect_rate_per_ip=0,
        publish_rate=0,
        max_topics_per_connection=4,
        max_topic_length=40,
        max_body_bytes=4096,
        max_events_per_batch=5,
    ) as proc:
        yield proc


def post(
    server: ServerProcess, body: Any, auth: str | None = None, **headers: str
) -> tuple[int, dict[str, str], dict[str, Any]]:
    return asyncio.run(apost(server, body, auth, **headers))


async def apost(
    server: ServerProcess, body: Any, auth: str | None = None, **headers: str
) -> tuple[int, dict[str, str], dict[str, Any]]:
    all_headers = {"Content-Type": "application/json", **headers}
    if auth:
        all_headers["Authorization"] = auth
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    code, response_headers, content = await http_request(
        HOST, server.port, "POST", "/publish", raw, all_headers
    )
    return code, response_headers, json.loads(content) if content else {}


def subscribe_status(server: ServerProcess, topics: list[str], **headers: str) -> int:
    async def main() -> int:
        client = server.client(*topics, headers=headers)
        try:
            await client.connect()
        except HTTPResponseError as exc:
            return exc.status
        client.close()
        return 200

    return asyncio.run(main())


def test_publisher_credentials(server: ServerProcess) -> None:
    code, headers, body = post(server, {"topic": "news", "data": 1})
    assert code == 401 and headers["www-authenticate"].startswith("Bearer")
    assert post(server, {"topic": "news", "data": 1}, "Bearer static-token")[0] == 200
    assert post(server, {"topic": "news", "data": 1}, "Bearer wrong")[0] == 401
    news = f"Bearer {token({'publish': ['news', 'user/*']})}"
    assert post(server, {"topic": "news", "data": 1}, news)[0] == 200
    assert post(server, {"topic": "user/7/inbox", "data": 1}, news)[0] == 200
    code, _, body = post(server, {"topic": "sports", "data": 1}, news)
    assert code == 403 and "sports" in body["error"]
    expired = f"Bearer {token({'publish': ['*']}, exp=int(time.time()) - 30)}"
    code, _, body = post(server, {"topic": "news", "data": 1}, expired)
    assert code == 401 and "expired" in body["error"]


def test_subscriber_tokens_header_cookie_and_query(server: ServerProcess) -> None:
    assert subscribe_status(server, ["public"]) == 200
    assert subscribe_status(server, ["user/1"]) == 401
    good = token({"subscribe": ["user/1"]})
    assert subscribe_status(server, ["user/1"], Authorization=f"Bearer {good}") == 200
    assert subscribe_status(server, ["user/1", "admin"], Authorization=f"Bearer {good}") == 403
    assert subscribe_status(server, ["user/1"], Cookie=f"sse_fast_token={good}") == 200

    async def query_token() -> int:
        client = server.client("user/1", extra_query={"token": good})
        try:
            await client.connect()
        except HTTPResponseError as exc:
            return exc.status
        client.close()
        return 200

    assert asyncio.run(query_token()) == 401  # tokens in URLs are off unless allowed


def test_expired_token_ends_the_stream(server: ServerProcess) -> None:
    async def main() -> None:
        short = token({"subscribe": ["user/9"]}, exp=time.time() + 1.5)
        client = server.client("user/9", headers={"Authorization": f"Bearer {short}"})
        await client.connect()
        events = await collect(client, 100, timeout=10, until=lambda c: c.closed)
        assert client.closed
        assert events[-1].event == "sse-fast-disconnect"
        assert json.loads(events[-1].data) == {"reason": "token-expired"}

    asyncio.run(main())


def test_a_cookie_that_fails_is_ignored_on_public_topics_only(server: ServerProcess) -> None:
    def ignored() -> int:
        metrics = asyncio.run(http_request(HOST, server.port, "GET", "/metrics"))[2].decode()
        (line,) = [x for x in metrics.splitlines() if x.startswith("sse_fast_ignored_cookies")]
        return int(line.split()[-1])

    expired = token({"subscribe": ["user/1"]}, exp=int(time.time()) - 60)
    rotated = jwt.encode({"sse_fast": {"subscribe": ["*"]}}, "x" * 32, algorithm="HS256")
    before = ignored()
    for cookie in (expired, rotated, "garbage"):
        assert subscribe_status(server, ["public"], Cookie=f"sse_fast_token={cookie}") == 200
        assert subscribe_status(server, ["user/1"], Cookie=f"sse_fast_token={cookie}") == 401
        assert subscribe_status(server, ["public"], Authorization=f"Bearer {cookie}") == 401
    assert ignored() == before + 3


def test_duplicate_ids_in_one_batch_are_refused_and_nothing_published(
    server: ServerProcess,
) -> None:
    auth = "Bearer static-token"

    async def main() -> None:
        client = server.client("dups")
        await client.connect()
        batch = {"events": [{"topic": "dups", "id": f"q{i % 2}", "data": i} for i in range(3)]}
        code, _, body = await apost(server, batch, auth)
        assert code == 400
        assert body["error"].startswith("events[2]: id 'q0' is also the id of events[0]")
        assert "Nothing was published" in body["error"]
        code, _, body = await apost(server, {"topic": "dups", "id": "q0", "data": "first"}, auth)
        assert (code, body) == (200, {"ids": ["q0"]})  # q0 was not taken by the refused batch
        (event,) = await collect(client, 1, timeout=5)
        assert (event.id, event.data) == ("q0", "first")
        client.close()

    asyncio.run(main())


@pytest.mark.parametrize("path", ["/publish", "/publish/stream"])
def test_a_compressed_body_gets_415_naming_the_encoding(server: ServerProcess, path: str) -> None:
    kind = "application/json" if path == "/publish" else "application/x-ndjson"
    code, _, content = asyncio.run(
        http_request(
            HOST,
            server.port,
            "POST",
            path,
            gzip.compress(b'{"topic": "news", "data": 1}'),
            {
                "Content-Type": kind,
                "Content-Encoding": "gzip",
                "Authorization": "Bearer static-token",
            },
        )
    )
    assert code == 415
    assert json.loads(content)["error"].startswith("Content-Encoding 'gzip' is not supported")


def test_cors_preflight(server: ServerProcess) -> None:
    async def main() -> None:
        code, headers, _ = await http_request(
            HOST,
            server.port,
            "OPTIONS",
            "/publish",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert code == 204
        assert headers["access-control-allow-origin"] == "https://app.example"
        assert headers["access-control-allow-credentials"] == "true"
        code, headers, _ = await http_request(
            HOST, server.port, "OPTIONS", "/publish", headers={"Origin": "https://evil.example"}
        )
        assert code == 403 and "access-control-allow-origin" not in headers

    asyncio.run(main())


def test_request_limits(server: ServerProcess) -> None:
    auth = "Bearer static-token"
    assert post(server, b"{" + b" " * 5000 + b"}", auth)[0] == 413
    batch = {"events": [{"topic": "a", "data": i} for i in range(6)]}
    assert post(server, batch, auth)[0] == 413
    assert post(server, {"topic": "x" * 41, "data": 1}, auth)[0] == 400
    assert post(server, {"topic": "bad topic", "data": 1}, auth)[0] == 400
    assert subscribe_status(server, ["a", "b", "c", "d", "e"]) == 400
    metrics = asyncio.run(http_request(HOST, server.port, "GET", "/metrics"))[2].decode()
    assert 'sse_fast_refused_total{reason="body_too_large"}' in metrics


def test_connection_limits_total_and_per_ip() -> None:
    with ServerProcess(max_connections=6, max_connections_per_ip=4, connect_rate_per_ip=0) as srv:

        async def main() -> None:
            held = []
            for source in ("127.0.0.11", "127.0.0.11", "127.0.0.11", "127.0.0.11"):
                client = srv.client("t", local_addr=source)
                await client.connect()
                held.append(client)
            over = srv.client("t", local_addr="127.0.0.11")
            await over.connect()
            reason, message, retry = await told_to_come_back(over)
            assert reason == "max-connections-per-ip" and "127.0.0.11" in message
            assert retry >= 5000  # the limit's wait (5 s), jittered up
            for source in ("127.0.0.12", "127.0.0.12"):
                client = srv.client("t", local_addr=source)
                await client.connect()
                held.append(client)
            full = srv.client("t", local_addr="127.0.0.13")
            await full.connect()
            reason, message, _ = await told_to_come_back(full)
            assert reason == "max-connections" and "connection limit" in message
            for client in held:
                client.close()

        asyncio.run(main())


def test_rate_limits() -> None:
    with ServerProcess(
        connect_rate_per_ip=2,
        max_connections_per_ip=0,
        publish_rate=1,
        allow_anonymous_publish="0",
        publish_token="tok",
    ) as srv:

        async def main() -> None:
            answers = []
            for _ in range(6):
                client = srv.client("t", local_addr="127.0.0.21")
                await client.connect()
                if "sse-fast-come-back" in client.response_headers:
                    answers.append((await told_to_come_back(client))[0])
                else:
                    answers.append("stream")
                    client.close()
            assert answers[:4] == ["stream"] * 4 and "connect-rate" in answers[4:]
            publish_codes = []
            for i in range(4):
                code, _headers, _ = await http_request(
                    HOST,
                    srv.port,
                    "POST",
                    "/publish",
                    orjson.dumps({"topic": "t", "data": i}),
                    {"Content-Type": "application/json", "Authorization": "Bearer tok"},
                )
                publish_codes.append(code)
            assert publish_codes[:2] == [200, 200] and 429 in publish_codes[2:]

        asyncio.run(main())


def test_per_ip_limit_behind_a_trusted_proxy() -> None:
    with ServerProcess(
        trusted_proxies="127.0.0.31", max_connections_per_ip=1, connect_rate_per_ip=0
    ) as srv:

        async def main() -> None:
            first = srv.client(
                "t", local_addr="127.0.0.31", headers={"X-Forwarded-For": "203.0.113.5"}
            )
            await first.connect()
            second = srv.client(
                "t",
                local_addr="127.0.0.31",
                headers={"X-Forwarded-For": "198.51.100.7, 127.0.0.31"},
            )
            await second.connect()  # another client behind the same proxy
            third = srv.client(
                "t", local_addr="127.0.0.31", headers={"X-Forwarded-For": "203.0.113.5"}
            )
            await third.connect()
            reason, message, _ = await told_to_come_back(third)
            assert reason == "max-connections-per-ip" and "203.0.113.5" in message
            # from an untrusted peer the header is ignored: the peer address counts
            spoofed = srv.client(
                "t", local_addr="127.0.0.32", headers={"X-Forwarded-For": "198.51.100.99"}
            )
            await spoofed.connect()
            again = srv.client(
                "t", local_addr="127.0.0.32", headers={"X-Forwarded-For": "198.51.100.100"}
            )
            await again.connect()
            assert (await told_to_come_back(again))[0] == "max-connections-per-ip"
            for client in (first, second, spoofed):
                client.close()

        asyncio.run(main())
