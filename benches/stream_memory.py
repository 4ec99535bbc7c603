"""Memory of one idle SSE stream: the Granian floor, ``sse-fast serve``, and where it goes.

    python -m benches.stream_memory                 # N = 1,000 / 5,000 / 10,000
    python -m benches.stream_memory --quick         # N = 200 / 1,000, smoke run
    python -m benches.stream_memory --streams 4000  # N = 400 / 2,000 / 4,000

Writes ``benches/results/stream_memory.md`` and ``.json`` (``--out-dir``; a
temporary directory with ``--quick``). Three parts, in one run:

(a) floor: a bare Granian ASGI app (``floor_app`` below) that answers ``GET`` with
    the SSE headers and one frame, then holds the stream waiting on
    ``receive()``. No state of ours: what Granian + the event loop cost.
(b) ``sse-fast serve`` (``python -m sse_fast serve``, i.e. ``cli._granian``'s
    settings: ASGI, uvloop, one worker, HTTP/1 buffer 8 KiB, backpressure =
    the file limit less the reserved descriptors), persistence ``off`` and
    the default (``interval``, in a temporary data directory), all streams on
    one topic and one topic per stream. The per-IP limits are off
    (``max_connections_per_ip=0``, ``connect_rate_per_ip=0``): every client is
    127.0.0.1.
    Both (a) and (b): the RSS of the server's processes (Granian's main process
    + its worker, from /proc) at 0 streams and after holding N idle streams,
    N growing within one server run (0 -> N1 -> N2 -> N3); per stream =
    (RSS at N - RSS at 0) / N. The clients are a separate process
    (``--client``, hidden: plain asyncio sockets, one request each, read the
    response head and the first frame, then idle).
(c) in process, tracemalloc + gc: an ``sse_fast.app.App`` (persistence off) with
    N idle streams attached through its ASGI interface, with a fake eager server
    (``send`` returns a finished ``PyEmptyAwaitable``, as Granian's; ``receive()``
    returns a future, as Granian's ``PyFutureAwaitable`` is one for asyncio: done
    with the empty request body once, then pending). Python
    allocations per stream, grouped by allocation site (innermost frame), by
    the first ``sse_fast/`` frame of the traceback, and the new gc-tracked
    objects per stream by type (count and ``sys.getsizeof``). The fake
    server's own objects (the scope, the handler's task, the receive futures)
    are shown apart: Granian holds their equivalents too (partly in Rust).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from sse_fast._compose import ALLOCATOR_VARIABLE, allocator_options

from . import system
from .fanout_apps import answer_lifespan

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benches" / "results"
HOST = "127.0.0.1"
MARKER = "<!-- hand-written reading: kept when the tables above are regenerated -->"
SETTLE_S = 2.0  # after the last stream is up, before reading RSS

# --------------------------------------------------------------------------- (a) the floor app

_FLOOR_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]
_FLOOR_START = {"type": "http.response.start", "status": 200, "headers": _FLOOR_HEADERS}
_FLOOR_FRAME = {"type": "http.response.body", "body": b"retry: 1000\nid: 0\n\n", "more_body": True}


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """SSE headers and one frame on any GET, then wait for ``http.disconnect``."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok\n"})
        return
    await send(_FLOOR_START)
    await send(_FLOOR_FRAME)
    while (await receive())["type"] != "http.disconnect":
        pass


_RSGI_HEADERS = [(k.decode(), v.decode()) for k, v in _FLOOR_HEADERS]


async def floor_rsgi(scope: Any, protocol: Any) -> None:
    """The floor app over Granian's RSGI interface: the same answer, no ASGI scope,
    messages or receive futures (what the interface itself costs per stream)."""
    if scope.path == "/healthz":
        protocol.response_str(200, [], "ok\n")
        return
    transport = protocol.response_stream(200, _RSGI_HEADERS)
    await transport.send_bytes(_FLOOR_FRAME["body"])
    await protocol.client_disconnect()


# --------------------------------------------------------------------------- the client process


async def _client(port: int, path_template: str) -> None:
    """Hold streams: on each stdin line ``add K`` open K more (request, head, first
    frame), then print ``ok <open> <failed>``; on EOF or ``quit``, close them all."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = asyncio.get_running_loop()
    held: list[asyncio.StreamWriter] = []
    failed = 0

    async def one(i: int, gate: asyncio.Semaphore) -> None:
        nonlocal failed
        async with gate:
            try:
                reader, writer = await asyncio.open_connection(HOST, port, limit=4096)
                path = path_template.format(i=i)
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n".encode()
                )
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head[:40])
                body = b""
                while b"\n\n" not in body:
                    chunk = await asyncio.wait_for(reader.read(4096), 30)
                    if not chunk:
                        raise RuntimeError("closed")
                    body += chunk
                held.append(writer)
            except Exception:
                failed += 1

    count = 0
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        if parts[0] == "add":
            k = int(parts[1])
            gate = asyncio.Semaphore(100)
            await asyncio.gather(*(one(count + i, gate) for i in range(k)))
            count += k
            print(f"ok {len(held)} {failed}", flush=True)
    for writer in held:
        writer.close()
    await asyncio.sleep(0.5)


# --------------------------------------------------------------------------- (a) + (b) RSS


def _children(pid: int) -> list[int]:
    return system.process_tree(pid)[1:]


def _rss_kib(pid: int) -> int:
    return system.rss_kb([pid])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(port: int, timeout: float = 30.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not ready within {timeout} s")


def _capacity() -> int:
    from sse_fast._compose import RESERVED_FDS

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(1, soft - RESERVED_FDS)


def floor_command(port: int, interface: str = "asgi") -> tuple[list[str], dict[str, str]]:
    from sse_fast.settings import Settings

    s = Settings()
    argv = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        interface,
        "--loop",
        "uvloop",
        "--http",
        s.http,
        "--workers",
        "1",
        "--backlog",
        str(s.backlog),
        "--backpressure",
        str(_capacity()),
        "--runtime-threads",
        str(s.runtime_threads),
        "--http1-buffer-size",
        str(s.http1_buffer_size),
        "--http1-header-read-timeout",
        str(max(1, round(s.header_timeout * 1000))),
        "--log-level",
        "warning",
        "--no-access-log",
        "--host",
        HOST,
        "--port",
        str(port),
        "benches.stream_memory:floor_app"
        if interface == "asgi"
        else "benches.stream_memory:floor_rsgi",
    ]
    return argv, {ALLOCATOR_VARIABLE: allocator_options(s.allocator_decay)}  # as serve sets it


def _serve_command(port: int, persistence: str, data_dir: str) -> tuple[list[str], dict[str, str]]:
    env = {
        "SSE_FAST_HOST": HOST,
        "SSE_FAST_PORT": str(port),
        "SSE_FAST_WORKERS": "1",
        "SSE_FAST_LOG_LEVEL": "warning",
        "SSE_FAST_MAX_CONNECTIONS_PER_IP": "0",
        "SSE_FAST_CONNECT_RATE_PER_IP": "0",
        "SSE_FAST_DATA_DIR": data_dir,
    }
    if persistence != "default":
        env["SSE_FAST_PERSISTENCE"] = persistence
    return [sys.executable, "-m", "sse_fast", "serve"], env


def _env(extra: dict[str, str]) -> dict[str, str]:
    drop = ("SSE_FAST_", "GRANIAN_", ALLOCATOR_VARIABLE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_rss(
    name: str,
    kind: str,
    steps: list[int],
    one_topic: bool,
    persistence: str,
    decay: str = "",
) -> dict[str, Any]:
    """One server, streams added in ``steps``; RSS of its processes at each.
    ``decay``: ``sse-fast serve --allocator-decay`` (its default when empty)."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="stream_memory_") as data_dir:
        if kind in ("floor", "floor-rsgi"):
            argv, extra = floor_command(port, "rsgi" if kind == "floor-rsgi" else "asgi")
        else:
            argv, extra = _serve_command(port, persistence, data_dir)
        if decay:
            extra["SSE_FAST_ALLOCATOR_DECAY"] = decay
        server = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=_env(extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        client = None
        try:
            _wait_ready(port)
            time.sleep(SETTLE_S)
            pids = [server.pid, *_children(server.pid)]
            workers = pids[1:]
            base = {pid: _rss_kib(pid) for pid in pids}
            path = "/events?topic=t" if one_topic else "/events?topic=t{i}"
            client = subprocess.Popen(
                [sys.executable, "-m", "benches.stream_memory", "--client", str(port), path],
                cwd=REPO_ROOT,
                env=_env({}),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert client.stdin is not None and client.stdout is not None
            rows = []
            done = 0
            for n in steps:
                started = time.monotonic()
                client.stdin.write(f"add {n - done}\n")
                client.stdin.flush()
                reply = client.stdout.readline().split()
                connect_s = time.monotonic() - started
                done = n
                time.sleep(SETTLE_S)
                now = {pid: _rss_kib(pid) for pid in pids}
                total = sum(now.values()) - sum(base.values())
                worker = sum(now[p] - base[p] for p in workers)
                held, failed = int(reply[1]), int(reply[2])
                rows.append(
                    {
                        "streams": n,
                        "held": held,
                        "failed": failed,
                        "connect_s": round(connect_s, 2),
                        "rss_base_kib": sum(base.values()),
                        "rss_kib": sum(now.values()),
                        "delta_kib": total,
                        "per_stream_kb": round(total * 1024 / max(1, held) / 1000, 2),
                        "worker_per_stream_kb": round(worker * 1024 / max(1, held) / 1000, 2),
                    }
                )
                print(f"  {name}: {rows[-1]}", file=sys.stderr, flush=True)
            client.stdin.write("quit\n")
            client.stdin.flush()
            client.wait(30)
            return {
                "name": name,
                "kind": kind,
                "one_topic": one_topic,
                "persistence": persistence,
                "allocator_decay": decay,
                "processes": len(pids),
                "rows": rows,
            }
        finally:
            if client is not None and client.poll() is None:
                client.kill()
                client.wait(5)
            _stop(server)


# --------------------------------------------------------------------------- (c) tracemalloc


class PyEmptyAwaitable:  # the type name the hub recognises as Granian's finished write
    __slots__ = ()

    def __await__(self) -> Any:
        return
        yield


_WRITTEN = PyEmptyAwaitable()


def _fake_send(message: Any) -> PyEmptyAwaitable:
    return _WRITTEN


_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


class _FakeConnection:
    """The server side of one stream: its ``receive`` (scope made by the caller).

    Like Granian 2.8's (a ``PyFutureAwaitable``, for which ``asyncio.isfuture``
    is true, so ``asyncio.ensure_future`` wraps it in no task), ``receive()``
    returns a future: done with the empty request body the first time, then
    one that stays pending until the stream is let go (``release``)."""

    __slots__ = ("asked", "pending")

    def __init__(self) -> None:
        self.asked = False
        self.pending: asyncio.Future[dict[str, Any]] | None = None

    def receive(self) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if not self.asked:
            self.asked = True
            future.set_result(_REQUEST)
        else:
            self.pending = future
        return future

    def release(self) -> None:
        if self.pending is not None and not self.pending.done():
            self.pending.set_result({"type": "http.disconnect"})


def _site(frame: Any) -> str:
    name = frame.filename
    for marker in ("/sse_fast/", "/asyncio/", "/benches/"):
        at = name.rfind(marker)
        if at >= 0:
            return f"{name[at + 1 :]}:{frame.lineno}"
    return f"{Path(name).name}:{frame.lineno}"


def _origin(traceback: Any) -> str:
    """The innermost frame of ``sse_fast/`` or of the fake server (who asked for it)."""
    frames = list(traceback)[::-1]  # tracemalloc lists the oldest frame first
    for frame in frames:  # the innermost of our frames and the fake server's decides
        if "/sse_fast/" in frame.filename:
            return _site(frame)
        if frame.filename == __file__:
            return "fake server: " + _site(frame)
    return "other: " + _site(frames[0])


async def _in_process(n: int, one_topic: bool) -> dict[str, Any]:
    from sse_fast.app import App
    from sse_fast.settings import Settings

    app = App(Settings(persistence="off", max_connections_per_ip=0, connect_rate_per_ip=0))
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "lifespan.startup"})
    out: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    life = loop.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, out.put)
    )
    assert (await out.get())["type"] == "lifespan.startup.complete"
    handlers: list[asyncio.Task[None]] = []
    connections: list[_FakeConnection] = []

    def scope(i: int) -> dict[str, Any]:
        topic = "t" if one_topic else f"t{i}"
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/events",
            "raw_path": b"/events",
            "query_string": f"topic={topic}".encode(),
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"accept", b"text/event-stream")],
            "client": ("127.0.0.1", 30000 + i % 30000),
            "server": ("127.0.0.1", 8000),
        }

    async def open_streams(first: int, count: int) -> None:
        for i in range(first, first + count):
            conn = _FakeConnection()
            connections.append(conn)
            handlers.append(loop.create_task(app(scope(i), conn.receive, _fake_send)))
            if i % 256 == 0:
                await asyncio.sleep(0)
        for _ in range(5):
            await asyncio.sleep(0)

    warm = 200
    await open_streams(0, warm)  # the topic, caches, free lists
    gc.collect()
    tracemalloc.start(25)
    gc.collect()
    before_objects = {id(o) for o in gc.get_objects()}
    before = tracemalloc.take_snapshot()
    await open_streams(warm, n)
    gc.collect()
    harness = {id(before_objects), id(handlers), id(connections)}
    new_objects = [
        o for o in gc.get_objects() if id(o) not in before_objects and id(o) not in harness
    ]
    types: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for o in new_objects:
        t = type(o)
        key = f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__
        types[key] += 1
        sizes[key] += sys.getsizeof(o)
    del new_objects
    gc.collect()
    after = tracemalloc.take_snapshot()  # after the gc listing: its own lists are gone
    tracemalloc.stop()
    held = len(app.hub.subscriptions)
    by_line: Counter[str] = Counter()
    by_origin: Counter[str] = Counter()
    by_line_count: Counter[str] = Counter()
    for diff in after.compare_to(before, "traceback"):
        if diff.size_diff <= 0:
            continue
        by_line[_site(diff.traceback[-1])] += diff.size_diff
        by_line_count[_site(diff.traceback[-1])] += diff.count_diff
        by_origin[_origin(diff.traceback)] += diff.size_diff
    total = sum(d.size_diff for d in after.compare_to(before, "filename"))  # net, frees included
    fake = sum(v for k, v in by_origin.items() if k.startswith("fake server"))
    # free the streams
    for conn in connections:
        conn.release()
    await asyncio.gather(*handlers, return_exceptions=True)
    inbox.put_nowait({"type": "lifespan.shutdown"})
    await asyncio.wait_for(life, 30)
    return {
        "streams": n,
        "one_topic": one_topic,
        "subscriptions_open": held,
        "bytes_per_stream": round(total / n, 1),
        "fake_server_bytes_per_stream": round(fake / n, 1),
        "by_site": [
            {"site": k, "bytes": round(v / n, 1), "blocks": round(by_line_count[k] / n, 2)}
            for k, v in by_line.most_common(15)
        ],
        "by_origin": [{"site": k, "bytes": round(v / n, 1)} for k, v in by_origin.most_common(15)],
        "by_origin_all": [
            {"site": k, "bytes": round(v / n, 1)} for k, v in by_origin.most_common() if v >= n
        ],
        "by_type": [
            {"type": k, "count": round(c / n, 2), "bytes": round(sizes[k] / n, 1)}
            for k, c in types.most_common(20)
        ],
    }


# --------------------------------------------------------------------------- report


def _conditions(quick: bool) -> dict[str, Any]:
    import granian
    import uvloop

    import sse_fast

    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = system.cpu_model() or "?"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--short", "--", "sse_fast", "src_ext"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "granian": granian.__version__,
        "uvloop": getattr(uvloop, "__version__", "?"),
        "sse_fast": sse_fast.__version__,
        "extensions": sse_fast.HAS_EXTENSIONS,
        "git": commit,
        "uncommitted_sse_fast": [line for line in dirty if line.strip()],
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "loadavg": system.loadavg(),
    }


def _markdown(result: dict[str, Any]) -> str:
    c = result["conditions"]
    lines = [
        "# Memory per idle stream",
        "",
        f"Generated by `python -m benches.stream_memory{' --quick' if c['quick'] else ''}` on "
        f"{c['date']}. {c['cpu']}, {c['cpus']} CPUs, Linux {c['kernel']}; Python {c['python']}, "
        f"granian {c['granian']}, uvloop {c['uvloop']}, sse_fast {c['sse_fast']} (Cython "
        f"extensions: {'yes' if c['extensions'] else 'no'}), git {c['git']}"
        + (
            f" (uncommitted under sse_fast/: {len(c['uncommitted_sse_fast'])} files)"
            if c["uncommitted_sse_fast"]
            else ""
        )
        + f"; `ulimit -n` {c['nofile']}; load average at start {' '.join(c['loadavg'])} "
        "(the machine is shared: other work may run meanwhile).",
        "",
        "Server: one worker, ASGI, uvloop, HTTP/1, `--http1-buffer-size 8192`, backpressure = "
        "file limit - 64, backlog 4096, 1 runtime thread (what `sse-fast serve` passes to "
        "Granian, `cli._granian`), Granian's allocator giving freed pages back at once "
        f"(`{ALLOCATOR_VARIABLE}={allocator_options(0)}`: `sse-fast serve`'s default "
        "`--allocator-decay 0`; the row with `--allocator-decay 10` keeps them 10 s, "
        "jemalloc's own default). Clients: one separate process on loopback, one `GET` per "
        "connection, the response head and first frame read, then idle. RSS = VmRSS of "
        "Granian's main process + its worker, read 2 s after the last stream of a step is up; "
        "per stream = (RSS at N - RSS at 0) / N, N growing within one server run.",
        "",
        "## (a) + (b) RSS per idle stream",
        "",
        "| server | topics | persistence | N | held | RSS at 0 | RSS at N | per stream "
        "| range over runs | vs floor | connect time |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for run in result["rss"]:
        runs.setdefault(run["name"], run)
        for r in run["rows"]:
            groups.setdefault((run["name"], r["streams"]), []).append(r)

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    floor = {
        n: median([r["per_stream_kb"] for r in rows])
        for (name, n), rows in groups.items()
        if name == "floor"
    }
    for (name, n), rows in groups.items():
        run = runs[name]
        per = median([r["per_stream_kb"] for r in rows])
        low, high = min(r["per_stream_kb"] for r in rows), max(r["per_stream_kb"] for r in rows)
        base = floor.get(n)
        extra = f"{per - base:+.2f} KB" if base and run["kind"] != "floor" else ""
        server = "bare Granian app (floor)" if run["kind"] == "floor" else "`sse-fast serve`"
        if run.get("allocator_decay"):
            server += f" `--allocator-decay {run['allocator_decay']}`"
        lines.append(
            f"| {server} "
            f"| {'-' if run['kind'] == 'floor' else 'one for all' if run['one_topic'] else 'one per stream'} "
            f"| {'-' if run['kind'] == 'floor' else run['persistence']} "
            f"| {n:,} | {min(r['held'] for r in rows):,} "
            f"| {median([r['rss_base_kib'] for r in rows]) / 1024:.1f} MiB "
            f"| {median([r['rss_kib'] for r in rows]) / 1024:.1f} MiB | {per:.2f} KB "
            f"| {low:.2f}-{high:.2f} KB ({len(rows)}) | {extra} "
            f"| {median([r['connect_s'] for r in rows]):.1f} s |"
        )
    lines += [
        "",
        "KB = 1,000 bytes. *per stream*, *RSS*, *connect time*: median over the runs (each run "
        "a fresh server; the configurations interleaved); *range over runs*: min-max of per "
        "stream (number of runs). *vs floor*: per stream minus the floor's at the same N. The "
        "growth is all in the worker (Granian's main process stays flat).",
        "",
    ]
    for part in result["tracemalloc"]:
        n = part["streams"]
        lines += [
            f"## (c) tracemalloc, in process: {n:,} idle streams, "
            f"{'one topic for all' if part['one_topic'] else 'one topic per stream'}",
            "",
            f"Python allocations per stream (net): **{part['bytes_per_stream']:,.0f} B**, of which "
            f"the fake server (scope, the handler task Granian would create, the receive futures) "
            f"{part['fake_server_bytes_per_stream']:,.0f} B. Open subscriptions: "
            f"{part['subscriptions_open']:,}. 200 streams were opened before measuring "
            "(the topic, free lists).",
            "",
            "By allocation site (innermost frame):",
            "",
            "| site | bytes per stream | blocks per stream |",
            "|---|---:|---:|",
            *(
                f"| `{s['site']}` | {s['bytes']:,.1f} | {s['blocks']:.2f} |"
                for s in part["by_site"]
            ),
            "",
            "By who asked: the innermost frame of the traceback in `sse_fast/` or in the fake server:",
            "",
            "| asked by | bytes per stream |",
            "|---|---:|",
            *(f"| `{s['site']}` | {s['bytes']:,.1f} |" for s in part["by_origin"]),
            "",
            "New gc-tracked objects per stream, by type (`sys.getsizeof`, shallow; untracked "
            "objects such as bytes, str, ints and slotted objects without references to "
            "containers do not appear here):",
            "",
            "| type | count per stream | bytes per stream |",
            "|---|---:|---:|",
            *(f"| `{s['type']}` | {s['count']:.2f} | {s['bytes']:,.1f} |" for s in part["by_type"]),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.stream_memory",
        description="Memory per idle SSE stream: Granian floor, sse-fast serve, tracemalloc breakdown.",
    )
    parser.add_argument("--streams", type=int, default=10_000, help="largest N (default 10,000)")
    parser.add_argument("--quick", action="store_true", help="N = 200 / 1,000; temp output dir")
    parser.add_argument("--out-dir", help="where to write stream_memory.md / .json")
    parser.add_argument("--repeat", type=int, default=1, help="RSS runs per configuration")
    parser.add_argument("--skip-rss", action="store_true", help="only the in-process part (c)")
    parser.add_argument("--client", nargs=2, metavar=("PORT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        asyncio.run(_client(int(args.client[0]), args.client[1]))
        return 0
    top = min(args.streams, 1_000) if args.quick else args.streams
    if not 1 <= top <= 10_000:
        parser.error("--streams must be within 1..10,000")
    steps = sorted(
        {max(1, top // 5), top} if args.quick else {max(1, top // 10), max(1, top // 2), top}
    )
    out_dir = (
        Path(args.out_dir)
        if args.out_dir
        else (Path(tempfile.mkdtemp(prefix="stream_memory_")) if args.quick else RESULTS)
    )
    result: dict[str, Any] = {"conditions": _conditions(args.quick), "steps": steps, "rss": []}
    if not args.skip_rss:
        configs = [
            ("floor", "floor", True, "-", ""),
            ("floor, RSGI", "floor-rsgi", True, "-", ""),
            ("serve, off, one topic", "serve", True, "off", ""),
            ("serve, default, one topic", "serve", True, "default", ""),
            ("serve, off, topic per stream", "serve", False, "off", ""),
            ("serve, default, topic per stream", "serve", False, "default", ""),
            # what giving freed pages back at once buys: jemalloc's own 10 s instead
            ("serve, default, one topic, decay 10", "serve", True, "default", "10"),
        ]
        for repeat in range(max(1, args.repeat)):
            for name, kind, one_topic, persistence, decay in configs:
                print(f"(a/b) {name}, run {repeat + 1} ...", file=sys.stderr, flush=True)
                run = run_rss(name, kind, steps, one_topic, persistence, decay)
                run["repeat"] = repeat
                result["rss"].append(run)
    result["tracemalloc"] = []
    for one_topic in (True, False):
        print(f"(c) tracemalloc, one_topic={one_topic} ...", file=sys.stderr, flush=True)
        result["tracemalloc"].append(asyncio.run(_in_process(top, one_topic)))
    result["conditions"]["loadavg_after"] = system.loadavg()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stream_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    if result["rss"]:
        md = out_dir / "stream_memory.md"
        kept = ""  # a hand-written reading below the marker survives a new run
        if md.exists() and MARKER in md.read_text():
            kept = "\n" + MARKER + md.read_text().split(MARKER, 1)[1]
        md.write_text(_markdown(result) + "\n" + kept)
    print(_markdown(result) if result["rss"] else json.dumps(result["tracemalloc"], indent=2))
    print(f"written to {out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
