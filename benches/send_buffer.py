"""What ``--stream-send-buffer`` costs and saves: the kernel memory never-reading clients
pin, and the throughput of clients that do read, for a few send buffer sizes.

    python -m benches.send_buffer              # 64, 128, 256 KiB and 0 (autotuned)
    python -m benches.send_buffer --quick      # smaller, writes to a temporary directory
    python -m benches.send_buffer --sizes 65536,0

The record of the choice of ``stream_send_buffer``'s default (issue 39, item 9):
writes ``benches/results/send_buffer.md`` and ``.json`` (``--out-dir``). For each
size, ``sse-fast serve`` (one worker) on loopback, and:

(a) burst: 160 events of 256 KiB (40 MiB) are published to a topic nobody reads;
    then one client resumes from before the first (``Last-Event-ID``) and reads as
    fast as it can: seconds from its request to the last event's id, MiB/s, and
    the worker's CPU time for it (median of ``--burst-reads``).
(b) fan-out: ``sse_fast.loadgen.run_load``, ``--fanout-connections`` readers of one
    topic, ``--fanout-payload`` bytes per event at ``--fanout-rate``/s: deliveries/s,
    deliveries per second of the worker's CPU, p50/p99 latency, nothing lost.
(c) never-readers: ``--never-readers`` clients subscribe and never read (default
    receive buffer, as the outside probe's); 8 MiB of 256 KiB events are published
    (the history holds them all and ``catch_up_timeout`` is off, so nobody is cut
    while measured); once the server's send queues stop growing: the sum of the
    server-side sockets' send queues (``ss -tm``: ``w``, bytes queued, and ``tb``,
    the send buffer), the clients' receive queues (``r``), the machine's TCP memory
    (``/proc/net/sockstat`` ``TCP ... mem`` pages x page size, less the figure
    before the clients connected; other work on the machine moves it too) and the
    worker's RSS. The autotuned size runs with ``--never-readers-autotuned``
    clients (100 by default): at 500 its ~4 MiB per client reaches the machine's
    ``net.ipv4.tcp_mem`` pressure level, which would stall everyone else's sockets
    on a shared machine; the figures per client are what compares.

Loopback only, bounded: every phase has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from sse_fast.testing import tcp_sockets

from . import system

HOST = "127.0.0.1"
KiB = 1024
MiB = 1024 * KiB
EVENT_BYTES = 256 * KiB
RESULTS = Path(__file__).parent / "results"


def parse_sockstat(text: str) -> int:
    """The pages of TCP memory in ``/proc/net/sockstat`` (``TCP: ... mem N``)."""
    for line in text.splitlines():
        if line.startswith("TCP:"):
            fields = line.split()[1:]
            return int(dict(zip(fields[::2], fields[1::2], strict=True))["mem"])
    raise ValueError("no TCP line in sockstat")


def tcp_memory_bytes() -> int:
    """The machine's TCP memory now (``/proc/net/sockstat`` pages x page size)."""
    return parse_sockstat(system.sockstat()) * os.sysconf("SC_PAGE_SIZE")


def _server(size: int, **settings: Any) -> Any:
    from sse_fast.testing import ServerProcess

    return ServerProcess(
        stream_send_buffer=size,
        heartbeat_interval=0,
        persistence="off",
        ring_max_bytes=64 * MiB,
        ring_max_frames=4096,
        log_level="warning",
        **settings,
    )


def _event(topic: str, index: int) -> bytes:
    return orjson.dumps({"topic": topic, "data": f"{index:08d}" + "x" * (EVENT_BYTES - 16)})


async def _publish(server: Any, body: bytes) -> str:
    status, _, answer = await server.publish(body)
    if status != 200:
        raise RuntimeError(f"publish answered {status}: {answer[:200]!r}")
    return str(json.loads(answer)["ids"][0])


# -- (a) one fast reader ---------------------------------------------------------------


def burst(size: int, events: int, reads: int) -> dict[str, Any]:
    """One reader resuming ``events`` x 256 KiB of history, ``reads`` times: seconds,
    MiB/s, and the worker's CPU time per read (its threads' ``schedstat``, which a busy
    machine does not inflate as it does the seconds)."""
    with _server(size) as server:
        (worker,) = server.worker_pids()

        async def fill() -> tuple[str, str]:
            before = await _publish(server, orjson.dumps({"topic": "burst", "data": "start"}))
            last = before
            for index in range(events):
                last = await _publish(server, _event("burst", index))
            return before, last

        before, last = asyncio.run(fill())
        seconds, cpu = [], []
        for _ in range(reads):
            cpu_before = cpu_ns(worker)
            seconds.append(_read_burst(server.port, before, last))
            cpu.append((cpu_ns(worker) - cpu_before) / 1e6)
    median = statistics.median(seconds)
    return {
        "bytes": events * EVENT_BYTES,
        "seconds": [round(s, 4) for s in seconds],
        "median_s": round(median, 4),
        "mib_per_s": round(events * EVENT_BYTES / MiB / median, 1),
        "worker_cpu_ms": [round(c, 1) for c in cpu],
        "median_cpu_ms": round(statistics.median(cpu), 1),
    }


def parse_schedstat(text: str) -> int:
    """Nanoseconds on a CPU, the first field of ``/proc/PID/task/TID/schedstat``."""
    return int(text.split()[0])


def cpu_ns(pid: int) -> int:
    """The CPU time of all threads of process ``pid`` (ns)."""
    total = 0
    for tid in system.threads(pid):
        try:
            total += parse_schedstat(system.thread_schedstat(pid, tid))
        except FileNotFoundError:  # a thread that just ended
            continue
    return total


def _read_burst(port: int, before: str, last: str) -> float:
    marker = f"id: {last}\n".encode()
    with socket.create_connection((HOST, port), timeout=30) as sock:
        started = time.perf_counter()
        sock.sendall(
            f"GET /events?topic=burst HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {before}\r\n\r\n".encode()
        )
        tail = b""
        deadline = time.monotonic() + 30
        while marker not in tail:
            chunk = sock.recv(1 << 20)
            if not chunk or time.monotonic() > deadline:
                raise RuntimeError("the burst did not arrive whole within 30 s")
            tail = tail[-len(marker) :] + chunk
        return time.perf_counter() - started


# -- (b) fan-out to readers ------------------------------------------------------------


def fanout(
    size: int, connections: int, rate: float, payload: int, duration: float
) -> dict[str, Any]:
    """``run_load`` against a server with send buffer ``size``."""
    from sse_fast.loadgen import run_load

    with _server(size) as server:
        result = run_load(
            host=HOST,
            port=server.port,
            name=f"stream_send_buffer={size}",
            connections=connections,
            rate=rate,
            duration=duration,
            payload_bytes=payload,
            server_pids=server.worker_pids,
        )
    return {
        "connections": result.connected,
        "delivered_per_s": round(result.delivered_per_second),
        "lost": result.lost,
        "p50_ms": round(result.p50_ms, 1),
        "p99_ms": round(result.p99_ms, 1),
        "server_cores_used": result.server_cores_used,
        "delivered_per_core_s": result.delivered_per_server_core_second,
    }


# -- (c) never-reading clients ---------------------------------------------------------


def never_readers(size: int, clients: int, published: int) -> dict[str, Any]:
    """Kernel memory and RSS with ``clients`` subscribers that never read."""
    from sse_fast.testing import rss_kb

    with _server(size, catch_up_timeout=0) as server:
        (worker,) = server.worker_pids()
        baseline = tcp_memory_bytes()
        rss_before = rss_kb(worker)
        sockets = []
        try:
            for _ in range(clients):
                sock = socket.create_connection((HOST, server.port), timeout=10)
                sock.sendall(b"GET /events?topic=stuck HTTP/1.1\r\nHost: x\r\n\r\n")
                sockets.append(sock)
            _wait(lambda: len(tcp_sockets(server.port)) >= clients, 30, "all connected")
            connected = tcp_memory_bytes()

            async def flood() -> None:
                for index in range(published // EVENT_BYTES):
                    await _publish(server, _event("stuck", index))

            asyncio.run(flood())
            queued = _settled(server.port)
            pinned = tcp_memory_bytes()
            servers = tcp_sockets(server.port)
            peers = tcp_sockets(server.port, "dport")
            return {
                "clients": clients,
                "published_bytes": published,
                "server_queued_bytes": queued,
                "server_queued_per_client_kib": round(queued / clients / KiB, 1),
                "server_sndbuf_max": max(s.get("tb", 0) for s in servers),
                "client_queued_bytes": sum(s.get("r", 0) for s in peers),
                "sockstat_before_mib": round(baseline / MiB, 1),
                "sockstat_growth_mib": round((pinned - connected) / MiB, 1),
                "sockstat_growth_per_client_kib": round((pinned - connected) / clients / KiB, 1),
                "worker_rss_before_mb": round(rss_before / 1024, 1),
                "worker_rss_mb": round(rss_kb(worker) / 1024, 1),
            }
        finally:
            for sock in sockets:
                sock.close()


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def _settled(port: int, timeout: float = 60) -> int:
    """The server's send queues' total once it has not grown for 1 s."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        total = sum(s.get("w", 0) for s in tcp_sockets(port))
        if total > last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= 1.0:
            return last
        time.sleep(0.1)
    raise TimeoutError(f"the send queues still grew after {timeout} s")


# -- the report ------------------------------------------------------------------------


def _conditions(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **system.machine_and_build(),
        "tcp_wmem": system.sysctl("net.ipv4.tcp_wmem").split(),
        "tcp_rmem": system.sysctl("net.ipv4.tcp_rmem").split(),
        "wmem_max": system.sysctl("net.core.wmem_max"),
        "tcp_mem_pages": system.sysctl("net.ipv4.tcp_mem").split(),
        "congestion_control": system.sysctl("net.ipv4.tcp_congestion_control"),
        "loadavg_before": system.loadavg(),
        "arguments": {k: v for k, v in vars(args).items() if k != "out_dir"},
    }


def _label(size: int) -> str:
    return f"{size // KiB} KiB" if size else "0 (autotuned)"


def kernel_alone(options: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Plain sockets, no server: what one never-reading client leaves queued in the
    sender's kernel when the sender writes until ``EAGAIN``, with ``SO_SNDBUF`` or
    ``TCP_NOTSENT_LOWAT`` (which bounds only the bytes not yet sent and keeps the
    autotuning of the window in flight) set on the listener."""
    out = []
    for option, value in options:
        with socket.socket() as listener:
            if option == "SO_SNDBUF":
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, value)
            elif option == "TCP_NOTSENT_LOWAT":
                listener.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, value)
            listener.bind((HOST, 0))
            listener.listen()
            with socket.create_connection(listener.getsockname()) as client:
                sender, _ = listener.accept()
                with sender:
                    sender.setblocking(False)
                    accepted = 0
                    for _ in range(1000):  # 64 MiB at most
                        try:
                            accepted += sender.send(b"x" * 65536)
                        except BlockingIOError:
                            break
                    (queue,) = tcp_sockets(listener.getsockname()[1])
                    out.append(
                        {
                            "option": option,
                            "value": value,
                            "accepted": accepted,
                            "w": queue.get("w", 0),
                            "tb": queue.get("tb", 0),
                        }
                    )
                del client
    return out


#: Linux's socket option number (Python's socket module has no name for it)
TCP_NOTSENT_LOWAT = 25
KERNEL_ALONE = [
    ("none", 0),
    ("SO_SNDBUF", 65536),
    ("SO_SNDBUF", 131072),
    ("TCP_NOTSENT_LOWAT", 16384),
    ("TCP_NOTSENT_LOWAT", 131072),
]


def _rounds(values: list[Any]) -> str:
    return ", ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in values)


def report(
    conditions: dict[str, Any], rows: list[dict[str, Any]], alone: list[dict[str, Any]]
) -> str:
    """The results as Markdown."""
    a = conditions["arguments"]
    lines = [
        "# Send buffer per stream (`python -m benches.send_buffer`)",
        "",
        f"- date: {conditions['date']}; git {conditions['git_commit']}",
        f"- machine: {conditions['cpu']}, {conditions['cpus']} cores (shared with other work), "
        f"Linux {conditions['kernel']}, {conditions['memory_gb']} GB; load before "
        f"{' '.join(conditions['loadavg_before'])}",
        f"- versions: Python {conditions['python']}, Granian {conditions['granian']}, uvloop "
        f"{conditions['uvloop']}, sse_fast {conditions['sse_fast']} (extensions "
        f"{conditions['sse_fast_extensions']})",
        f"- kernel: tcp_wmem {' '.join(conditions['tcp_wmem'])}, tcp_rmem "
        f"{' '.join(conditions['tcp_rmem'])}, wmem_max {conditions['wmem_max']}, tcp_mem "
        f"(pages) {' '.join(conditions['tcp_mem_pages'])}, {conditions['congestion_control']}",
        "- server: `sse-fast serve`, 1 worker, persistence off, heartbeats off, history 64 MiB "
        "/ 4096 events per topic; loopback",
        "- size: `--stream-send-buffer` (SO_SNDBUF; the kernel's buffer `tb` is twice it)",
        f"- {a['rounds']} rounds for (a) and (b), the sizes in turn within each round",
        "",
        f"## (a) Fast reader: {a['burst_events']} x 256 KiB "
        f"({a['burst_events'] * EVENT_BYTES // MiB} MiB) resumed from history",
        "",
        f"Each round: the median of {a['burst_reads']} reads, in MiB/s (wall clock, which "
        "the machine's other work inflates) and in the worker's CPU milliseconds per read "
        "(all its threads; what a smaller buffer would cost in more, smaller writes):",
        "",
        "| size | MiB/s each round | median | worker CPU ms each round | median |",
        "|---|---|---:|---|---:|",
    ]
    for row in rows:
        rates = [b["mib_per_s"] for b in row["burst"]]
        cpu = [b["median_cpu_ms"] for b in row["burst"]]
        lines.append(
            f"| {_label(row['size'])} | {_rounds(rates)} | {statistics.median(rates)} | "
            f"{_rounds(cpu)} | {statistics.median(cpu)} |"
        )
    lines += [
        "",
        f"## (b) Fan-out: {a['fanout_connections']} readers of one topic, "
        f"{a['fanout_payload']}-byte events at {a['fanout_rate']}/s for {a['fanout_duration']} s",
        "",
        "| size | deliveries/s each round | lost | deliveries per worker CPU second | "
        "p50 ms | p99 ms |",
        "|---|---|---:|---|---|---|",
    ]
    for row in rows:
        f = row["fanout"]
        per_core = [round(r["delivered_per_core_s"] or 0) for r in f]
        lines.append(
            f"| {_label(row['size'])} | {_rounds([r['delivered_per_s'] for r in f])} | "
            f"{sum(r['lost'] for r in f)} | {_rounds(per_core)} | "
            f"{_rounds([r['p50_ms'] for r in f])} | {_rounds([r['p99_ms'] for r in f])} |"
        )
    lines += [
        "",
        f"## (c) Never-reading clients: {a['never_published'] // MiB} MiB of 256 KiB events "
        "published to them",
        "",
        "| size | clients | server send queues | per client | largest `tb` | clients' receive "
        "queues | sockstat growth | per client | worker RSS before -> after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        n = row["never_readers"]
        lines.append(
            f"| {_label(row['size'])} | {n['clients']} | {n['server_queued_bytes'] / MiB:.1f} MiB | "
            f"{n['server_queued_per_client_kib']} KiB | {n['server_sndbuf_max']:,} | "
            f"{n['client_queued_bytes'] / MiB:.1f} MiB | {n['sockstat_growth_mib']} MiB | "
            f"{n['sockstat_growth_per_client_kib']} KiB | {n['worker_rss_before_mb']} -> "
            f"{n['worker_rss_mb']} MB |"
        )
    lines += [
        "",
        "Server send queues: the sum of `w` (bytes queued, with their bookkeeping) over the "
        "server's sockets, from `ss -tm`, once it stopped growing. Sockstat growth: the "
        "machine's TCP memory (`/proc/net/sockstat`, pages x 4096) after the flood less "
        "before it, both ends of every loopback connection included; other work on the "
        "machine moves it too. Worker RSS: what Granian holds for each stalled stream (its "
        "channel of 4 messages, and our one pending write) comes on top of the kernel's share.",
        "",
        "## (d) The kernel alone: one never-reading client, plain sockets",
        "",
        "The sender writes 64 KiB at a time until `EAGAIN`:",
        "",
        "| option on the listener | value | bytes accepted | `w` queued | `tb` |",
        "|---|---:|---:|---:|---:|",
    ]
    for item in alone:
        lines.append(
            f"| {item['option']} | {item['value']:,} | {item['accepted']:,} | {item['w']:,} | "
            f"{item['tb']:,} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="65536,131072,262144,0")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst-events", type=int, default=160)
    parser.add_argument("--burst-reads", type=int, default=7)
    parser.add_argument("--fanout-connections", type=int, default=1000)
    parser.add_argument("--fanout-rate", type=float, default=40)
    parser.add_argument("--fanout-payload", type=int, default=8192)
    parser.add_argument("--fanout-duration", type=float, default=8)
    parser.add_argument("--never-readers", type=int, default=500)
    parser.add_argument("--never-readers-autotuned", type=int, default=100)
    parser.add_argument("--never-published", type=int, default=8 * MiB)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.burst_events, args.burst_reads = 1, 8, 2
        args.fanout_connections, args.fanout_duration = 100, 3
        args.never_readers, args.never_readers_autotuned = 20, 10
        args.never_published = 2 * MiB
    out_dir = args.out_dir or (Path(tempfile.mkdtemp()) if args.quick else RESULTS)
    conditions = _conditions(args)
    rows: list[dict[str, Any]] = [
        {"size": int(s), "burst": [], "fanout": []} for s in args.sizes.split(",")
    ]
    for round_ in range(args.rounds):
        for row in rows:
            size = row["size"]
            print(f"round {round_ + 1}, size {_label(size)}", file=sys.stderr, flush=True)
            row["burst"].append(burst(size, args.burst_events, args.burst_reads))
            row["fanout"].append(
                fanout(
                    size,
                    args.fanout_connections,
                    args.fanout_rate,
                    args.fanout_payload,
                    args.fanout_duration,
                )
            )
            if round_ == 0:
                clients = args.never_readers if size else args.never_readers_autotuned
                row["never_readers"] = never_readers(size, clients, args.never_published)
            print(json.dumps(row), file=sys.stderr, flush=True)
    alone = kernel_alone(KERNEL_ALONE)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "send_buffer.json").write_text(
        json.dumps({"conditions": conditions, "rows": rows, "kernel_alone": alone}, indent=1) + "\n"
    )
    (out_dir / "send_buffer.md").write_text(report(conditions, rows, alone))
    print(f"wrote {out_dir / 'send_buffer.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
