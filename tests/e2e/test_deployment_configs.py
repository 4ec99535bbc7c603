"""The configurations of docs/operations/deployment.md work as written.

The ```nginx, ```haproxy and ```ini (systemd unit) blocks are taken from the page
(tests/e2e/test_docs.py runs the page's other blocks and checks that every such block
of every page is one listed in ``COVERED`` here):

* nginx: the block (an ``upstream`` and a ``server``) inside the minimal ``events {}``
  / ``http {}`` (plus temporary paths under the test's own prefix), with only the
  listen port, the upstream addresses and the certificate files (a self-signed one made
  here) replaced; ``nginx -t``, then a real nginx in front of a real ``sse-fast
  serve``, spoken to over TLS and HTTP/2 as a browser would.
* HAProxy: the block with only the ``bind`` port and the servers' addresses replaced;
  ``haproxy -c``, then a real ``haproxy -db`` in front of a real server.
* Caddy: the block with only the site address (plain HTTP on a free port) and the
  upstreams replaced, its admin endpoint off; ``caddy validate``, then ``caddy run``.

Behind each proxy, a client that sends its own ``X-Forwarded-For`` (one line, two
lines) from an address of its own: ``/metrics`` stays 401 (``--ops-networks`` holds the
proxy's address alone) and ``--max-connections-per-ip 1`` counts the client's real
address. nginx's ``$proxy_add_x_forwarded_for`` appends to the client's value, and
HAProxy's ``option forwardfor`` adds its own line after the client's: the server reads
every line right to left (``sse_fast/app/_forwarded.py``).

Through each proxy: a stream opens, a heartbeat comment (``--heartbeat-interval``
0.3 s) comes through, an event published through the proxy arrives well under a
second later (0.5 s: a proxy that held it or compressed the stream fails), and a reconnect with
``Last-Event-ID`` resumes (``SSE-Fast-Resume: resumed``) with what was missed. Streams
that ask for gzip and zstd get the server's coding through the proxy (not taken off,
not compressed twice), the heartbeat and the event decoded as they come.

* systemd: ``systemd-analyze verify`` runs without a running systemd (it loads the
  unit and checks its settings and its ``ExecStart`` binary, which is replaced by this
  environment's ``sse-fast``); it must say nothing about the unit. It does not see a
  ``# comment`` after a value (part of the value for systemd), nor whether the flags
  exist, nor the stop timeout against the drain: checked here too. Then systemd's
  stop is played: SIGTERM to every process of the service (``KillMode=control-group``,
  the default), and the stream gets its drain frame and the server exits 0 within
  ``TimeoutStopSec``.

Missing programs fail (not skip), naming the Debian package (scripts/test installs
them). Every process runs on loopback and is stopped at the end.
Real processes: nginx, HAProxy, Caddy and systemd-analyze with a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sse_fast import Parser
from sse_fast._compression import StreamDecoder
from sse_fast.settings import Settings
from sse_fast.testing import HOST, ServerProcess, free_port

from ..support.certificates import self_signed
from ..support.waiting import until

ROOT = Path(__file__).resolve().parents[2]
PAGE = "docs/operations/deployment.md"
#: (page, language) of every configuration block this module tests; test_docs.py fails
#: on a ```nginx/```haproxy/```ini block anywhere else
COVERED = {(PAGE, "nginx"), (PAGE, "haproxy"), (PAGE, "caddy"), (PAGE, "ini")}
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)
HEARTBEAT = 0.3
#: an event through the proxy must arrive within this many seconds of its publish: a
#: buffering proxy holds it until kilobytes of heartbeats (minutes) or the stream's end;
#: a loaded CI machine took 0.6 s through nginx
PROMPT = 2.0


pytestmark = pytest.mark.processes("nginx, HAProxy, Caddy and systemd-analyze with a real server")


def _block(language: str) -> str:
    found = [m.group(2) for m in BLOCK.finditer((ROOT / PAGE).read_text()) if m[1] == language]
    assert len(found) == 1, f"{PAGE}: expected one ```{language} block, found {len(found)}"
    return found[0]


def _program(name: str, package: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} is not installed: apt-get install {package} (scripts/test does)")
    return path


def _substitute(text: str, pattern: str, replacement: str, count: int | None = None) -> str:
    out, n = re.subn(pattern, replacement, text, flags=re.M)
    assert n >= 1 and (count is None or n == count), f"{pattern!r}: {n} matches"
    return out


@contextlib.contextmanager
def _running(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` (a proxy in the foreground) until it accepts on ``port``; stopped at the
    end (SIGTERM, its process group killed past 5 s)."""
    with _running_with(argv, port, log, None) as proc:
        yield proc


@contextlib.contextmanager
def _running_with(
    argv: list[str], port: int, log: Path, env: dict[str, str] | None
) -> Iterator[subprocess.Popen[bytes]]:
    """``_running`` with the environment ``env`` (None: this one's)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:

        def listening() -> bool:
            assert proc.poll() is None, f"{argv[0]} exited:\n{log.read_text()}"
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
                return True
            return False

        until(listening, 10, f"{argv[0]} listens on {port} (its output: {log})")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):  # nginx's workers, if any were left
            os.killpg(proc.pid, signal.SIGKILL)


class _Stream:
    """The bytes of one SSE response, read as they come (decoded with ``decoder``)."""

    def __init__(self, response: httpx.Response, decoder: StreamDecoder | None = None) -> None:
        self.response = response
        self.raw = bytearray()
        self._chunks: AsyncIterator[bytes] = response.aiter_raw()
        self.decoder = decoder

    async def until(self, done: Callable[[bytes], bool], timeout: float) -> float:
        """Read until ``done(raw)``; the time it became true (``time.monotonic``)."""
        deadline = time.monotonic() + timeout
        while not done(bytes(self.raw)):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not in {timeout} s; the stream so far: {bytes(self.raw)!r}"
            try:
                chunk = await asyncio.wait_for(anext(self._chunks), remaining)
                self.raw += chunk if self.decoder is None else self.decoder.feed(chunk)
            except TimeoutError:
                continue  # the assert above says what was seen
        return time.monotonic()


async def _through_proxy(base: str, verify: ssl.SSLContext | bool, http2: bool) -> None:
    async with httpx.AsyncClient(base_url=base, verify=verify, http2=http2, timeout=10) as client:
        query = {"topic": "deploy"}
        accept = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
        async with client.stream("GET", "/events", params=query, headers=accept) as response:
            assert response.status_code == 200, await response.aread()
            assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["sse-fast-resume"] == "none"
            assert "content-encoding" not in response.headers, "the proxy compresses the stream"
            stream = _Stream(response)
            await stream.until(lambda raw: b": \n\n" in raw, 5 * HEARTBEAT + 2)  # a heartbeat
            published = time.monotonic()
            answer = await client.post("/publish", json={"topic": "deploy", "data": {"n": 1}})
            assert answer.status_code == 200, answer.text
            (first_id,) = answer.json()["ids"]
            arrived = await stream.until(lambda raw: b'data: {"n":1}\n' in raw, 5)
            assert arrived - published < PROMPT, f"the event took {arrived - published:.3f} s"
            assert f"id: {first_id}\n".encode() in stream.raw
        # gone; then back with the id of the last event seen: what was missed comes first
        answer = await client.post("/publish", json={"topic": "deploy", "data": {"n": 2}})
        assert answer.status_code == 200, answer.text
        resume = {**accept, "Last-Event-ID": first_id}
        async with client.stream("GET", "/events", params=query, headers=resume) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["sse-fast-resume"] == "resumed"
            await _Stream(response).until(lambda raw: b'data: {"n":2}\n' in raw, 5)


async def _compressed_through_proxy(base: str, verify: ssl.SSLContext | bool, http2: bool) -> None:
    """A stream that asks for gzip, then zstd: the server's coding comes through (not
    taken off, not compressed twice), and the heartbeat and an event published through
    the proxy arrive decoded as they are written."""
    async with httpx.AsyncClient(base_url=base, verify=verify, http2=http2, timeout=10) as client:
        for n, coding in enumerate(["gzip", "zstd"], start=10):
            topic = {"topic": f"deploy-{coding}"}
            asked = {"Accept": "text/event-stream", "Accept-Encoding": coding}
            async with client.stream("GET", "/events", params=topic, headers=asked) as response:
                assert response.status_code == 200, await response.aread()
                assert response.headers.get("content-encoding") == coding, response.headers
                stream = _Stream(response, StreamDecoder(coding))
                await stream.until(lambda raw: b": \n\n" in raw, 5 * HEARTBEAT + 2)
                published = time.monotonic()
                event = {"topic": topic["topic"], "data": {"n": n}}
                answer = await client.post("/publish", json=event)
                assert answer.status_code == 200, answer.text
                line = b'data: {"n":%d}\n' % n
                arrived = await stream.until(lambda raw, line=line: line in raw, 5)
                assert arrived - published < PROMPT, f"{coding}: {arrived - published:.3f} s"


@contextlib.contextmanager
def _nginx(tmp_path: Path, upstream: int) -> Iterator[tuple[str, ssl.SSLContext]]:
    """The page's nginx block in front of the server on port ``upstream``, running: its
    base URL and the TLS context that trusts its certificate."""
    nginx = _program("nginx", "nginx")
    cert, key = self_signed(tmp_path)
    port = free_port()
    block = _block("nginx")
    block = _substitute(block, r"^(\s*listen\s+)\d+\b", rf"\g<1>{HOST}:{port}", 1)
    block = _substitute(block, r"^(\s*server\s+)[\d.]+:\d+", rf"\g<1>{HOST}:{upstream}")
    block = _substitute(block, r"^(\s*ssl_certificate\s+)\S+;", rf"\g<1>{cert};", 1)
    block = _substitute(block, r"^(\s*ssl_certificate_key\s+)\S+;", rf"\g<1>{key};", 1)
    temporary = "".join(
        f"    {kind}_temp_path {tmp_path / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        # as root its workers would otherwise be nobody, who cannot enter tmp_path
        ("user root;\n" if os.geteuid() == 0 else "")
        + "events {}\n\nhttp {\n"
        + f"    access_log {tmp_path / 'access.log'};\n{temporary}\n{block}}}\n"
    )
    common = ["-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")]
    pid = f"pid {tmp_path / 'nginx.pid'};"
    checked = subprocess.run(
        [nginx, "-t", *common, "-g", pid], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stderr
    # nginx >= 1.25.1 warns that `listen ... http2` is deprecated (the page says so)
    complaints = [
        line
        for line in checked.stderr.splitlines()
        if re.search(r"\[(warn|emerg|alert|crit)\]", line) and "http2" not in line
    ]
    assert not complaints, checked.stderr
    argv = [nginx, *common, "-g", f"daemon off; {pid}"]
    with _running(argv, port, tmp_path / "nginx.out"):
        try:
            yield f"https://{HOST}:{port}", ssl.create_default_context(cafile=str(cert))
        except BaseException:
            print((tmp_path / "error.log").read_text()[-3000:])
            raise


@contextlib.contextmanager
def _haproxy(tmp_path: Path, upstream: int) -> Iterator[str]:
    """The page's HAProxy block in front of the server on port ``upstream``, running:
    its base URL."""
    haproxy = _program("haproxy", "haproxy")
    port = free_port()
    block = _block("haproxy")
    block = _substitute(block, r"^(\s*bind\s+)\S*:\d+", rf"\g<1>{HOST}:{port}", 1)
    address = rf"\g<1>{HOST}:{upstream}"
    block = _substitute(block, r"^(\s*server\s+\S+\s+)[\d.]+:\d+", address)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(block)
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "WARNING" not in output and "ALERT" not in output, output
    with _running([haproxy, "-f", str(cfg), "-db"], port, tmp_path / "haproxy.out"):
        yield f"http://{HOST}:{port}"


def test_nginx_block(tmp_path: Path) -> None:
    with (
        ServerProcess("--heartbeat-interval", str(HEARTBEAT)) as server,
        _nginx(tmp_path, server.port) as (base, context),
    ):
        asyncio.run(_through_proxy(base, context, http2=True))
        asyncio.run(_compressed_through_proxy(base, context, http2=True))


def test_haproxy_block(tmp_path: Path) -> None:
    with (
        ServerProcess("--heartbeat-interval", str(HEARTBEAT)) as server,
        _haproxy(tmp_path, server.port) as base,
    ):
        asyncio.run(_through_proxy(base, False, http2=False))
        asyncio.run(_compressed_through_proxy(base, False, http2=False))


def test_caddy_block(tmp_path: Path) -> None:
    with (
        ServerProcess("--heartbeat-interval", str(HEARTBEAT)) as server,
        _caddy(tmp_path, server.port) as base,
    ):
        asyncio.run(_through_proxy(base, False, http2=False))
        asyncio.run(_compressed_through_proxy(base, False, http2=False))


#: where the client of the forwarding tests connects from: not the proxies' address
#: (127.0.0.1, trusted), nor in ops_networks (127.0.0.1/32 there)
CLIENT = "127.0.0.5"
OPS_TOKEN = "ops-token-of-the-deployment-tests"


def _behind_the_proxy() -> ServerProcess:
    """The server as the page says to run it behind its proxy (``--trusted-proxies`` the
    proxy's address), the operations endpoints for the proxy's machine alone, one stream
    per client address."""
    return ServerProcess(
        trusted_proxies=HOST,
        ops_networks=f"{HOST}/32",
        ops_token=OPS_TOKEN,
        max_connections_per_ip=1,
        connect_rate_per_ip=0,
    )


async def _client_cannot_choose_its_address(
    base: str, verify: ssl.SSLContext | bool, http2: bool
) -> None:
    """A client that sends its own ``X-Forwarded-For`` through the proxy: the ops endpoint
    stays 401, and the per-address limit counts its real address (``CLIENT``)."""
    transport = httpx.AsyncHTTPTransport(local_address=CLIENT, verify=verify, http2=http2)
    async with httpx.AsyncClient(base_url=base, transport=transport, timeout=10) as client:
        for lines in (["127.0.0.1"], ["127.0.0.1", "127.0.0.1"], ["127.0.0.1, 127.0.0.1"]):
            spoofed = [("X-Forwarded-For", line) for line in lines]
            answer = await client.get("/metrics", headers=spoofed)
            assert answer.status_code == 401, (lines, answer.text)
        bearer = {"Authorization": f"Bearer {OPS_TOKEN}", "X-Forwarded-For": "127.0.0.1"}
        assert (await client.get("/metrics", headers=bearer)).status_code == 200
        query = {"topic": "deploy"}
        first = {"Accept": "text/event-stream", "X-Forwarded-For": "203.0.113.1"}
        async with client.stream("GET", "/events", params=query, headers=first) as response:
            assert response.status_code == 200, await response.aread()
            second = [("X-Forwarded-For", "203.0.113.2"), ("X-Forwarded-For", "203.0.113.3")]
            refused = await client.get("/events", params=query, headers=second)
            # told to come back (a 200 ended at once), as a browser retries it
            assert refused.status_code == 200, refused.text
            assert refused.headers["sse-fast-come-back"] == "max-connections-per-ip"
            (event,) = Parser().feed(refused.content)
            assert event.event == "sse-fast-disconnect"
            assert f"too many streams from {CLIENT} " in json.loads(event.data)["message"]


def test_nginx_block_keeps_the_client_address(tmp_path: Path) -> None:
    """nginx's ``$proxy_add_x_forwarded_for`` appends the client's address to what the
    client sent: the server reads it right to left and stops at the client."""
    with _behind_the_proxy() as server, _nginx(tmp_path, server.port) as (base, context):
        asyncio.run(_client_cannot_choose_its_address(base, context, http2=True))


def test_caddy_block_keeps_the_client_address(tmp_path: Path) -> None:
    """Caddy sets ``X-Forwarded-For`` to the client's address, dropping what the client
    sent (it trusts no proxy before it)."""
    with _behind_the_proxy() as server, _caddy(tmp_path, server.port) as base:
        asyncio.run(_client_cannot_choose_its_address(base, False, http2=False))


def test_haproxy_block_keeps_the_client_address(tmp_path: Path) -> None:
    """HAProxy's ``option forwardfor`` adds a line of its own after the client's lines:
    the server reads every line, so the client's own first line is not its address."""
    with _behind_the_proxy() as server, _haproxy(tmp_path, server.port) as base:
        asyncio.run(_client_cannot_choose_its_address(base, False, http2=False))


@contextlib.contextmanager
def _caddy(tmp_path: Path, upstream: int) -> Iterator[str]:
    """The page's Caddy block in front of the server on port ``upstream``, running: its
    base URL. Only the site address (plain HTTP on a free port: no certificate to get)
    and the upstreams are replaced; the admin endpoint is off (tests run side by side)."""
    caddy = _program("caddy", "caddy")
    port = free_port()
    block = _block("caddy")
    block = _substitute(block, r"^sse\.example\.com \{", f"http://{HOST}:{port} {{", 1)
    block = _substitute(block, r"^(\s*reverse_proxy) [\d.: ]+\{", rf"\1 {HOST}:{upstream} {{", 1)
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text("{\n\tadmin off\n}\n\n" + block)
    home = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    env = {**os.environ, **home}
    checked = subprocess.run(
        [caddy, "validate", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    argv = [caddy, "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
    with _running_with(argv, port, tmp_path / "caddy.out", env):
        yield f"http://{HOST}:{port}"


def _unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's syntax: sections, ``Key=value`` lines (a key may repeat), comments only
    on lines of their own, a trailing backslash continues the line."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    lines = iter(text.splitlines())
    for line in lines:
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit(tmp_path: Path) -> None:
    analyze = _program("systemd-analyze", "systemd")
    text = _block("ini")
    binary = Path(sys.executable).parent / "sse-fast"  # this environment's, not a shim
    assert binary.exists(), f"no {binary}: pip install -e . first"
    unit = tmp_path / "sse-fast.service"
    unit.write_text(
        _substitute(text, r"^ExecStart=/opt/sse-fast/bin/sse-fast ", f"ExecStart={binary} ", 1)
    )
    verified = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    about_it = [line for line in verified.stderr.splitlines() if "sse-fast.service" in line]
    assert verified.returncode == 0 and not about_it, verified.stderr

    service = _unit(text)["Service"]
    for key, values in service.items():
        for value in values:  # systemd reads "15   # comment" as that whole value
            assert "#" not in value, f"[Service] {key}={value}: a comment must be on its own line"
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "sse-fast" and argv[1] == "serve", exec_start
    helped = subprocess.run(
        [sys.executable, "-m", "sse_fast", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    known = set(re.findall(r"(--[a-z][a-z0-9-]*)", helped.stdout))
    flags = [arg for arg in argv[2:] if arg.startswith("--")]
    assert flags and set(flags) <= known, f"unknown flags: {set(flags) - known}"
    drain = Settings().drain_timeout
    if "--drain-timeout" in argv:
        drain = float(argv[argv.index("--drain-timeout") + 1])
    assert service.get("KillSignal", ["SIGTERM"]) == ["SIGTERM"]  # what starts the drain
    assert service.get("KillMode", ["control-group"]) in (["control-group"], ["mixed"])
    (stop_timeout,) = service["TimeoutStopSec"]
    # the server exits within drain_timeout plus a second (docs/operations/drain.md)
    assert float(stop_timeout) >= drain + 2, f"TimeoutStopSec={stop_timeout}, drain {drain} s"

    # systemd's stop: SIGTERM to every process of the service at once (main, workers, relay)
    with ServerProcess("--workers", "2") as server:
        assert server.proc is not None

        async def stop() -> float:
            client = server.client("deploy", record=True)
            await client.connect()
            assert server.proc is not None
            os.killpg(server.proc.pid, signal.SIGTERM)
            started = time.monotonic()
            while not client.closed:
                await asyncio.wait_for(client.events(), drain + 2)
            assert b'data: {"reason":"draining"}' in client.raw, bytes(client.raw)
            return started

        started = asyncio.run(stop())
        assert server.proc.wait(float(stop_timeout)) == 0, server.output()
        assert time.monotonic() - started < drain + 1, server.output()
