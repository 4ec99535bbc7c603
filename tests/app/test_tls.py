"""HTTPS and HTTP/2 on the edge (``--ssl-certfile``/``--ssl-keyfile``, ``--http
auto``): a real ``sse-fast serve`` with a self-signed certificate made here, a
real HTTP/2 client (httpx with h2) that checks the certificate against it.
Browsers speak HTTP/2 only over TLS; over HTTP/2 many streams share one
connection, where HTTP/1.1 browsers stop at six per origin. Real processes: TLS and
HTTP/2 on a real server's socket."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from sse_fast import Parser
from sse_fast.settings import Settings, SettingsError
from sse_fast.testing import ServerProcess, wait_for

from ..support.certificates import self_signed
from ..support.waiting import until


def test_settings_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="both ssl_certfile and ssl_keyfile"):
        Settings(ssl_certfile=str(tmp_path / "cert.pem"))
    with pytest.raises(SettingsError, match="ssl_certfile: cannot read"):
        Settings(ssl_certfile=str(tmp_path / "no.pem"), ssl_keyfile=str(tmp_path / "no.key"))


@pytest.mark.processes("TLS and HTTP/2 on a real server's socket")
def test_https_with_http2_carries_ten_streams_on_one_connection(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    args = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--http", "auto")

    async def main(server: ServerProcess) -> None:
        trust = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(http2=True, verify=trust, timeout=10) as client:
            ready = await client.get(f"{server.url}/readyz")
            assert ready.status_code == 200
            assert ready.http_version == "HTTP/2"

            received: list[list[str]] = [[] for _ in range(10)]
            opened = asyncio.Event()

            async def subscribe(index: int) -> None:
                async with client.stream("GET", f"{server.url}/events?topic=tabs") as response:
                    assert response.http_version == "HTTP/2"
                    assert "connection" not in response.headers
                    parser = Parser()
                    async for chunk in response.aiter_bytes():
                        opened.set()
                        for event in parser.feed(chunk):
                            if event.data:
                                received[index].append(event.data)
                        if received[index]:
                            return

            tabs = [asyncio.create_task(subscribe(i)) for i in range(10)]
            await opened.wait()
            # all ten streams attached (else one misses the event), asked on a connection
            # of its own: httpx's HTTP/2 streams stop receiving once another request on
            # their connection has completed (see the next test)
            async with httpx.AsyncClient(verify=trust, timeout=10) as ops:

                async def ten_open() -> bool:
                    return bool((await ops.get(f"{server.url}/stats")).json()["connections"] >= 10)

                await wait_for(ten_open, timeout=10, what="ten streams open")
            published = await client.post(
                f"{server.url}/publish", json={"topic": "tabs", "data": "to every tab"}
            )
            assert published.status_code == 200
            await asyncio.wait_for(asyncio.gather(*tabs), 10)
            assert received == [["to every tab"]] * 10
            # one TCP connection carried the ten streams and the publish
            stats = (await client.get(f"{server.url}/stats?connections=1")).json()
            assert len(stats["connection_list"]) == 10
            assert len({s["client"] for s in stats["connection_list"]}) == 1

        # HTTP/1.1 clients still get HTTPS
        async with httpx.AsyncClient(
            http2=False, verify=ssl.create_default_context(cafile=str(cert)), timeout=10
        ) as client:
            ready = await client.get(f"{server.url}/readyz")
            assert (ready.status_code, ready.http_version) == (200, "HTTP/1.1")
        # and a client that does not trust the certificate is refused by its own check
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{server.url}/readyz", timeout=5)

    with ServerProcess(*args) as server:
        assert server.tls
        asyncio.run(main(server))
        assert json.loads(server._probe("/readyz")[1])["status"] == "ready"


@pytest.mark.processes("TLS and HTTP/2 on a real server's socket")
def test_streams_keep_receiving_after_another_request_on_the_connection(tmp_path: Path) -> None:
    """Ten streams and a finished request share one HTTP/2 connection (curl, on
    nghttp2, multiplexes ``--parallel`` transfers); a publish afterwards reaches
    all ten. httpx 0.28 (httpcore 1.0.9) cannot be the client here: its HTTP/2
    streams stop receiving once another request on their connection has
    completed (seen against the edge and a bare ASGI app under Granian, and a
    bare app under hypercorn), so a test with it measures the client."""
    cert, key = self_signed(tmp_path)
    args = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--http", "auto")
    with ServerProcess(*args) as server:
        urls = [f"{server.url}/events?topic=tabs"] * 10 + [f"{server.url}/readyz"]
        curl = subprocess.Popen(
            [
                *("curl", "--silent", "--no-buffer", "--cacert", str(cert), "--http2"),
                *("--parallel", "--parallel-max", "20", "--max-time", "4"),
                *("--write-out", "\\n%{http_version} %{num_connects}\\n"),
                *urls,
            ],
            stdout=subprocess.PIPE,
        )
        out = bytearray()  # curl's output as it comes (--no-buffer: each answer's bytes at once)

        def read() -> None:
            assert curl.stdout is not None
            while chunk := curl.stdout.read1(65536):
                out.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as other:
                until(
                    lambda: other.get(f"{server.url}/stats").json()["connections"] == 10,
                    8,
                    "the ten streams open",
                )
                # /readyz, on the streams' connection, has completed: curl has its answer
                until(lambda: b'"status":"ready"' in out, 8, "curl has the /readyz answer")
                body = {"topic": "tabs", "data": "after another request"}
                assert other.post(f"{server.url}/publish", json=body).status_code == 200
            curl.wait(timeout=15)
        finally:
            curl.kill()
            curl.wait()
            reader.join(5)
            assert curl.stdout is not None
            curl.stdout.close()
        text = out.decode()
        assert text.count("data: after another request") == 10
        assert '"status":"ready"' in text
        versions = [line for line in text.splitlines() if line.startswith("2 ")]
        assert len(versions) == 11  # every transfer spoke HTTP/2 ...
        assert sum(int(line.split()[1]) for line in versions) == 1  # ... on one connection
