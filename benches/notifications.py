"""Per-user notifications, side by side: every subscriber on a topic of its own.

    python -m benches.notifications                 # 10,000 subscribers, the full ladder
    python -m benches.notifications --quick         # 1,000 subscribers, short steps
    python -m benches.notifications --targets sse_fast-1w,nchan --subscribers 5000
    python -m benches.notifications --targets sse_fast-1w --profile  # py-spy, by stage
    python -m benches.compare --scenarios notifications --targets sse_fast-1w,nchan,sse-starlette

N subscribers (``user/0`` ... ``user/N-1``, one each; the load generator's
subscriber processes, ``sse_fast.loadgen``) and publishers sending one event
per notification to random users at rising rates, until delivery falls behind
(less than 95 % of the offered rate achieved or delivered, an error, or a lost
event). sse_fast is driven five ways: single ``POST /publish`` requests
(16 connections), batches of 100 events per request, one
``POST /publish/stream``, and 64 tasks calling ``Publisher.publish()`` (a web
app's one notification per request) with the calls going together (``calls``,
the default) or one request per call (``calls-1``); Nchan and sse-starlette take
single requests (their only way). The server is pinned to core 1 and the load (subscribers and
publishers) to core 0, so figures are per server core. Each step records the
offered rate, publishes/s achieved, deliveries/s, publish latency p50/p99 (per
request; per line for the stream), delivery p99 (publish to subscriber), lost,
duplicates and the CPU (seconds per second) of the server and of the load.
Results go to ``benches/results/notifications.{md,json,png}`` (run from
``benches.compare``: a section of ``compare.md`` and ``compare_notifications.png``).
Loopback only; every step is bounded in time.

``--profile`` samples the one-worker sse_fast steps with py-spy (the Redis node's
worker too, not its redis-server) and adds where
the event loop's time goes, by stage (``benches/loop_profile.py``), to the
report (``notifications_profile.{md,json}``); with ``--compare-with`` it is a
before/after of the Python side in one run.

Nchan gets ``nchan_shared_memory_size`` (alias ``nchan_max_reserved_memory``)
512m: with 10,000 channels its default (128m here, 32m in nchan) runs out and
publishes are answered 500.

A topic's events all come from one publisher connection, each with the wall
clock and a per-topic sequence number, so a subscriber sees gaps (lost) and
repeats (duplicates).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sse_fast.loadgen._clients import _subscriber_process
from sse_fast.loadgen._procfs import cpu_seconds
from sse_fast.loadgen._stats import LatencyHistogram

from . import loop_profile, peers, system
from .system import machine

RESULTS = Path(__file__).resolve().parent / "results"
SERVER_CORE = {1}
LOAD_CORE = {0}
CONNECTIONS = 16  # publisher connections for single requests and batches
BATCH = 100
IN_FLIGHT = 2000  # stream lines written and not yet acked, at most (batches: 16 x 100)
LADDERS = {
    "single": [0],  # wrk at full speed: one step, the saturation point
    "batch": [10_000, 20_000, 30_000, 40_000, 60_000, 80_000, 120_000, 160_000],
    "stream": [10_000, 20_000, 30_000, 40_000, 60_000, 80_000, 120_000, 160_000],
    "calls": [5_000, 10_000, 20_000, 30_000, 40_000, 45_000, 50_000, 55_000, 60_000, 70_000],
    "calls-1": [2_000, 4_000, 6_000, 8_000, 10_000, 15_000],
    "calls256": [10_000, 20_000, 30_000, 40_000, 50_000, 55_000, 60_000, 65_000, 70_000, 80_000],
    # (steps of 5,000 from 20,000: a node's bulk reads put its top between 25,000 and 35,000)
    "redis-calls": [5_000, 10_000, 20_000, 25_000, 30_000, 35_000, 40_000, 45_000, 50_000, 60_000],
    "redis-calls256": [10_000, 20_000, 25_000, 30_000, 35_000, 40_000, 45_000, 50_000, 60_000],
    "redis-calls-1": [2_000, 4_000, 6_000, 8_000, 10_000, 15_000, 20_000, 30_000],
}
MODES = {
    "sse_fast": ["single", "batch", "stream", "calls", "calls256", "calls-1"],
    "redis": ["redis-calls", "redis-calls256", "redis-calls-1"],
    "floor": ["single", "batch", "calls", "calls256", "calls-1"],
    "other": ["single"],
}
#: every way in, in the reports' order
ALL_MODES = (*MODES["sse_fast"], *MODES["redis"])
TASKS = 64  # tasks calling Publisher.publish() in the calls modes (calls256: 256)
CALL_TASKS = {
    "calls": TASKS,
    "calls-1": TASKS,
    "calls256": 256,
    "redis-calls": TASKS,
    "redis-calls256": 256,
    "redis-calls-1": TASKS,
}
#: the target whose nodes publish and subscribe through a Redis of their own (the
#: redis-calls ways in: tasks calling sse_fast.brokers.redis.publish straight into it)
REDIS_TARGET = "sse_fast-1w-redis"
#: the floor: Granian and the kernel with no app work beyond handing frames over
#: (benches/peers/floor_app.py; peers.GranianFloorTarget)
FLOOR_TARGET = "granian-floor"


@dataclasses.dataclass(eq=False)
class RedisNodeTarget(peers.SseFastTarget):
    """``sse-fast serve --redis-url``: one node of a fleet on a ``redis-server`` that this
    target starts and stops with it; the Redis counts as the server's (its CPU, its core)."""

    redis_url: str = ""
    _redis: Any = dataclasses.field(default=None, init=False, repr=False)

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv, cwd, env = super().command(workdir)
        return [*argv, "--redis-url", self.redis_url], cwd, env

    def start(self) -> None:
        from sse_fast.testing import RedisServer

        self._redis = RedisServer().start()
        self.redis_url = self._redis.url
        try:
            super().start()
        except BaseException:
            self._redis.kill()
            raise

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self._redis is not None:
                self._redis.kill()  # (its stop() is a SIGSTOP, a partition)
                self._redis = None

    def node_pids(self) -> list[int]:
        """The node's own processes (the server's, its Redis left out)."""
        return super().server_pids()

    def server_pids(self) -> list[int]:
        redis = self._redis
        extra = [redis.proc.pid] if redis is not None and redis.proc is not None else []
        return self.node_pids() + extra

    def versions(self) -> dict[str, str]:
        out = super().versions()
        with contextlib.suppress(OSError, IndexError):
            text = subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True, check=False
            ).stdout
            out["redis-server"] = text.split()[2].removeprefix("v=")
        return out


CALL_CONNECTIONS = 4  # the Publisher's connections in the calls modes (its default)
NCHAN_SHARED_MEMORY = "512m"  # 10,000 channels: 128m runs out (nchan answers 500)
BEHIND = 0.95  # a step is behind under 95 % of the offered rate published or delivered
LOAD_BUSY = 0.9  # load CPU (s/s) from which the load core, not the server, may be the limit


def params(quick: bool, subscribers: int = 0, seconds: float = 0.0) -> dict[str, Any]:
    """Every condition of a run (recorded in the report as is)."""
    return {
        "subscribers": subscribers or (1000 if quick else 10_000),
        "seconds": seconds or (3.0 if quick else 8.0),
        "drain": 2.0,
        "max_delivery_p99_ms": 2000,
        "ladders": {k: (v[:3] if quick else v) for k, v in LADDERS.items()},
        "nchan_shared_memory": NCHAN_SHARED_MEMORY,
        "heartbeat": 30.0,
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pin(pids: list[int], cores: set[int]) -> None:
    """Every thread of ``pids`` onto ``cores`` (Granian's and uvicorn's threads are
    started before we pin: pinning the process's main thread alone leaves them free)."""
    for pid in pids:
        try:
            threads = system.threads(pid)
        except OSError:
            threads = [pid]
        for thread in threads:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(thread, cores)


# ---------------------------------------------------------------- publishers


def _payload(topic: int, seq: int, source: int) -> str:
    return f'{{"t":{time.time():.6f},"s":{seq},"w":{source},"u":{topic}}}'


def _line(user: int, seq: int, source: int) -> bytes:
    """One event as sse_fast's JSON, the data a JSON text (what subscribers parse)."""
    return b'{"topic":"user/%d","data":"{\\"t\\":%.6f,\\"s\\":%d,\\"w\\":%d}"}' % (
        user,
        time.time(),
        seq,
        source,
    )


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        await reader.readuntil(b"0\r\n\r\n")
    else:
        marker = lower.find(b"content-length:")
        length = int(lower[marker + 15 : lower.find(b"\r\n", marker)]) if marker >= 0 else 0
        await reader.readexactly(length)
    return status


def _request(
    target: peers.Target, method: str, path: str, headers: dict[str, str], body: bytes
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {target.host}:{target.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _ticks(first: float, interval: float, deadline: float) -> AsyncIterator[None]:
    """Once at ``first`` (monotonic time), then every ``interval`` seconds, before
    ``deadline``: a publisher's schedule."""
    next_at = first
    while True:
        now = time.monotonic()
        if now >= deadline or next_at >= deadline:
            return
        if next_at > now:
            await asyncio.sleep(next_at - now)
        next_at += interval
        yield


async def _requests(
    target: peers.Target, mode: str, rate: float, seconds: float, users: int, step: int
) -> dict[str, Any]:
    """Single requests or batches over CONNECTIONS kept-alive connections; connection
    c publishes to the users u with u % CONNECTIONS == c (so per-topic order holds)."""
    per_event = BATCH if mode == "batch" else 1
    interval = CONNECTIONS * per_event / rate  # seconds between requests on a connection
    latency = LatencyHistogram()
    out: dict[str, Any] = {"sent": 0, "acked": 0, "errors": 0, "statuses": {}}
    start = time.monotonic()
    deadline = start + seconds

    async def connection(c: int) -> None:
        mine = list(range(c, users, CONNECTIONS))
        seqs = dict.fromkeys(mine, 0)
        source = step * 1000 + c
        reader, writer = await asyncio.open_connection(target.host, target.port)
        try:
            # the connections' schedules evenly staggered: rate x seconds requests in all
            async for _ in _ticks(start + c * interval / CONNECTIONS, interval, deadline):
                events = []
                for _ in range(per_event):
                    user = random.choice(mine)
                    events.append((user, seqs[user]))
                    seqs[user] += 1
                if mode == "batch":
                    body = b'{"events":[%b]}' % b",".join(_line(u, s, source) for u, s in events)
                    data = _request(
                        target, "POST", "/publish", {"Content-Type": "application/json"}, body
                    )
                else:
                    ((u, s),) = events
                    method, path, headers, body = target.publish_request(
                        f"user/{u}", _payload(u, s, source)
                    )
                    data = _request(target, method, path, headers, body)
                started = time.monotonic()
                writer.write(data)
                out["sent"] += per_event
                status = await _read_response(reader)
                latency.add(time.monotonic() - started)
                if 200 <= status < 300:
                    out["acked"] += per_event
                else:
                    out["errors"] += 1
                    out["statuses"][str(status)] = out["statuses"].get(str(status), 0) + 1
        finally:
            writer.close()

    results = await asyncio.gather(
        *(connection(c) for c in range(CONNECTIONS)), return_exceptions=True
    )
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    out["failures"] = failures[:3]
    out["errors"] += len(failures)
    out["latency"] = latency.dump()
    return out


async def _stream(
    target: peers.Target, rate: float, seconds: float, users: int, step: int
) -> dict[str, Any]:
    """One POST /publish/stream: lines written every 5 ms at ``rate``, acks read as
    they come; a line's latency is from its write to its ack."""
    latency = LatencyHistogram()
    out: dict[str, Any] = {"sent": 0, "acked": 0, "errors": 0, "statuses": {}}
    reader, writer = await asyncio.open_connection(target.host, target.port)
    writer.write(
        (
            f"POST /publish/stream HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
            "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    written: deque[float] = deque()
    seqs = [0] * users
    source = step * 1000 + 999
    tick = 0.005

    async def write() -> None:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            count = int(rate * (time.monotonic() - start)) - out["sent"]
            count = min(count, IN_FLIGHT - len(written))  # a publisher waits for its acks
            if count > 0:
                lines = []
                for _ in range(count):
                    user = random.randrange(users)
                    lines.append(_line(user, seqs[user], source) + b"\n")
                    seqs[user] += 1
                chunk = b"".join(lines)
                now = time.monotonic()
                written.extend([now] * count)
                out["sent"] += count
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()  # the server's back-pressure slows us here
            next_tick = start + (math.floor((time.monotonic() - start) / tick) + 1) * tick
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def read() -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            out["errors"] += 1
            out["statuses"][str(status)] = 1
            return
        buffer = b""
        while True:
            data = await reader.read(1 << 20)
            if not data:
                return
            buffer += data
            *parts, buffer = buffer.split(b"\n")
            now = time.monotonic()
            for part in parts:
                if part.startswith(b'{"line"'):
                    latency.add(now - written.popleft())
                    if b'"ids"' in part:
                        out["acked"] += 1
                    else:
                        out["errors"] += 1
                elif part.startswith(b'{"done"') or part.startswith(b'{"error"'):
                    return
            # the chunk framing ("1a2\r\n" lines) is skipped by the startswith checks

    reading = asyncio.ensure_future(read())
    try:
        await write()
        await asyncio.wait_for(reading, 30)
    finally:
        reading.cancel()
        writer.close()
    out["latency"] = latency.dump()
    return out


async def _calls(
    target: peers.Target, mode: str, rate: float, seconds: float, users: int, step: int
) -> dict[str, Any]:
    """TASKS tasks calling ``Publisher.publish()`` (one event per call, as a web app
    publishes one notification per request), ``rate`` calls/s in all, over CALL_CONNECTIONS
    connections; task t publishes to the users u with u % TASKS == t (so per-topic order
    holds). ``calls``: calls made together go in one request (the default);
    ``calls-1``: one request per call (``coalesce=False``). A call's latency is the
    ``await`` of ``publish()``."""
    from sse_fast.publisher import Publisher, PublishFailed
    from sse_fast.publishing import PublishError

    tasks = CALL_TASKS[mode]
    interval = tasks / rate  # seconds between calls of a task
    latency = LatencyHistogram()
    out: dict[str, Any] = {"sent": 0, "acked": 0, "errors": 0, "statuses": {}}
    start = time.monotonic()
    deadline = start + seconds
    url = f"http://{target.host}:{target.port}"
    publisher = Publisher(url, coalesce=mode != "calls-1", connections=CALL_CONNECTIONS, retries=0)
    redis_client: Any = None
    if mode.startswith("redis"):  # straight into the node's Redis
        import redis.asyncio as aioredis

        from sse_fast.brokers.redis import publish as redis_publish

        assert isinstance(target, RedisNodeTarget)
        redis_client = aioredis.Redis.from_url(target.redis_url)

        async def into_redis(topic: str, data: str) -> str:
            return await redis_publish(redis_client, topic, data)

        async def into_redis_alone(topic: str, data: str) -> str:
            """One script call per call, as ``publish`` made them before calls went
            together (its single-sequence path)."""
            from sse_fast.brokers.redis._scripts import (
                PUBLISH_SCRIPT,
                publish_args,
                sequence_keys,
            )
            from sse_fast.publishing import PublishRequest

            args = publish_args("sse:", [PublishRequest((topic,), data)], 1000, 86400.0)
            keys = sequence_keys("sse:")
            (event_id,) = await redis_client.eval(PUBLISH_SCRIPT, len(keys), *keys, *args)
            return str(event_id)

        send = into_redis_alone if mode == "redis-calls-1" else into_redis
    else:
        send = publisher.publish

    async def task(t: int) -> None:
        mine = list(range(t, users, tasks))
        seqs = dict.fromkeys(mine, 0)
        source = step * 1000 + t
        async for _ in _ticks(start + t * interval / tasks, interval, deadline):
            user = random.choice(mine)
            seq, seqs[user] = seqs[user], seqs[user] + 1
            out["sent"] += 1
            began = time.monotonic()
            try:
                await send(f"user/{user}", _payload(user, seq, source))
            except (PublishFailed, PublishError) as exc:
                out["errors"] += 1
                out["statuses"][str(exc.status)] = out["statuses"].get(str(exc.status), 0) + 1
            else:
                out["acked"] += 1
            latency.add(time.monotonic() - began)

    async with publisher:
        results = await asyncio.gather(*(task(t) for t in range(tasks)), return_exceptions=True)
    if redis_client is not None:
        await redis_client.aclose()
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    out["failures"] = failures[:3]
    out["errors"] += len(failures)
    out["latency"] = latency.dump()
    return out


def _publisher_process(
    target: peers.Target, mode: str, rate: float, seconds: float, users: int, step: int, pipe: Any
) -> None:
    """Child process: say "started", publish for ``seconds``, send the counts, the
    latency histogram and the CPU it used publishing."""
    with contextlib.suppress(Exception):
        import uvloop

        uvloop.install()
    pipe.send("started")
    cpu = time.process_time()
    if mode == "stream":
        result = asyncio.run(_stream(target, rate, seconds, users, step))
    elif mode in CALL_TASKS:
        result = asyncio.run(_calls(target, mode, rate, seconds, users, step))
    else:
        result = asyncio.run(_requests(target, mode, rate, seconds, users, step))
    result["cpu"] = time.process_time() - cpu
    pipe.send(result)


WRK_SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } sse_timeval;
int gettimeofday(sse_timeval *t, void *tzp);
]]
local tv = ffi.new("sse_timeval")
local function now()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) / 1e6
end
local N, W, NCHAN = @N@, @W@, @NCHAN@
-- every user once per round, in a shuffled order: a user's events are never
-- in flight on two connections at once, so their sequence numbers arrive in order
local order = {}
for i = 1, N do order[i] = i - 1 end
math.randomseed(@SEED@)
for i = N, 2, -1 do
  local j = math.random(i)
  order[i], order[j] = order[j], order[i]
end
local k = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = NCHAN and "text/plain" or "application/json"
request = function()
  local u = order[(k % N) + 1]
  local s = math.floor(k / N)
  k = k + 1
  local t = now()
  if NCHAN then
    return wrk.format(nil, "/publish?topic=user%2F" .. u, nil,
      string.format('{"t":%.6f,"s":%d,"w":%d}', t, s, W))
  end
  return wrk.format(nil, "/publish", nil, string.format(
    '{"topic":"user/%d","data":"{\\"t\\":%.6f,\\"s\\":%d,\\"w\\":%d}"}', u, t, s, W))
end
"""


def _wrk_duration(text: str) -> float:
    value, unit = float(re.match(r"[\d.]+", text)[0]), re.sub(r"[\d.]+", "", text)  # type: ignore[index]
    return value * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_wrk(target: peers.Target, seconds: float, users: int, step: int) -> dict[str, Any]:
    """Single requests at full speed: wrk, 16 connections, one thread (core 0)."""
    script = (
        WRK_SCRIPT.replace("@N@", str(users))
        .replace("@W@", str(step * 1000))
        .replace("@NCHAN@", "true" if target.name == "nchan" else "false")
        .replace("@SEED@", str(step))
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        core = ",".join(str(c) for c in sorted(LOAD_CORE))
        argv = ["taskset", "-c", core, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s"]
        argv += ["--latency", "-s", f.name, f"http://{target.host}:{target.port}"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        os.unlink(f.name)
    counted = re.search(r"(\d+) requests in", out)
    if counted is None:
        raise RuntimeError(f"wrk gave no count of requests; its output: {out[-500:]!r}")
    done = int(counted[1])
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad[1]) if bad else 0
    socket_errors = re.search(r"Socket errors: (.*)", out)
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)", out, re.M))
    return {
        "sent": done,
        "acked": done - errors,
        "errors": errors,
        "statuses": {"socket": socket_errors[1]} if socket_errors else {},
        "p50": _wrk_duration(percentiles["50"]),
        "p99": _wrk_duration(percentiles["99"]),
        "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
    }


# ---------------------------------------------------------------- one target


def _histogram(dumped: dict[str, Any] | list[dict[str, Any]]) -> LatencyHistogram:
    out = LatencyHistogram()
    for one in dumped if isinstance(dumped, list) else [dumped]:
        if one:
            out.merge(one)
    return out


def prepared(target: peers.Target, p: dict[str, Any]) -> peers.Target:
    """The target as this benchmark runs it (a copy): this run's heartbeat, and Nchan
    with room for N channels."""
    if isinstance(target, peers.NchanTarget):
        return dataclasses.replace(
            target, heartbeat=p["heartbeat"], shared_memory=p["nchan_shared_memory"]
        )
    return dataclasses.replace(target, heartbeat=p["heartbeat"])


def climb(ladder: list[int], run_one: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``run_one(rate)`` for each rate of the ladder, up to the first step behind."""
    rows = []
    for rate in ladder:
        row = run_one(rate)
        rows.append(row)
        if row["behind"]:
            break
    return rows


def run_target(
    target: peers.Target, p: dict[str, Any], progress: Callable[[str], None] = log
) -> list[dict[str, Any]]:
    """Start ``target`` (as :func:`prepared` gives it), connect the subscribers, climb
    every way in's ladder, stop it; one row per step."""
    users = p["subscribers"]
    context = multiprocessing.get_context("spawn")
    rows: list[dict[str, Any]] = []
    target.start()
    children: list[Any] = []
    pipes: list[Any] = []
    try:
        pin(target.server_pids(), SERVER_CORE)
        processes = max(1, math.ceil(users / 9000))
        paths = [target.subscribe_path(f"user/{u}") for u in range(users)]
        for index in range(processes):
            parent, child = context.Pipe()
            mine = paths[index::processes]
            sources = [f"127.0.0.{2 + index}"]
            proc = context.Process(
                target=_subscriber_process,
                args=(target.host, target.port, mine, sources, child),
                daemon=True,
            )
            proc.start()
            assert proc.pid is not None
            pin([proc.pid], LOAD_CORE)
            children.append(proc)
            pipes.append(parent)
        hello = [pipe.recv() if pipe.poll(180) else {"connected": 0} for pipe in pipes]
        connected = sum(h["connected"] for h in hello)
        progress(f"  {target.name}: {connected} of {users} subscribers connected")
        if connected < users * 0.99:
            raise RuntimeError(f"only {connected} of {users} subscribers connected")
        step = 0
        modes = (
            MODES["redis"]
            if isinstance(target, RedisNodeTarget)
            else MODES["floor"]
            if isinstance(target, peers.GranianFloorTarget)
            else MODES["sse_fast"]
            if target.name.startswith("sse_fast")
            else MODES["other"]
        )
        modes = [m for m in modes if m in p.get("modes", modes)]
        load_pids = [c.pid for c in children]

        def run_one(rate: int) -> dict[str, Any]:
            nonlocal step
            step += 1
            row = run_step(target, mode, rate, p, pipes, step, context, load_pids)
            progress(
                f"    {mode:6s} offered {rate:>7,}/s: published {row['published_per_s']:>8,.0f}/s"
                f" delivered {row['delivered_per_s']:>8,.0f}/s p99 publish "
                f"{row['publish_p99_ms']:.1f} ms delivery {row['delivery_p99_ms']:.1f} ms"
                f" lost {row['lost']} dup {row['duplicates']} errors {row['errors']}"
                f" cpu server {row['server_cpu']:.2f} load {row['load_cpu']:.2f}"
            )
            return row

        for mode in modes:
            rows += climb(p["ladders"][mode], run_one)
    finally:
        for pipe in pipes:
            with contextlib.suppress(Exception):
                pipe.send("exit")
        for proc in children:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        target.stop()
    return rows


def run_step(
    target: peers.Target,
    mode: str,
    rate: int,
    p: dict[str, Any],
    pipes: list[Any],
    step: int,
    context: Any,
    load_pids: list[int],
) -> dict[str, Any]:
    """One step: publish for ``p["seconds"]``, wait ``p["drain"]``, collect the counts."""
    seconds = p["seconds"]
    for pipe in pipes:
        pipe.send(("measure", time.time() - 0.5))
    time.sleep(0.3)
    server = target.server_pids()
    pin(server, SERVER_CORE)  # threads started since the last step
    sampler = None
    if p.get("profile"):
        keep = p.get("profile_raw") or None
        name = f"{target.name}-{mode}-{rate}.txt"
        sampler = _Sampler(target, server, seconds, Path(keep) / name if keep else None)
    if mode == "single":
        cpu_before, load_before = cpu_seconds(server), cpu_seconds(load_pids)
        threads_before = peers.thread_cpu(server)
        began = time.monotonic()
        if sampler:
            sampler.start()
        result = run_wrk(target, seconds, p["subscribers"], step)
    else:
        parent, child = context.Pipe()
        plain = dataclasses.replace(target)  # without its process handles: picklable
        publisher = context.Process(
            target=_publisher_process,
            args=(plain, mode, rate, seconds, p["subscribers"], step, child),
            daemon=True,
        )
        publisher.start()
        assert publisher.pid is not None
        pin([publisher.pid], LOAD_CORE)
        parent.poll(60)  # "started": the process is up, its imports done
        with contextlib.suppress(EOFError, OSError):
            parent.recv()
        cpu_before, load_before = cpu_seconds(server), cpu_seconds(load_pids)
        threads_before = peers.thread_cpu(server)
        began = time.monotonic()
        if sampler:
            sampler.start()
        result = (
            parent.recv() if parent.poll(seconds + 60) else {"sent": 0, "acked": 0, "errors": 1}
        )
        publisher.join(10)
        if publisher.is_alive():
            publisher.kill()
    took = time.monotonic() - began
    load_cpu = cpu_seconds(load_pids) - load_before
    cpu = cpu_seconds(server) - cpu_before
    threads = {k: v - threads_before[k] for k, v in peers.thread_cpu(server).items()}
    time.sleep(p["drain"])
    for pipe in pipes:
        pipe.send("stop")
    finals = [pipe.recv() if pipe.poll(60) else {} for pipe in pipes]
    row = step_row(
        target.name,
        mode,
        rate,
        p,
        result,
        finals,
        server_cpu=cpu / max(took, 1e-9),
        subscribers_cpu=load_cpu / max(took, 1e-9),
        took=took,
        threads=threads,
    )
    if sampler:
        row["profile"] = sampler.result()
    return row


class _Sampler:
    """py-spy on a one-worker sse_fast target's worker for a step (``--profile``):
    started once the load runs, for the step's seconds less one; its summary is the
    row's ``profile`` (``loop_profile.summarize``), or None for other targets. With
    ``keep``, py-spy's own output (collapsed stacks, every thread: for flamegraph.pl
    or speedscope) is kept there."""

    def __init__(
        self, target: peers.Target, server: list[int], seconds: float, keep: Path | None
    ) -> None:
        self.keep = keep
        if isinstance(target, RedisNodeTarget):  # the node's worker, not its redis-server
            server = target.node_pids()
        self.pid = server[0] if len(server) == 1 and isinstance(target, peers.SseFastTarget) else 0
        self.seconds = max(1.0, seconds - 1)
        self.dir = Path(tempfile.mkdtemp(prefix="sse-fast-profile-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.pid:
            self.proc = loop_profile.start(self.pid, self.seconds, self.dir / "raw")

    def result(self) -> dict[str, Any] | None:
        try:
            if self.proc is None:
                return None
            try:
                _, err = self.proc.communicate(timeout=self.seconds + 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, err = self.proc.communicate()
            raw = self.dir / "raw"
            if not raw.exists():
                log(f"    py-spy wrote nothing: {err.decode(errors='replace')[-300:]}")
                return None
            if self.keep is not None:
                self.keep.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(raw, self.keep)
            return loop_profile.summarize(loop_profile.read(raw, self.pid))
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def step_row(
    target: str,
    mode: str,
    rate: int,
    p: dict[str, Any],
    result: dict[str, Any],
    finals: list[dict[str, Any]],
    server_cpu: float,
    subscribers_cpu: float,
    took: float,
    threads: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A step's row from the publisher's ``result`` and the subscriber processes'
    ``finals`` (counts and latency histograms); CPU in seconds per second, and the
    server's CPU by thread (``thread_cpu``'s roles) in microseconds per event
    published (the event loop's: the Python side)."""
    seconds = p["seconds"]
    received = sum(f.get("received", 0) for f in finals)
    delivery = _histogram([f.get("histogram", {}) for f in finals])
    publish = _histogram(result.get("latency", {}))
    acked = result.get("acked", 0)
    publisher_cpu = result.get("cpu", 0.0) / max(took, 1e-9)
    row = {
        "target": target,
        "mode": mode,
        "offered_per_s": rate,
        "seconds": seconds,
        "published": acked,
        "published_per_s": acked / seconds,
        "delivered": received,
        "delivered_per_s": received / seconds,
        "missing": max(0, acked - received),
        "lost": sum(f.get("lost", 0) for f in finals),
        "duplicates": sum(f.get("duplicates", 0) for f in finals),
        "errors": result.get("errors", 0),
        "statuses": result.get("statuses", {}),
        "failures": result.get("failures", []),
        "publish_p50_ms": result.get("p50", publish.percentile(0.5)) * 1000,
        "publish_p99_ms": result.get("p99", publish.percentile(0.99)) * 1000,
        "delivery_p50_ms": delivery.percentile(0.5) * 1000,
        "delivery_p99_ms": delivery.percentile(0.99) * 1000,
        "server_cpu": server_cpu,
        "subscribers_cpu": subscribers_cpu,
        "publisher_cpu": publisher_cpu,
        "load_cpu": subscribers_cpu + publisher_cpu,
        "wall_seconds": took,
    }
    for role, seconds_used in (threads or {}).items():
        row[f"{role}_us_per_event"] = seconds_used * 1e6 / max(acked, 1)
    row["behind"] = is_behind(row, p["max_delivery_p99_ms"])
    return row


def is_behind(row: dict[str, Any], max_delivery_p99_ms: float) -> bool:
    """Under 95 % of the offered rate published (wrk's single step offers no rate),
    under 95 % of what was published delivered, an event lost (a gap in a topic's
    sequence, or acked and never delivered), a request failed, or delivery p99 over
    the bound."""
    rate = row["offered_per_s"]
    return bool(
        (rate and row["published_per_s"] < BEHIND * rate)
        or row["delivered"] < BEHIND * row["published"]
        or row["lost"]
        or row.get("missing", 0)
        or row["errors"]
        or row["delivery_p99_ms"] > max_delivery_p99_ms
    )


# ---------------------------------------------------------------- report


def best(rows: list[dict[str, Any]], target: str, mode: str) -> dict[str, Any] | None:
    """The highest step that kept up (else the highest step run)."""
    mine = [r for r in rows if r["target"] == target and r["mode"] == mode]
    kept = [r for r in mine if not r["behind"]]
    pool = kept or mine
    return max(pool, key=lambda r: r["delivered_per_s"]) if pool else None


def most(rows: list[dict[str, Any]], target: str, mode: str) -> float:
    """The most delivered per second in any step (kept up or not)."""
    return max(
        (r["delivered_per_s"] for r in rows if r["target"] == target and r["mode"] == mode),
        default=0.0,
    )


def _offered(row: dict[str, Any]) -> str:
    return f"{row['offered_per_s']:,}" if row["offered_per_s"] else "max (wrk)"


def _load_cpu(row: dict[str, Any]) -> str:
    load = float(row.get("load_cpu", row["subscribers_cpu"]))  # older results: subscribers only
    return f"{load:.2f}" + (" busy" if load >= LOAD_BUSY else "")


def conditions(p: dict[str, Any]) -> list[str]:
    """The conditions of a run, as Markdown bullets."""
    return [
        f"- {p['subscribers']:,} subscribers, each on its own topic `user/<n>`;"
        " publishers pick a random user per notification (one publisher connection per user)."
        f" Steps of {p['seconds']:g} s, {p['drain']:g} s drain; heartbeat (ping) "
        f"every {p.get('heartbeat', 30.0):g} s.",
        f"- The server is pinned to core {min(SERVER_CORE)}; subscribers and publishers share "
        f"core {min(LOAD_CORE)}. CPU is seconds per second: the server's (so figures are per "
        "server core), and the load's (subscriber processes and publisher or wrk; *busy* from "
        f"{LOAD_BUSY:.2f}: the load core was saturated, so the figure is a floor for that "
        "server, not its ceiling).",
        f"- single: one event per `POST`, wrk at full speed over {CONNECTIONS} connections "
        "(one step: the saturation point); batch: "
        f'{BATCH} events per `POST /publish` (`{{"events": [...]}}`), {CONNECTIONS} '
        "connections, publish latency per request (each of its events waits for the whole "
        "request); stream: one `POST /publish/stream`, lines written every 5 ms with at "
        f"most {IN_FLIGHT:,} not yet acked (as a publisher bounds what it has in flight), "
        "acks read as they come (latency per line: written to its ack); calls: "
        f"{TASKS} tasks calling `Publisher.publish()` over its {CALL_CONNECTIONS} "
        "connections, calls made while requests are in flight going together (calls256: "
        "the same from 256 tasks; calls-1: `coalesce=False`, one request per call), each "
        "task waiting for its call's answer "
        "(latency per call); redis-calls (and redis-calls256): the same tasks calling "
        "`sse_fast.brokers.redis.publish` straight into the Redis of "
        f"`{REDIS_TARGET}`, one sse_fast node (1 worker, `--redis-url`) whose "
        "`redis-server` (no persistence) runs on the server's core and counts in its CPU; "
        "redis-calls-1: the same with one script call per call (as `publish` made them "
        "before calls went together).",
        f"- A step is *behind* (and the ladder stops) when under {BEHIND:.0%} of the offered "
        f"rate was published or delivered, or an event was lost (a gap in its topic, or "
        "acked and not delivered by the end of the drain), or a request failed, or "
        f"delivery p99 exceeded {p['max_delivery_p99_ms']:,} ms.",
        "- loop / I/O us per event: the server's CPU per event published, by thread: each "
        "process's main thread (sse_fast's event loop: the Python side, Granian's ASGI calls "
        "into it included) and Granian's I/O (tokio) threads (other servers have none: 0.0).",
        f"- {FLOOR_TARGET}: `benches/peers/floor_app.py` under Granian as sse_fast runs it "
        "(ASGI, uvloop, HTTP/1, 1 worker, allocator decay 0, SCHED_BATCH; the listening "
        "socket with the kernel's defaults): each event's frame handed to its topic's "
        "streams during the publish and nothing else (no history, data directory, limits, "
        "checks, metrics; ids from a counter): the floor of Granian and the kernel for these "
        "ways in; *vs granian-floor* is a target's best sustained rate over the floor's, "
        "same way in, same run.",
        "- Nchan: `nchan_shared_memory_size` (alias `nchan_max_reserved_memory`) "
        f"{p.get('nchan_shared_memory', NCHAN_SHARED_MEMORY)}, so that every channel fits.",
    ]


def best_table(rows: list[dict[str, Any]], targets: list[str]) -> list[str]:
    """One line per target and way in: its best sustained step."""
    lines = [
        "| target | way | offered /s | published /s | delivered /s | publish p50 / p99 ms "
        "| delivery p99 ms | lost | dup | server CPU | load CPU | vs nchan single "
        f"| vs {FLOOR_TARGET} (same way) | most delivered /s in any step |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    nchan = best(rows, "nchan", "single")
    for target in targets:
        for mode in ALL_MODES:
            r = best(rows, target, mode)
            if r is None:
                continue
            ratio = (
                f"{r['delivered_per_s'] / nchan['delivered_per_s']:.2f}x"
                if nchan and nchan["delivered_per_s"]
                else "n/a"
            )
            floor = best(rows, FLOOR_TARGET, mode)
            of_floor = (
                f"{r['delivered_per_s'] / floor['delivered_per_s']:.2f}x"
                if floor and floor["delivered_per_s"] and target != FLOOR_TARGET
                else ""
            )
            lines.append(
                f"| {target} | {mode} | {_offered(r)} | {r['published_per_s']:,.0f} "
                f"| {r['delivered_per_s']:,.0f} | {r['publish_p50_ms']:.1f} / "
                f"{r['publish_p99_ms']:.1f} | {r['delivery_p99_ms']:.1f} | {r['lost']} "
                f"| {r['duplicates']} | {r['server_cpu']:.2f} | {_load_cpu(r)} "
                f"| {ratio} | {of_floor} | {most(rows, target, mode):,.0f} |"
            )
    return lines


def steps_table(rows: list[dict[str, Any]]) -> list[str]:
    """Every step run, in order."""
    lines = [
        "| target | way | offered /s | published /s | delivered /s | publish p99 ms "
        "| delivery p99 ms | lost | missing | dup | errors | server CPU | load CPU "
        "| loop / I/O us per event | behind |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['mode']} | {_offered(r)} | {r['published_per_s']:,.0f} "
            f"| {r['delivered_per_s']:,.0f} | {r['publish_p99_ms']:.1f} "
            f"| {r['delivery_p99_ms']:.1f} | {r['lost']} | {r.get('missing', 0)} "
            f"| {r['duplicates']} | {r['errors']}"
            f"{' ' + json.dumps(r['statuses']) if r['statuses'] else ''} "
            f"| {r['server_cpu']:.2f} | {_load_cpu(r)} | {_per_event(r)} "
            f"| {'yes' if r['behind'] else ''} |"
        )
    return lines


def options_of(report: dict[str, Any]) -> str:
    """A run's options as given (``--quick`` alone in reports from before they were
    kept; none in other benchmarks' older reports)."""
    if "argv" in report:
        return "".join(f" {arg}" for arg in report["argv"])
    return " --quick" if report.get("quick") else ""


def profile_section(rows: list[dict[str, Any]]) -> list[str]:
    """``--profile``: the event loop's time by stage for every sampled step (us per
    event: the stage's share of the samples times the step's loop us per event),
    and the functions most often on top in each target's best step per way in."""
    sampled = [r for r in rows if r.get("profile")]
    if not sampled:
        return []
    names = [name for name, _ in loop_profile.descriptions()]
    lines = [
        "",
        "## Where the event loop's time goes (py-spy)",
        "",
        f"py-spy on the worker for each step's seconds less one, {loop_profile.RATE} "
        "samples a second, native frames included (the worker is paused for each sample: "
        "these steps ran slower than unsampled ones, the same for every target). Samples "
        "of the worker's main thread (the event loop), by stage: the innermost frame that "
        "names one (`benches/loop_profile.py`); us per event = the stage's share times the "
        "step's loop us per event; *in Granian*: the share of the busy samples in Granian's "
        "code (its send and receive called from ours, and its own work on the loop thread).",
        "",
        *[f"- {name}: {what}" for name, what in loop_profile.descriptions()],
        "",
        "| target | way | offered /s | samples | loop us/event | in Granian | "
        + " | ".join(names)
        + " |",
        "|---|---|---:|---:|---:|---:|" + "---:|" * len(names),
    ]
    for r in sampled:
        summary = r["profile"]
        total = max(summary["samples"], 1)
        us = r.get("loop_us_per_event", 0.0)
        cells = [
            f"{summary['stages'].get(n, 0) / total * us:.2f}" if summary["stages"].get(n) else ""
            for n in names
        ]
        lines.append(
            f"| {r['target']} | {r['mode']} | {_offered(r)} | {summary['samples']:,} "
            f"| {us:.1f} | {summary['granian'] / total:.0%} | " + " | ".join(cells) + " |"
        )
    for target in targets_of(sampled):
        for mode in ALL_MODES:
            top = best(rows, target, mode)
            if top is None or not top.get("profile"):
                continue
            summary = top["profile"]
            total = max(summary["samples"], 1)
            lines += [
                "",
                f"Most often on top, {target} {mode} at {_offered(top)}/s "
                f"({summary['samples']:,} samples):",
                "",
                "| function | share |",
                "|---|---:|",
                *[
                    f"| `{frame.replace('|', '/')}` | {count / total:.1%} |"
                    for frame, count in summary["top"]
                ],
            ]
    return lines


def _per_event(row: dict[str, Any]) -> str:
    """The server's event-loop and I/O threads' CPU per event published (older results
    have none)."""
    if "loop_us_per_event" not in row:
        return ""
    return f"{row['loop_us_per_event']:.1f} / {row['io_us_per_event']:.1f}"


def targets_of(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["target"] for r in rows))


def write_report(report: dict[str, Any], path: Path) -> None:
    rows = report["rows"]
    m = report["machine"]
    cpu = m.get("cpu") or m.get("processor")
    lines = [
        "# Per-user notifications, side by side",
        "",
        f"`python -m benches.notifications{options_of(report)}` "
        f"on {m.get('cores') or m.get('cpus')} cores ({cpu}), "
        f"Python {m['python']}, {report['date']}.",
        "",
        *conditions(report["params"]),
        "- Versions: " + "; ".join(f"{k} {v}" for k, v in sorted(report["versions"].items())),
        "",
        "## Best sustained rate per way in",
        "",
        *best_table(rows, report["targets"]),
        "",
        "## Every step",
        "",
        *steps_table(rows),
        *profile_section(rows),
    ]
    if report["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in report["skipped"].items())]
    lines += ["", f"![notifications]({path.with_suffix('.png').name})", ""]
    path.write_text("\n".join(lines))


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no plot")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    color = 0
    for target in report["targets"]:
        for mode in ALL_MODES:
            rows = [r for r in report["rows"] if r["target"] == target and r["mode"] == mode]
            if not rows:
                continue
            label = f"{target} {mode}"
            c = f"C{color}"
            color += 1
            if mode == "single":  # wrk at full speed: one point, drawn as a level
                row = rows[0]
                left.axhline(
                    row["delivered_per_s"], linestyle="--", color=c, label=label + " (max)"
                )
                right.axhline(row["delivery_p99_ms"], linestyle="--", color=c)
                continue
            x = [r["offered_per_s"] for r in rows]
            left.plot(x, [r["delivered_per_s"] for r in rows], marker="o", color=c, label=label)
            right.plot(x, [r["delivery_p99_ms"] for r in rows], marker="o", color=c, label=label)
    left.set(xlabel="offered notifications/s", ylabel="delivered/s", xscale="log", yscale="log")
    left.set_title("delivered per second (one server core)")
    right.set(xlabel="offered notifications/s", ylabel="delivery p99 (ms)", xscale="log")
    right.set_yscale("log")
    right.set_title("publish-to-subscriber p99")
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compared(targets: list[peers.Target], checkout: str) -> list[peers.Target]:
    """``targets`` with sse_fast from ``checkout`` beside this checkout's: ``sse_fast-1w@REF``
    right after ``sse_fast-1w``, and ``sse_fast-1w-redis@REF`` (a node of that checkout on a
    Redis of its own) right after ``sse_fast-1w-redis`` when it runs. ``ValueError`` when
    there is no ``sse_fast-1w`` or the checkout is not built."""
    base = next((t for t in targets if t.name == "sse_fast-1w"), None)
    if base is None or not isinstance(base, peers.SseFastTarget):
        raise ValueError("needs the target sse_fast-1w")
    other = peers.checkout_target(base, checkout)
    out = list(targets)
    out.insert(out.index(base) + 1, other)
    redis = next((t for t in out if t.name == REDIS_TARGET), None)
    if redis is not None:
        fields = {f.name: getattr(other, f.name) for f in dataclasses.fields(other) if f.init}
        ref = other.name.partition("@")[2]
        # (the other's port: targets run one after another, as sse_fast-1w-redis shares its)
        twin = RedisNodeTarget(**{**fields, "name": f"{REDIS_TARGET}@{ref}"})
        out.insert(out.index(redis) + 1, twin)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.notifications", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="1,000 subscribers, 3 s steps")
    parser.add_argument("--subscribers", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=0.0, help="per step")
    parser.add_argument(
        "--targets", default="sse_fast-1w,nchan,sse-starlette", help="names from benches/peers.py"
    )
    parser.add_argument(
        "--modes",
        default="single,batch,stream",
        help=f"the ways in to run ({', '.join(ALL_MODES)}; the redis ones on the target "
        f"{REDIS_TARGET})",
    )
    parser.add_argument(
        "--compare-with",
        metavar="DIR",
        help="also run sse_fast (1 worker) from this checkout of another commit, which must "
        "be built in place (python setup.py build_ext --inplace there; refused at once when "
        "it is not), as target sse_fast-1w@REF, right after this one (and a node of it "
        "on Redis, sse_fast-1w-redis@REF, after sse_fast-1w-redis when that runs)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample each one-worker sse_fast step with py-spy (the event loop's time by "
        "stage); results go to notifications_profile.* unless --out says otherwise",
    )
    parser.add_argument(
        "--profile-raw",
        metavar="DIR",
        default="",
        help="with --profile: keep py-spy's collapsed stacks of each step in DIR",
    )
    parser.add_argument("--out", default="", help="path prefix")
    parser.add_argument("--replot", action="store_true", help="redo the report from the JSON")
    args = parser.parse_args(argv)
    args.out = args.out or str(
        RESULTS / ("notifications_profile" if args.profile else "notifications")
    )
    if args.profile and not loop_profile.available():
        parser.error("--profile needs py-spy (pip install py-spy)")
    if args.replot:
        out = Path(args.out)
        saved = json.loads(out.with_suffix(".json").read_text())
        write_report(saved, out.with_suffix(".md"))
        plot(saved, out.with_suffix(".png"))
        return 0
    p = params(args.quick, args.subscribers, args.seconds)
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    available, skipped = peers.available_targets(heartbeat=p["heartbeat"])
    base = next((t for t in available if t.name == "sse_fast-1w"), None)
    if REDIS_TARGET in wanted and base is not None and shutil.which("redis-server"):
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
        available.append(RedisNodeTarget(**{**fields, "name": REDIS_TARGET}))
    elif REDIS_TARGET in wanted:
        skipped[REDIS_TARGET] = "needs redis-server (Debian: apt-get install redis-server)"
    if FLOOR_TARGET in wanted and base is not None:
        available.append(
            peers.GranianFloorTarget(FLOOR_TARGET, base.host, base.port, heartbeat=base.heartbeat)
        )
    elif FLOOR_TARGET in wanted:
        skipped[FLOOR_TARGET] = skipped.get("sse_fast-1w", "needs granian, uvloop and orjson")
    targets = [t for t in available if t.name in wanted]
    skipped = {k: v for k, v in skipped.items() if k in wanted}
    missing = set(wanted) - {t.name for t in targets} - set(skipped)
    if missing:
        parser.error(f"unknown targets {sorted(missing)}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(LADDERS):
        parser.error(f"--modes: one or more of {', '.join(LADDERS)}")
    p["modes"] = modes
    p["profile"] = args.profile
    p["profile_raw"] = args.profile_raw
    if "single" in modes and shutil.which("wrk") is None:
        parser.error(
            "the single way in needs wrk (Debian: apt-get install wrk), or --modes batch,stream"
        )
    if args.compare_with:
        try:
            targets = compared(targets, args.compare_with)
        except ValueError as exc:  # not built: said before anything runs
            parser.error(f"--compare-with {exc}")
    report: dict[str, Any] = {
        "quick": args.quick,
        "argv": [arg for arg in (argv if argv is not None else sys.argv[1:])],
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "params": p,
        "targets": [t.name for t in targets],
        "skipped": skipped,
        "versions": {},
        "commands": {},
        "rows": [],
    }
    for target in targets:
        target = prepared(target, p)
        with contextlib.suppress(Exception):
            versions = target.versions()
            if "@" in target.name:  # another checkout: its own commit, beside this one's
                versions = {
                    f"{k} ({target.name})": v for k, v in versions.items() if "sse_fast" in k
                }
            report["versions"].update(versions)
        log(f"{target.name}:")
        try:
            report["rows"] += run_target(target, p)
            report["commands"][target.name] = target.command_line
        except Exception as exc:  # one peer failing must not lose the others' figures
            log(f"  {target.name} failed: {exc!r}")
            report["skipped"][target.name] = repr(exc)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    write_report(report, out.with_suffix(".md"))
    plot(report, out.with_suffix(".png"))
    log(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
