"""The client address behind trusted proxies, against a real ``sse-fast serve`` spoken
to over raw sockets (a client library would merge or refuse repeated header lines;
the outside probe of issue 39 sent two ``X-Forwarded-For`` lines as written here).

Each test's connections come from a loopback address of its own choosing
(``source``), so the peer is a trusted proxy or not as the test needs. What is
checked is what the address decides: ``/metrics`` (401 unless the client is in
``ops_networks`` or has the token) and ``max_connections_per_ip`` (the come-back names
the address it counted). The proxies' own configurations are run in
``test_deployment_configs.py``. Real processes: the address a real server decides on is
its socket's peer, bound here by the test."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator, Sequence

import pytest

from sse_fast.testing import HOST, ServerProcess

OPS_TOKEN = "ops-token-for-the-forwarding-tests"


pytestmark = pytest.mark.processes("a real server's peer addresses, bound by the test on loopback")


def _head(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """The response's head (status line and headers), read with a deadline."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no response head in {timeout} s: {data!r}"
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response head: {data!r}"
        data += chunk
    return data


def _request(
    port: int, path: str, lines: Sequence[str], source: str = HOST, keep: bool = False
) -> tuple[int, bytes, socket.socket]:
    """A GET with these header ``lines`` as written, from ``source``: its status, what
    was read of the response (the whole of it unless ``keep``), and the socket
    (closed unless ``keep``: an open stream)."""
    sock = socket.create_connection((HOST, port), 10, source_address=(source, 0))
    head = "".join(f"{line}\r\n" for line in lines)
    connection = "" if keep else "Connection: close\r\n"
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n{head}{connection}\r\n".encode("latin-1"))
    data = _head(sock)
    if not keep:
        deadline = time.monotonic() + 10
        while chunk := sock.recv(65536):
            data += chunk
            assert time.monotonic() < deadline, f"the response did not end: {data!r}"
        sock.close()
    return int(data.split(b" ", 2)[1]), data, sock


def _come_back(status: int, response: bytes) -> bool:
    """Whether ``response`` tells a stream over the per-address limit to come back later
    (a 200 of one ``sse-fast-disconnect`` frame, which a browser follows where it would
    stop on a 429)."""
    head, _, body = response.partition(b"\r\n\r\n")
    return (
        status == 200
        and b"\r\nsse-fast-come-back: max-connections-per-ip\r\n" in head.lower() + b"\r\n"
        and b"event: sse-fast-disconnect" in body
    )


@contextlib.contextmanager
def _streams() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def test_two_forwarded_for_lines_do_not_let_the_client_choose() -> None:
    """The probe: a client that sends its own ``X-Forwarded-For: 127.0.0.1`` before the
    proxy's line got /metrics (the first line alone was read); now 401."""
    with ServerProcess("--trusted-proxies", "127.0.0.1", ops_token=OPS_TOKEN) as server:
        spoofed = ["X-Forwarded-For: 127.0.0.1", "X-Forwarded-For: 8.8.8.8"]
        status, body, _ = _request(server.port, "/metrics", spoofed)
        assert status == 401, body
        assert _request(server.port, "/metrics", ["X-Forwarded-For: 8.8.8.8"])[0] == 401
        one_line = ["X-Forwarded-For: 127.0.0.1, 8.8.8.8"]
        assert _request(server.port, "/metrics", one_line)[0] == 401
        # the proxy's own machine (every hop trusted) and the token still get in
        assert _request(server.port, "/metrics", ["X-Forwarded-For: 127.0.0.1"])[0] == 200
        bearer = [*spoofed, f"Authorization: Bearer {OPS_TOKEN}"]
        assert _request(server.port, "/metrics", bearer)[0] == 200


def test_per_address_limit_counts_the_hop_the_proxy_wrote() -> None:
    """Behind a proxy that appends its line, the client's own first line changes nothing:
    two streams from 198.51.100.7 with different lines of their own are one address."""
    with (
        ServerProcess(
            "--trusted-proxies",
            "127.0.0.0/29",  # a network: 127.0.0.6 is in it
            max_connections_per_ip=1,
            connect_rate_per_ip=0,
        ) as server,
        _streams() as opened,
    ):
        path = "/events?topic=forwarded"
        first = ["X-Forwarded-For: 203.0.113.1", "X-Forwarded-For: 198.51.100.7"]
        status, head, sock = _request(server.port, path, first, source="127.0.0.6", keep=True)
        opened.append(sock)
        assert status == 200, head
        second = ["X-Forwarded-For: 203.0.113.2", "X-Forwarded-For: 198.51.100.7"]
        status, body, _ = _request(server.port, path, second, source="127.0.0.6")
        assert _come_back(status, body), body
        assert b"too many streams from 198.51.100.7" in body
        # another client behind the same proxy has its own count
        other = ["X-Forwarded-For: 198.51.100.8"]
        status, head, sock = _request(server.port, path, other, source="127.0.0.6", keep=True)
        opened.append(sock)
        assert status == 200, head
        # a peer outside trusted_proxies: its header is ignored, its address counts
        status, head, sock = _request(server.port, path, first, source="127.0.0.9", keep=True)
        opened.append(sock)
        assert status == 200, head
        status, body, _ = _request(server.port, path, second, source="127.0.0.9")
        assert _come_back(status, body) and b"too many streams from 127.0.0.9" in body, body


def test_forwarded_header_rfc_7239() -> None:
    """``--forwarded-header forwarded``: every ``Forwarded`` line, elements right to left,
    quoted IPv6 with a port; ``X-Forwarded-For`` is then the client's and ignored."""
    with ServerProcess(
        "--trusted-proxies",
        "127.0.0.1",
        "--forwarded-header",
        "forwarded",
        ops_token=OPS_TOKEN,
        max_connections_per_ip=1,
        connect_rate_per_ip=0,
    ) as server:
        spoofed = ["Forwarded: for=127.0.0.1", 'Forwarded: for="[2001:db8::7]:4711";proto=http']
        assert _request(server.port, "/metrics", spoofed)[0] == 401
        # X-Forwarded-For is not read: a client sending one does not get the proxy's machine
        other = ["X-Forwarded-For: 127.0.0.1", 'Forwarded: for="[2001:db8::7]"']
        assert _request(server.port, "/metrics", other)[0] == 401
        with _streams() as opened:
            path = "/events?topic=forwarded"
            lines = ['Forwarded: for=203.0.113.1, for="[2001:DB8::7]:4711";proto=https']
            status, head, sock = _request(server.port, path, lines, keep=True)
            opened.append(sock)
            assert status == 200, head
            status, body, _ = _request(server.port, path, spoofed)
            assert _come_back(status, body) and b"too many streams from 2001:db8::7" in body, body


def test_a_malformed_hop_is_unknown_and_nothing_breaks() -> None:
    """A hop that is no address ends the walk as ``unknown``: no crash, no ops access for
    a proxy on loopback, and one per-address count for all such clients."""
    with (
        ServerProcess(
            "--trusted-proxies",
            "127.0.0.1",
            ops_token=OPS_TOKEN,
            max_connections_per_ip=1,
            connect_rate_per_ip=0,
        ) as server,
        _streams() as opened,
    ):
        for junk in ("127.0.0.1, <script>", "[::1", "999.0.0.1", "unknown", "127.0.0.1:x"):
            status, body, _ = _request(server.port, "/metrics", [f"X-Forwarded-For: {junk}"])
            assert status == 401, (junk, body)
        path = "/events?topic=forwarded"
        status, head, sock = _request(server.port, path, ["X-Forwarded-For: ???"], keep=True)
        opened.append(sock)
        assert status == 200, head
        status, body, _ = _request(server.port, path, ["X-Forwarded-For: 8.8.8.8, %%%"])
        assert _come_back(status, body) and b"too many streams from unknown" in body, body
        assert _request(server.port, "/healthz", [])[0] == 200
