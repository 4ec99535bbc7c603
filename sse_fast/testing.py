"""A real ``sse-fast serve`` process for your own tests (and ours).

    from sse_fast.testing import ServerProcess, collect

    with ServerProcess("--workers", "2", heartbeat_interval=1) as server:
        client = server.client("orders")          # an SSE stream of topic "orders"
        ...

``ServerProcess(*args, **settings)`` starts ``sse-fast serve`` on a free
loopback port with ``args`` as flags and ``settings`` as ``SSE_FAST_*``
variables, waits until ``/readyz`` answers (and, with several workers, until
``/stats`` has every worker's figures), and on exit stops it with SIGTERM
(its drain), killing its process group past a timeout. A clean exit that left a
worker or the relay running fails. Each server gets a data directory of its own
(removed on exit) unless ``data_dir=`` names one, to restart on the same
history. For load tests its defaults differ from the server's: anonymous
publishing is allowed and the per-IP and rate limits are off (pass
``allow_anonymous_publish=0`` etc. to test those).

The HTTP/1.1 client parts the tests use are here too: ``http_request`` (one
request, its status, headers and body), ``SSEClient`` (a raw stream, parsed),
``ChunkedDecoder``, ``read_head`` and ``HTTPResponseError``.

``RedisServer`` runs a real ``redis-server`` (no persistence) on a free port
for tests of several nodes on Redis.

As a pytest plugin (``pytest_plugins = ["sse_fast.testing"]`` in a
``conftest.py``) it gives the fixture ``sse_fast_server``: a started server for
the test, stopped after it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import http.client
import inspect
import itertools
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ._core import ParsedEvent
from ._http11 import ChunkedDecoder, HTTPResponseError, SSEClient, http_request, read_head
from ._loopback import HOST, free_port
from ._redis_servers import RedisSentinel, RedisServer

__all__ = [
    "HOST",
    "ChunkedDecoder",
    "HTTPResponseError",
    "RedisSentinel",
    "RedisServer",
    "SSEClient",
    "ServerProcess",
    "collect",
    "free_port",
    "http_request",
    "parse_ss",
    "read_head",
    "rss_kb",
    "sse_fast_server",
    "tcp_sockets",
    "wait_for",
]

_LOGS = itertools.count()  # a server log's number within this process
#: the logs and data directories of servers started and not yet removed: those of a
#: server a test stopped without leaving its ``with`` (a restart's first server) go
#: when the process ends
_LEFT: set[str] = set()


@atexit.register
def _remove_left() -> None:
    for path in list(_LEFT):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    _LEFT.clear()


def _running_in_group(pgid: int) -> list[str]:
    """The processes of process group ``pgid`` that have not exited, as ``"pid command"``
    lines (zombies left out: see ``ServerProcess._group``)."""
    if not os.path.isdir("/proc/self"):
        out = subprocess.run(
            ["pgrep", "-a", "-g", str(pgid)], capture_output=True, text=True, check=False
        )
        return out.stdout.splitlines()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
            state, _ppid, group = stat[stat.rindex(b")") + 2 :].split(b" ", 3)[:3]
            if int(group) != pgid or state == b"Z":
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):  # gone meanwhile
            continue
        found.append(f"{entry.name} {command}")
    return found


class ServerProcess:
    """A real ``sse-fast serve`` (or another ``command``) on a free loopback port, started by
    ``with`` once ready and stopped at its end (see the module docstring)."""

    def __init__(
        self,
        *args: str,
        command: list[str] | None = None,
        port: int = 0,
        ready_path: str = "/readyz",
        ready_timeout: float = 20.0,
        **env: Any,
    ) -> None:
        """``sse-fast serve`` with ``args``; or ``command`` (``{port}`` is replaced), e.g.
        the app under another ASGI server. ``env`` are settings (``SSE_FAST_*``).
        Started means ``ready_path`` answers 200 (``/healthz`` for a server that is
        not meant to be ready, e.g. a mirror whose upstream refuses)."""
        self.port = port or free_port()
        self.ready_path = ready_path
        #: seconds to wait for readiness (more for a big data directory to load)
        self.ready_timeout = ready_timeout
        self.args = ["--port", str(self.port), "--log-level", "info", *args]
        self.command = [sys.executable, "-m", "sse_fast", "serve", *self.args]
        if command is not None:
            self.command = [part.replace("{port}", str(self.port)) for part in command]
        env.setdefault("allow_anonymous_publish", "1")  # the security tests say otherwise
        env.setdefault("max_connections_per_ip", "0")  # the load tests come from few addresses
        env.setdefault("connect_rate_per_ip", "0")
        env.setdefault("publish_rate", "0")
        #: a data directory of its own, removed on exit, unless the test gives one
        #: (``data_dir=``, e.g. to restart a server on the same history)
        self.own_data_dir = ""
        if "data_dir" not in env and "SSE_FAST_DATA_DIR" not in os.environ:
            self.own_data_dir = env["data_dir"] = tempfile.mkdtemp(prefix="sse-fast-data-")
        self.env = {**os.environ, **{f"SSE_FAST_{k.upper()}": str(v) for k, v in env.items()}}
        self.proc: subprocess.Popen[bytes] | None = None
        # unique across processes: a port alone is not (a test in a network namespace
        # of its own can draw the port another test's server holds, and /tmp is shared)
        self.log_path = os.path.join(
            tempfile.gettempdir(), f"sse-fast-test-{self.port}-{os.getpid()}-{next(_LOGS)}.log"
        )

    def __enter__(self) -> ServerProcess:
        self.log = open(self.log_path, "wb")
        _LEFT.add(self.log_path)
        if self.own_data_dir:
            _LEFT.add(self.own_data_dir)
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: workers and relay included
        )
        self.left_behind: list[str] = []
        deadline = time.monotonic() + self.ready_timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self.log.close()
                    raise RuntimeError(f"server exited early:\n{self.output()}")
                try:
                    status, _ = self._probe(self.ready_path)
                    if status == 200 and self._all_workers_ready(deadline):
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            raise RuntimeError(f"server did not become ready:\n{self.output()}")
        except BaseException:  # whatever stops the wait (a probe's bug, ^C): no server left
            self.stop()
            self.remove_files()  # __exit__ does not run: its log and data go here
            raise

    def _all_workers_ready(self, deadline: float) -> bool:
        """``/readyz`` answers for the worker that took the request; with several
        workers, wait until ``/stats`` has every worker's figures, none of them
        ``starting`` (when ``/stats`` is closed to us, as with an admin token, one ready
        worker has to do; a 503 is a worker still starting: asked again)."""
        if self.workers() <= 1:
            return True  # nothing to wait for (and no /stats request to count)
        while time.monotonic() < deadline:
            status, body = self._probe("/stats")
            if status == 503:
                time.sleep(0.05)
                continue
            if status != 200:
                return True
            stats = json.loads(body)
            workers = stats.get("workers", ())
            # a worker on Redis answers gathers before its start is done (``starting``)
            if len(workers) >= stats.get("workers_expected", 1) and not any(
                w.get("starting") for w in workers
            ):
                return True
            time.sleep(0.05)
        return False

    @property
    def tls(self) -> bool:
        """Serving HTTPS (``--ssl-certfile`` or ``ssl_certfile=``)."""
        return "--ssl-certfile" in self.command or bool(self.env.get("SSE_FAST_SSL_CERTFILE"))

    @property
    def url(self) -> str:
        """The server's base URL (``https://`` when it serves TLS)."""
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    def _probe(self, path: str) -> tuple[int, bytes]:
        """GET ``path``: (status, body); blocking (not asyncio.run: callable where a
        loop runs). Over TLS without checking the certificate (a test's own,
        self-signed)."""
        if self.tls:
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                HOST, self.port, timeout=2, context=ssl._create_unverified_context()
            )
        else:
            connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
        try:
            connection.request("GET", path)
            reply = connection.getresponse()
            return reply.status, reply.read()
        except http.client.HTTPException as exc:
            raise OSError(str(exc)) from exc
        finally:
            connection.close()

    def workers(self) -> int:
        """The number of workers asked for (``--workers`` or ``workers=``)."""
        args = self.command
        for flag, value in itertools.pairwise(args):
            if flag == "--workers":
                return int(value)
        return int(self.env.get("SSE_FAST_WORKERS", "1"))

    def output(self) -> str:
        """What the server wrote to stdout and stderr so far."""
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the server and wait; past ``timeout`` its whole process group is
        killed. Processes of the group still alive once it exited (a worker, the
        relay) are killed too and named in ``left_behind``."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.proc.wait()
        deadline = time.monotonic() + 5  # Granian's workers exit just after the main
        while self._group() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.left_behind += self._group()
        if self.left_behind:
            self._kill_group()
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def _group(self) -> list[str]:
        """The processes of the server's process group still running ("pid command"),
        read from ``/proc`` (``pgrep`` elsewhere). An exited process its parent has not
        reaped yet (a zombie) is not one: once the main process is gone, its children's
        reaping is the machine's init's, which some do every 2 s (a multiprocessing
        resource tracker, exited with the main process, made every stop of a
        several-worker server wait for that)."""
        assert self.proc is not None
        return _running_in_group(self.proc.pid)

    def _kill_group(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def __exit__(self, kind: object, *exc: object) -> None:
        self.stop()
        if kind is None:  # a failing test keeps its own error
            assert not self.left_behind, f"the server left processes behind: {self.left_behind}"
        self.remove_files()

    def remove_files(self) -> None:
        """Its log (each server's has a name of its own) and the data directory it made."""
        if getattr(self, "log", None) is not None:
            self.log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_path)
        _LEFT.discard(self.log_path)
        if self.own_data_dir:
            shutil.rmtree(self.own_data_dir, ignore_errors=True)
            _LEFT.discard(self.own_data_dir)

    def worker_pids(self) -> list[int]:
        """The pids of the server process's children (its workers, and the relay's process)."""
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]

    # ---- helpers used by tests (all bounded in time)

    async def publish(
        self, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """``POST /publish`` of ``body`` (JSON unless ``headers`` say otherwise): (status, headers,
        body)."""
        return await http_request(
            HOST,
            self.port,
            "POST",
            "/publish",
            body,
            {"Content-Type": "application/json", **(headers or {})},
        )

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """``GET path``: (status, headers, body)."""
        return await http_request(HOST, self.port, "GET", path)

    def client(self, *topics: str, **kwargs: Any) -> SSEClient:
        """An ``SSEClient`` of ``topics`` on this server (``kwargs``: ``SSEClient``'s), not
        connected yet."""
        return SSEClient(HOST, self.port, list(topics), **kwargs)


async def collect(
    client: SSEClient,
    count: int,
    timeout: float = 10.0,
    until: Callable[[SSEClient], bool] | None = None,
) -> list[ParsedEvent]:
    """Read until ``count`` events (or ``until`` holds, or the stream ends)."""
    events: list[ParsedEvent] = []
    deadline = time.monotonic() + timeout
    while len(events) < count and not client.closed and not (until and until(client)):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"got {len(events)} of {count} events: {events[-3:]}")
        async with asyncio.timeout(remaining):
            events += await client.events()
    return events


async def wait_for(
    check: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition not met in time",
) -> Any:
    """Wait until ``check()`` (a function or a coroutine function) gives something true,
    looking every ``interval`` seconds, and return it; ``TimeoutError`` saying ``what``
    past ``timeout`` seconds. The interval is only how often to look: a test waits on a
    condition with a deadline, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} (within {timeout:g} s)")
        await asyncio.sleep(interval)


def rss_kb(pid: int) -> int:
    """The resident memory of process ``pid`` (``VmRSS``, KiB); ``RuntimeError`` when it has none
    (a zombie)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _fixture() -> Any:
    try:
        import pytest
    except ImportError:  # pragma: no cover - only pytest loads this as a plugin
        return None

    @pytest.fixture
    def sse_fast_server() -> Any:
        """A running ``sse-fast serve`` (``ServerProcess`` defaults), stopped after the test."""
        with ServerProcess() as server:
            yield server

    return sse_fast_server


#: the pytest fixture: a started ``ServerProcess()``, stopped after the test (None without pytest)
sse_fast_server = _fixture()


# ---------------------------------------------------------------- kernel memory

_SKMEM = re.compile(r"skmem:\(([^)]*)\)")
_FIELD = re.compile(r"([a-z]+)(\d+)")
_ENDPOINT = re.compile(r"^(?:[A-Z][A-Z-]*\s+)?\d+\s+\d+\s+\S+:(\d+)\s+\S+:(\d+|\*)")


def parse_ss(text: str) -> list[dict[str, int]]:
    """The sockets of ``ss -tmn`` output (with or without its state column): each its
    ``local_port``, ``peer_port`` and skmem fields (``r`` receive queue, ``rb`` receive
    buffer, ``t``, ``tb`` send buffer, ``f``, ``w`` bytes queued to send, ``o``, ``bl``,
    ``d``): what the kernel holds for each connection."""
    out: list[dict[str, int]] = []
    current: dict[str, int] | None = None
    for line in text.splitlines():
        endpoint = _ENDPOINT.match(line)
        if endpoint:
            peer = 0 if endpoint[2] == "*" else int(endpoint[2])  # "*": a listener
            current = {"local_port": int(endpoint[1]), "peer_port": peer}
            out.append(current)
        memory = _SKMEM.search(line)
        if memory and current is not None:
            current.update({name: int(value) for name, value in _FIELD.findall(memory[1])})
    return out


def tcp_sockets(port: int, side: str = "sport") -> list[dict[str, int]]:
    """Established TCP sockets whose ``side`` (``sport``: the server's; ``dport``: its
    clients') is ``port``, with their memory (``parse_ss``)."""
    text = subprocess.run(
        ["ss", "-tmnH", "state", "established", f"( {side} = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return parse_ss(text)
