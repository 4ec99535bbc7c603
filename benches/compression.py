"""Compressed event streams: bytes on the wire, CPU, memory and latency of each way.

For two realistic streams on one topic, each driven by ``sse_fast.loadgen`` (one
topic, 10 publishes/s, 2 s warm-up, 5 s measured) at 5,000 and 40,000 streams:

``json``
    notifications of about 300 bytes with repeated keys (typed events: an order's
    update, ids, a time, an actor, amounts), ``data:`` JSON;
``html``
    Datastar ``datastar-patch-elements`` events of about 2 KB: an orders table
    patched in place, one ``data: elements <div ...>`` line, most of it the same
    from one patch to the next.

each served by ``sse-fast serve`` (one Granian worker per 15,000 streams):

``identity``
    no compression (the streams do not ask);
``event`` (gzip, zstd)
    each write compressed alone (``--compression-context event``: no compressor kept);
``stream`` (gzip, zstd)
    a compressor per stream (``--compression-context stream``);
``topic`` (gzip, zstd)
    the topic's shared compressor (``--compression-context topic``, the default).

Figures per run: bytes on the wire per event (body bytes as they came, over the
events read; frames, ids and heartbeats included) and decoded, server CPU per
delivered event, server RSS per stream (idle: before publishing; busy: sampled in
the measured window, compressors warm), latency p50/p99. Then two more sets:

* latency: the main set's sizes and streams, identity against ``topic`` gzip and
  zstd in turns for ``--rounds`` rounds, every stream served but only a sample of
  ``--readers`` reading its events (``loadgen`` ``read_every``; the others count their
  bytes): a p99 that is the server's, not the load generator's decoding of every
  compressed stream on the same cores;
* saturation-sampled (not in the default sets): the same, read by a sample of
  ``--readers`` (the server, not the load generator, the limit), in turns for
  ``--rounds`` rounds;
* saturation: 5,000 streams, the JSON stream at 150 publishes/s: delivered/s and
  delivered per server core-second, identity against ``topic`` gzip and zstd;
* per-user topics: 10,000 streams, each on a topic of its own, 1 publish/s per
  topic in all (the JSON stream): RSS per stream, identity against ``topic``
  (independent writes for a topic of one stream) and ``stream``.

And the anchor: Nchan behind nginx's ``gzip on`` for ``text/event-stream`` (the JSON
stream, 5,000 streams): whether its streams come compressed, its bytes on the wire,
and its latency (events held in nginx's buffers show there).

Writes ``benches/results/compression.md`` and ``.json``::

    python -m benches.compression                      # everything (about 25 minutes)
    python -m benches.compression --quick --out-dir /tmp/c
    python -m benches.compression --sets latency --report compression_latency

Loopback only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benches import peers, system
from sse_fast import loadgen
from sse_fast.loadgen._procfs import rss_kb
from sse_fast.loadtarget import Stamp, Stamps

HOST = "127.0.0.1"
RESULTS_DIR = peers.REPO_ROOT / "benches" / "results"
STREAMS_PER_WORKER = 15_000

# --------------------------------------------------------------------------- payloads

_STATUSES = ["created", "paid", "packed", "shipped", "delivered", "returned"]
_NAMES = ["Ada Byron", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov"]
_ITEMS = ["keyboard", "monitor", "headset", "webcam", "desk lamp", "usb hub", "chair"]


def json_event(stamps: dict[str, Any]) -> str:
    """A typed notification of about 300 bytes: the load generator's stamps (``t``,
    ``s``, ``w``) and an order's update whose ids, times and amounts vary."""
    n = int(stamps["s"])
    rng = random.Random(n)
    when = time.gmtime(1_795_900_000 + n * 7)
    body = {
        "type": "order.updated",
        "id": f"evt_{rng.getrandbits(48):012x}",
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S", when) + f".{rng.randint(0, 999):03d}Z",
        "actor": {"id": f"usr_{rng.randint(1, 5000):05d}", "name": rng.choice(_NAMES)},
        "order": {
            "id": f"ord_{rng.randint(1, 999_999):06d}",
            "status": rng.choice(_STATUSES),
            "items": rng.randint(1, 9),
            "total_cents": rng.randint(500, 250_000),
            "currency": "EUR",
        },
        **stamps,
    }
    return orjson.dumps(body).decode()


def html_event(stamps: dict[str, Any]) -> str:
    """A Datastar ``patch-elements`` fragment of about 2 KB, one line: an orders table
    whose rows change a little from one patch to the next; the stamps as attributes."""
    n = int(stamps["s"])
    rows = []
    for row in range(8):
        rng = random.Random(n // 3 * 8 + row)  # a row changes every third patch
        rows.append(
            f'<tr id="order-{row}" class="order-row"><td class="id">ord_{rng.randint(1, 999_999):06d}'
            f'</td><td class="item">{rng.choice(_ITEMS)}</td><td class="status status-'
            f'{(status := rng.choice(_STATUSES))}">{status}</td><td class="total">'
            f"{rng.randint(5, 2500)}.{rng.randint(0, 99):02d} EUR</td></tr>"
        )
    return (
        f'elements <div id="orders" data-t="{stamps["t"]}" data-s="{n}" '
        f'data-w="{stamps["w"]}"><table class="orders"><thead><tr><th>Order</th><th>Item'
        "</th><th>Status</th><th>Total</th></tr></thead><tbody>"
        + "".join(rows)
        + f'</tbody></table><p class="updated">Updated {n} times</p></div>'
    )


_HTML_STAMPS = re.compile(r'data-t="([0-9.]+)" data-s="([0-9]+)" data-w="([^"]*)"')


def read_html_stamp(event: str, data: str) -> Stamp | None:
    """The load generator's stamps from a ``patch-elements`` event (a top-level
    function: the client processes get it by pickling)."""
    match = _HTML_STAMPS.search(data)
    if match is None:
        return None
    return Stamp(float(match.group(1)), int(match.group(2)), match.group(3))


def publish_request(kind: str) -> Any:
    """The publish of sse_fast's API carrying the ``kind`` stream's event."""

    def request(topic: str, data: str) -> tuple[str, str, dict[str, str], bytes]:
        stamps = orjson.loads(data)
        stamps.pop("p", None)
        if kind == "json":
            body = {"topic": topic, "data": orjson.loads(json_event(stamps))}
        else:
            body = {"topic": topic, "event": "datastar-patch-elements", "data": html_event(stamps)}
        return "POST", "/publish", {"Content-Type": "application/json"}, orjson.dumps(body)

    return request


def nchan_publish_request(topic: str, data: str) -> tuple[str, str, dict[str, str], bytes]:
    from urllib.parse import quote

    stamps = orjson.loads(data)
    stamps.pop("p", None)
    return (
        "POST",
        "/publish?topic=" + quote(topic, safe=""),
        {"Content-Type": "text/plain; charset=utf-8"},
        json_event(stamps).encode(),
    )


STAMPS = {
    "json": Stamps(),
    "html": Stamps(events=frozenset({"datastar-patch-elements"}), reader=read_html_stamp),
}

# --------------------------------------------------------------------------- servers


@dataclass(eq=False)
class CompressingTarget(peers.SseFastTarget):
    """``sse-fast serve`` with the compression flags of one way."""

    flags: list[str] = field(default_factory=list)

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv, cwd, env = super().command(workdir)
        return [*argv, *self.flags], cwd, env


@dataclass(eq=False)
class GzipNchanTarget(peers.NchanTarget):
    """Nchan behind nginx's own gzip for event streams."""

    def render_config(self, prefix: Path) -> str:
        text = super().render_config(prefix)
        gzip = (
            "    gzip on;\n    gzip_types text/event-stream;\n    gzip_min_length 0;\n"
            "    gzip_proxied any;\n"
        )
        return text.replace("http {\n", "http {\n" + gzip, 1)


#: the ways: (name, coding asked for, serve flags)
WAYS: dict[str, tuple[str, list[str]]] = {
    "identity": ("", ["--compression", "off"]),
    "event gzip": ("gzip", ["--compression-context", "event", "--compression-codings", "gzip"]),
    "event zstd": ("zstd", ["--compression-context", "event", "--compression-codings", "zstd"]),
    "stream gzip": ("gzip", ["--compression-context", "stream", "--compression-codings", "gzip"]),
    "stream zstd": ("zstd", ["--compression-context", "stream", "--compression-codings", "zstd"]),
    "topic gzip": ("gzip", ["--compression-context", "topic", "--compression-codings", "gzip"]),
    "topic zstd": ("zstd", ["--compression-context", "topic", "--compression-codings", "zstd"]),
}


#: the latency set: identity against the shared per-topic compressor, in turns
LATENCY_WAYS = ["identity", "topic gzip", "topic zstd"]

# --------------------------------------------------------------------------- one run


def run_one(
    way: str,
    kind: str,
    connections: int,
    args: argparse.Namespace,
    log: Any,
    *,
    rate: float | None = None,
    topics: int = 1,
    nchan: bool = False,
    read_every: int = 1,
) -> dict[str, Any]:
    coding, flags = ("gzip, deflate", []) if nchan else WAYS[way]
    workers = max(1, math.ceil(connections / STREAMS_PER_WORKER))
    port = peers.free_ports(HOST, 1)[0]
    target: peers.Target = (
        GzipNchanTarget(name=way, host=HOST, port=port, workers=workers)
        if nchan
        else CompressingTarget(name=way, host=HOST, port=port, workers=workers, flags=flags)
    )
    busy_rss: list[int] = []
    target.start()
    log(f"{way} / {kind} / {connections:,} streams: {target.command_line}")
    try:
        pids = target.server_pids

        def sample() -> None:  # mid-window: the compressors are warm
            busy_rss.append(rss_kb(pids()))

        result = loadgen.run_load(
            host=target.host,
            port=target.port,
            name=f"{way} {kind}",
            connections=connections,
            rate=rate or args.rate,
            topics=topics,
            duration=args.duration,
            warmup=args.warmup,
            payload_bytes=48,  # the stamps only: the stream's own event goes around them
            subscribe_path=target.subscribe_path,
            publish_request=nchan_publish_request if nchan else publish_request(kind),
            server_pids=pids,
            stamps=STAMPS[kind],
            accept_encoding=coding,
            read_every=read_every,
            strict_window=True,
            probe=False,
            fault=sample,
            fault_after=args.duration / 2,
            progress=log,
        )
        server_side = _publish_to_write(target)
    finally:
        target.stop()
    r = asdict(result)
    delivered = r["delivered"]
    cpu = r.get("server_cpu_seconds")
    base = r["server_rss_base_kb"] or 0
    return {
        "way": way,
        "kind": kind,
        "connections": connections,
        "topics": topics,
        "read_every": read_every,
        "rate": rate or args.rate,
        "workers": workers,
        "command": target.command_line,
        "result": r,
        "cpu_us_per_delivered": round(cpu / delivered * 1e6, 3) if cpu and delivered else None,
        "rss_busy_per_stream_kb": round((busy_rss[0] - base) / r["connected"], 2)
        if busy_rss and base and r["connected"]
        else None,
        "versions": target.versions(),
        # the server's own: publish accepted -> its last in-sync stream's write handed
        # over (sse_fast_publish_to_write_seconds), with no client's decoding in it
        "server_publish_to_write": server_side,
    }


def _publish_to_write(target: peers.Target) -> dict[str, float] | None:
    """Mean and p99 (its bucket's upper bound) of ``sse_fast_publish_to_write_seconds``
    over the run, from the server's ``/metrics`` (None for a server without it)."""
    if isinstance(target, peers.NchanTarget):
        return None
    status, body = peers.http_get(target.host, target.port, "/metrics", timeout=10.0)
    if status != 200:
        return None
    name = "sse_fast_publish_to_write_seconds"
    buckets: list[tuple[float, int]] = []
    total = count = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if bound == "+Inf" else float(bound), int(line.split()[-1])))
        elif line.startswith(name + "_sum "):
            total = float(line.split()[-1])
        elif line.startswith(name + "_count "):
            count = float(line.split()[-1])
    if not count:
        return None
    p99 = next((bound for bound, seen in sorted(buckets) if seen >= 0.99 * count), math.inf)
    return {"mean_ms": round(total / count * 1000, 3), "p99_ms": round(p99 * 1000, 3)}


# --------------------------------------------------------------------------- resync


#: resynchronisation points every this many bytes of a topic's stream (0: never)
RESYNC_SCHEDULES = [0, 256 * 1024, 64 * 1024, 16 * 1024, 4 * 1024, 1024]


def resync_ratios(events: int = 3000) -> list[dict[str, Any]]:
    """In process: a topic's shared compressor over the two streams, with a point every
    so many bytes (what a joiner waits for), the bytes per event against never; and
    each event alone (``independent``). The frames are as the server encodes them."""
    from sse_fast import encode
    from sse_fast._compression import make_codings

    rows: list[dict[str, Any]] = []
    for kind in ("json", "html"):
        frames = []
        for n in range(events):
            stamps = {"t": 1_795_900_000.0 + n / 10, "w": "bench-0", "s": n}
            if kind == "json":
                frames.append(encode(orjson.loads(json_event(stamps)), id=str(n)))
            else:
                frames.append(
                    encode(html_event(stamps), event="datastar-patch-elements", id=str(n))
                )
        identity = sum(map(len, frames)) / events
        for name, coding in make_codings(("gzip", "zstd")).items():
            for every in RESYNC_SCHEDULES:
                shared = coding.shared()
                wire = 0
                for frame in frames:
                    due = bool(every) and shared.segment_bytes + len(frame) > every
                    wire += len(shared.write(frame, resync=due).whole)
                rows.append(
                    {
                        "kind": kind,
                        "coding": name,
                        "every": every,
                        "identity": identity,
                        "per_event": wire / events,
                    }
                )
            alone = sum(len(coding.leave() + coding.independent(f)) for f in frames) / events
            rows.append(
                {
                    "kind": kind,
                    "coding": name,
                    "every": -1,
                    "identity": identity,
                    "per_event": alone,
                }
            )
    return rows


# --------------------------------------------------------------------------- report


def _f(value: Any, spec: str = ",.0f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:{spec}}{suffix}"


def _ratio(value: Any, base: Any) -> str:
    if not value or not base:
        return "-"
    return f"{value / base:.2f}x"


def _server_mean(run: dict[str, Any] | None) -> float | None:
    side = (run or {}).get("server_publish_to_write")
    return None if not side else side["mean_ms"]


def _server_side(run: dict[str, Any]) -> str:
    side = run.get("server_publish_to_write")
    if not side:
        return "-"
    return f"{side['mean_ms']:.2f} / {side['p99_ms']:g} ms"


def _latency_section(report: dict[str, Any]) -> list[str]:
    """The latency set: per stream and size, each round's identity against the shared
    compressors, the p99 ratio of the same round, and the ratios' geometric mean."""
    runs = [r for r in report["runs"] if r["set"] == "latency"]
    if not runs:
        return []
    cond = report["conditions"]
    lines = [
        f"## Delivery latency, read by a sample (one topic, {cond['rate']:g} publishes/s)",
        "",
        "Every stream is served; only every n-th reads its events (decodes, parses, times "
        "them), the others take their bytes in and count them (`sse-fast loadgen "
        "--read-every`). The client's reading then costs next to nothing, so the latency "
        "is the server's: the main set's p99 above also charges the load generator's "
        "decoding of every compressed stream, on the same 2 CPUs. Ways in turns, "
        "identity first in each round; *p99 vs identity* is against the same round's.",
        "",
        "| stream | streams | round | way | read by | p50 | p99 | p99 vs identity "
        "| server publish-to-write mean / p99 | wire B/event (read / drained) "
        "| delivered / expected | lost |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {
        (r["kind"], r["connections"], r["round"]): r["result"]
        for r in runs
        if r["way"] == "identity"
    }
    ratios: dict[tuple[str, int, str], list[float]] = {}
    for run in runs:
        r = run["result"]
        key = (run["kind"], run["connections"], run["round"])
        b = base.get(key, {})
        if run["way"] != "identity" and b.get("p99_ms") and r["p99_ms"] == r["p99_ms"]:
            ratios.setdefault((run["kind"], run["connections"], run["way"]), []).append(
                r["p99_ms"] / b["p99_ms"]
            )
        lines.append(
            f"| {run['kind']} | {run['connections']:,} | {run['round']} | {run['way']} "
            f"| {_f(r['reading_connections'])} "
            f"| {_f(r['p50_ms'], '.1f', ' ms')} | {_f(r['p99_ms'], '.1f', ' ms')} "
            f"| {_ratio(r['p99_ms'], b.get('p99_ms'))} | {_server_side(run)} "
            f"| {_f(r['wire_bytes_per_event'], ',.1f')} / "
            f"{_f(r['drained_bytes_per_event'], ',.1f')} "
            f"| {r['delivered']:,} / {r['expected']:,} | {r['lost']} |"
        )
    lines += [
        "",
        "p99 against identity over the rounds (geometric mean of each round's ratio; "
        "the lowest and highest round in brackets):",
        "",
        "| stream | streams | way | rounds | p99 vs identity | range |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for (kind, size, way), values in ratios.items():
        mean = math.exp(sum(math.log(v) for v in values) / len(values))
        lines.append(
            f"| {kind} | {size:,} | {way} | {len(values)} | {mean:.2f}x "
            f"| {min(values):.2f}-{max(values):.2f}x |"
        )
    lines.append("")
    return lines


def _sampled_saturation_section(report: dict[str, Any]) -> list[str]:
    """Saturation read by a sample: every stream delivered to (published x connected,
    the sample losing nothing and the others taking as many bytes), per server core."""
    runs = [r for r in report["runs"] if r["set"] == "saturation-sampled"]
    if not runs:
        return []
    first = runs[0]
    lines = [
        f"## Saturation, read by a sample ({first['connections']:,} streams, one topic, the "
        f"JSON stream at {first['rate']:g} publishes/s offered)",
        "",
        "As the saturation set, but only a sample of the streams reads its events (the "
        "others count their bytes), so that the server, not the load generator's "
        "decoding, is the limit. *Delivered/s* counts every stream's: published in the "
        "window x streams connected (the sample lost nothing, and the others took as "
        "many bytes per event); *per server core-s* divides it by the server's CPU. Ways "
        "in turns; ratios against the same round's identity.",
        "",
        "| round | way | read by | published/s | delivered/s | vs identity | server cores "
        "| delivered per server core-s | vs identity | wire B/event (read / drained) "
        "| p99 (sample) | lost (sample) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base: dict[int, tuple[float, float]] = {}
    ratios: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        r = run["result"]
        rate = r["published"] * r["connected"] / r["duration"] if r["duration"] else 0.0
        cpu = r.get("server_cpu_seconds")
        per_core = r["published"] * r["connected"] / cpu if cpu else 0.0
        if run["way"] == "identity":
            base[run["round"]] = (rate, per_core)
        b_rate, b_core = base.get(run["round"], (0.0, 0.0))
        if run["way"] != "identity" and b_rate and b_core:
            ratios.setdefault(run["way"], []).append((rate / b_rate, per_core / b_core))
        lines.append(
            f"| {run['round']} | {run['way']} | {_f(r['reading_connections'])} "
            f"| {r['published'] / r['duration']:,.1f} | {_f(rate)} | {_ratio(rate, b_rate)} "
            f"| {_f(r['server_cores_used'], '.2f')} | {_f(per_core)} "
            f"| {_ratio(per_core, b_core)} "
            f"| {_f(r['wire_bytes_per_event'], ',.1f')} / "
            f"{_f(r['drained_bytes_per_event'], ',.1f')} "
            f"| {_f(r['p99_ms'], '.1f', ' ms')} | {r['lost']} |"
        )
    lines += ["", "| way | rounds | delivered/s vs identity | per server core-s vs identity |"]
    lines.append("|---|---:|---:|---:|")
    for way, values in ratios.items():
        rates = [v[0] for v in values]
        cores = [v[1] for v in values]
        lines.append(
            f"| {way} | {len(values)} | {min(rates):.2f}-{max(rates):.2f}x "
            f"| {min(cores):.2f}-{max(cores):.2f}x |"
        )
    lines.append("")
    return lines


def markdown(report: dict[str, Any]) -> str:
    cond, mach = report["conditions"], report["machine"]
    lines = [
        "# Compressed event streams",
        "",
        f"Generated by `python -m benches.compression{(' ' + cond['argv']) if cond['argv'] else ''}`"
        f" on {mach['date']}. Same run, same machine: the ratios are what to read.",
        "",
    ]
    main_runs = [r for r in report["runs"] if r["set"] == "main"]
    if main_runs:
        lines += [
            f"## Bytes, CPU, memory and latency per way (one topic, {cond['rate']:g} publishes/s)",
            "",
            "| stream | streams | way | coding seen | wire B/event | vs identity | decoded "
            "B/event | server CPU µs / delivered | RSS/stream idle | RSS/stream busy "
            "| vs identity (busy) | p50 | p99 | p99 vs identity | server publish-to-write "
            "mean / p99 | server mean vs identity | delivered / expected | lost |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        base: dict[tuple[str, int], dict[str, Any]] = {
            (r["kind"], r["connections"]): r for r in main_runs if r["way"] == "identity"
        }
        for run in main_runs:
            r = run["result"]
            b = base.get((run["kind"], run["connections"]))
            br = b["result"] if b else {}
            busy, bbusy = run["rss_busy_per_stream_kb"], (b or {}).get("rss_busy_per_stream_kb")
            lines.append(
                f"| {run['kind']} | {run['connections']:,} | {run['way']} "
                f"| {', '.join(sorted(r['content_codings'])) or '-'} "
                f"| {_f(r['wire_bytes_per_event'], ',.1f')} "
                f"| {_ratio(r['wire_bytes_per_event'], br.get('wire_bytes_per_event'))} "
                f"| {_f(r['decoded_bytes_per_event'], ',.1f')} "
                f"| {_f(run['cpu_us_per_delivered'], '.2f')} "
                f"| {_f(r['rss_per_connection_kb'], '.2f', ' KB')} "
                f"| {_f(busy, '.2f', ' KB')} "
                f"| {'-' if busy is None or bbusy is None else f'{busy - bbusy:+.2f} KB'} "
                f"| {_f(r['p50_ms'], '.1f', ' ms')} | {_f(r['p99_ms'], '.1f', ' ms')} "
                f"| {_ratio(r['p99_ms'], br.get('p99_ms'))} "
                f"| {_server_side(run)} "
                f"| {_ratio(_server_mean(run), _server_mean(b))} "
                f"| {r['delivered']:,} / {r['expected']:,} | {r['lost']} |"
            )
        lines.append("")
    lines += _latency_section(report)
    lines += _sampled_saturation_section(report)
    sat = [r for r in report["runs"] if r["set"] == "saturation"]
    if sat:
        base_run = next((r for r in sat if r["way"] == "identity"), None)
        b = base_run["result"] if base_run else {}
        lines += [
            f"## Saturation ({sat[0]['connections']:,} streams, one topic, the JSON stream at "
            f"{sat[0]['rate']:g} publishes/s)",
            "",
            "| way | delivered/s | vs identity | server cores | delivered per server core-s "
            "| vs identity | wire B/event | p99 | server publish-to-write mean / p99 | lost |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for run in sat:
            r = run["result"]
            lines.append(
                f"| {run['way']} | {_f(r['delivered_per_second'])} "
                f"| {_ratio(r['delivered_per_second'], b.get('delivered_per_second'))} "
                f"| {_f(r['server_cores_used'], '.2f')} "
                f"| {_f(r['delivered_per_server_core_second'])} "
                f"| {_ratio(r['delivered_per_server_core_second'], b.get('delivered_per_server_core_second'))} "
                f"| {_f(r['wire_bytes_per_event'], ',.1f')} | {_f(r['p99_ms'], '.1f', ' ms')} "
                f"| {_server_side(run)} | {r['lost']} |"
            )
        lines.append("")
    users = [r for r in report["runs"] if r["set"] == "users"]
    if users:
        base_run = next((r for r in users if r["way"] == "identity"), None)
        bbusy = base_run["rss_busy_per_stream_kb"] if base_run else None
        lines += [
            f"## Per-user topics ({users[0]['connections']:,} streams, each on a topic of its "
            "own, the JSON stream)",
            "",
            "| way | RSS/stream idle | RSS/stream busy | vs identity (busy) | wire B/event "
            "| p99 | delivered / expected |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for run in users:
            r = run["result"]
            busy = run["rss_busy_per_stream_kb"]
            lines.append(
                f"| {run['way']} | {_f(r['rss_per_connection_kb'], '.2f', ' KB')} "
                f"| {_f(busy, '.2f', ' KB')} "
                f"| {'-' if busy is None or bbusy is None else f'{busy - bbusy:+.2f} KB'} "
                f"| {_f(r['wire_bytes_per_event'], ',.1f')} | {_f(r['p99_ms'], '.1f', ' ms')} "
                f"| {r['delivered']:,} / {r['expected']:,} |"
            )
        lines.append("")
    anchor = [r for r in report["runs"] if r["set"] == "nchan"]
    if anchor:
        lines += [
            "## Anchor: Nchan behind nginx `gzip on` for `text/event-stream`",
            "",
            "| server | streams | coding seen | wire B/event | decoded B/event | p50 | p99 "
            "| delivered / expected | lost |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for run in anchor:
            r = run["result"]
            lines.append(
                f"| {run['way']} | {run['connections']:,} "
                f"| {', '.join(sorted(r['content_codings'])) or '-'} "
                f"| {_f(r['wire_bytes_per_event'], ',.1f')} "
                f"| {_f(r['decoded_bytes_per_event'], ',.1f')} "
                f"| {_f(r['p50_ms'], '.1f', ' ms')} | {_f(r['p99_ms'], '.1f', ' ms')} "
                f"| {r['delivered']:,} / {r['expected']:,} | {r['lost']} |"
            )
        lines.append("")
    resync = report.get("resync")
    if resync:
        lines += [
            "## Resynchronisation points (in process, the topic's compressor alone)",
            "",
            "A stream that joins a topic waits for the next point; each point loses the "
            "context. Bytes per event with a point every so many bytes of the stream, "
            f"over {resync['events']:,} events:",
            "",
            "| stream | coding | point every | bytes/event | vs identity | vs never |",
            "|---|---|---:|---:|---:|---:|",
        ]
        never = {
            (r["kind"], r["coding"]): r["per_event"] for r in resync["rows"] if r["every"] == 0
        }
        for r in resync["rows"]:
            every = (
                "never"
                if r["every"] == 0
                else "each event alone"
                if r["every"] < 0
                else f"{r['every'] // 1024} KiB"
            )
            lines.append(
                f"| {r['kind']} | {r['coding']} | {every} | {r['per_event']:,.1f} "
                f"| {r['per_event'] / r['identity']:.3f}x "
                f"| {r['per_event'] / never[(r['kind'], r['coding'])]:.2f}x |"
            )
        lines.append("")
    lines += [
        "## Conditions",
        "",
        "- *wire B/event*: response body bytes received while measuring (compressed as they "
        "came, chunked framing left out) / events read; *decoded*: the same after decoding. "
        "Both include each stream's opening, ids and heartbeats.",
        "- *server publish-to-write*: the server's own latency, from a publish accepted to "
        "its last in-sync stream's write handed to Granian (`sse_fast_publish_to_write_seconds`"
        ", over the run: mean, and the upper bound of the bucket holding the p99); the "
        "client's p50/p99 add the load generator's reading and decoding, on the same 2 CPUs "
        "(decoding every compressed stream's bytes is work of its own there, a browser's "
        "elsewhere).",
        "- *server CPU µs / delivered*: CPU seconds of the server's processes over the window "
        "(+1 s) / events delivered. *RSS/stream idle*: (server RSS with the streams connected, "
        "before publishing - before they connected) / streams; *busy*: the same sampled in the "
        "middle of the measured window (compressors in use).",
        f"- Load: {cond['warmup']:g} s warm-up, {cond['duration']:g} s measured, one publisher "
        "(one keep-alive connection), publishes stop at the window's end; latency = client "
        "parse time - publish wall time (same clock). Streams ask with `Accept-Encoding: "
        "<coding>` (identity: none); one load-generator process per 9,000 streams.",
        "- Server: `sse-fast serve` (its defaults but the flags shown per run, and the load "
        "test's: anonymous publish, no per-client limits, a data directory of its own), one "
        f"Granian worker per {STREAMS_PER_WORKER:,} streams. Nchan: nginx with the nchan "
        "module, `gzip on; gzip_types text/event-stream; gzip_min_length 0`.",
        f"- Machine: {mach['cpu']}, {mach['cpus']} CPUs, {mach['memory_gb']} GB, Linux "
        f"{mach['kernel']}. Server and load generator share the CPUs. Python {mach['python']}, "
        f"granian {mach['granian']}, sse_fast {mach['sse_fast']} (git {mach['git_commit']}), "
        f"zstandard {cond['zstandard']}, zlib {cond['zlib']}.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="5000,40000", help="stream counts of the main set")
    parser.add_argument("--kinds", default="json,html")
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--sets", default="resync,main,latency,saturation,users,nchan")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--saturation-rate", type=float, default=150.0)
    parser.add_argument("--saturation-streams", type=int, default=5000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--pause", type=float, default=2.0)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--report", default="compression", help="the results' file name, without .md/.json"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the latency set")
    parser.add_argument(
        "--readers", type=int, default=100, help="streams that read their events (latency set)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short check: 1,000 streams, identity and topic gzip/zstd, the JSON stream",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.kinds, args.sets = "1000", "json", "main"
        args.ways, args.duration, args.warmup = "identity,topic gzip,topic zstd", 2.0, 1.0
    sizes = [int(x) for x in args.sizes.split(",") if x]
    kinds = [k for k in args.kinds.split(",") if k]
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    sets = [s for s in args.sets.split(",") if s]
    if not 1 <= args.rounds <= 10 or args.readers < 1:
        parser.error("--rounds is between 1 and 10, --readers at least 1")
    unknown = [w for w in ways if w not in WAYS] + [k for k in kinds if k not in STAMPS]
    if unknown:
        parser.error(f"unknown: {unknown}")
    if not 0 < args.duration <= 60 or not all(0 < n <= 60_000 for n in sizes):
        parser.error("--duration is bounded to 60 s, --sizes to 60,000 streams")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)

    def log(text: str) -> None:
        print(text, flush=True)

    runs: list[dict[str, Any]] = []
    import zlib

    import zstandard

    given = [a for a in (argv if argv is not None else sys.argv[1:]) if a]
    report = {
        "benchmark": "compression",
        "machine": system.machine_and_build(),
        "conditions": {
            "rate": args.rate,
            "duration": args.duration,
            "warmup": args.warmup,
            "zstandard": zstandard.__version__,
            "zlib": zlib.ZLIB_RUNTIME_VERSION,
            "argv": " ".join(given),
        },
        "runs": runs,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)

    def write() -> str:
        """The report so far (after every run: a run that fails keeps the others)."""
        (args.out_dir / f"{args.report}.json").write_text(json.dumps(report, indent=2) + "\n")
        text = markdown(report)
        (args.out_dir / f"{args.report}.md").write_text(text)
        return text

    def one(
        set_name: str, way: str, kind: str, connections: int, round_: int = 1, **kw: Any
    ) -> None:
        if runs:
            time.sleep(args.pause)
        run = run_one(way, kind, connections, args, log, **kw)
        run["set"], run["round"] = set_name, round_
        runs.append(run)
        log(loadgen_line(run))
        write()

    if "resync" in sets:
        report["resync"] = {"events": 3000, "rows": resync_ratios(3000)}
        write()
    if "main" in sets:
        for size in sizes:
            for kind in kinds:
                for way in ways:
                    one("main", way, kind, size)
    if "latency" in sets:
        # the sample reads, the rest drain: the latency is the server's (see LATENCY_WAYS)
        for size in sizes:
            for kind in kinds:
                for round_ in range(1, args.rounds + 1):
                    for way in LATENCY_WAYS:
                        every = max(1, size // args.readers)
                        one("latency", way, kind, size, read_every=every, round_=round_)
    if "saturation" in sets:
        for way in ["identity", "topic gzip", "topic zstd"]:
            one("saturation", way, "json", args.saturation_streams, rate=args.saturation_rate)
    if "saturation-sampled" in sets:
        # the same load read by a sample: the server, not the load generator's decoding,
        # is the limit; deliveries to every stream = published x connected
        every = max(1, args.saturation_streams // args.readers)
        for round_ in range(1, args.rounds + 1):
            for way in LATENCY_WAYS:
                one(
                    "saturation-sampled",
                    way,
                    "json",
                    args.saturation_streams,
                    rate=args.saturation_rate,
                    read_every=every,
                    round_=round_,
                )
    if "users" in sets:
        for way in ["identity", "topic gzip", "topic zstd", "stream gzip"]:
            one("users", way, "json", args.users, rate=1.0, topics=args.users)
    if "nchan" in sets:
        one("nchan", "nchan-nginx-gzip", "json", 5000, nchan=True)
    text = write()
    print(text)
    return 0


def loadgen_line(run: dict[str, Any]) -> str:
    r = run["result"]
    return (
        f"  -> wire {r['wire_bytes_per_event']} B/ev, decoded {r['decoded_bytes_per_event']} "
        f"B/ev, cpu {run['cpu_us_per_delivered']} us/ev, rss busy "
        f"{run['rss_busy_per_stream_kb']} KB/stream, p99 {r['p99_ms']} ms"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
