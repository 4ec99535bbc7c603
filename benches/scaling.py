"""How cost grows: memory, delivery and notifications from 1,000 to 40,000 open
streams, sse_fast and Nchan on the same axes (issue 30, part 4).

    python -m benches.scaling                   # the full run (about 28 min on 2 cores)
    python -m benches.scaling --quick           # smoke run: 1,000 and 2,000 streams, one run
    python -m benches.scaling --sizes 1000,10000 --parts memory --targets sse_fast,bare-granian
    python -m benches.scaling --replot          # the report and plots again, from the JSON

Three parts, each point repeated ``--runs`` times (median and min-max reported),
every run in a fresh server that is stopped afterwards:

(a) ``memory``: server RSS per open stream against open streams, with the streams
    idle and while a broadcast runs. The idle figure is ``sse_fast.loadgen``'s
    (RSS with every client connected and idle, less RSS before they connected,
    over the streams); the broadcast figure is the peak RSS sampled every 0.25 s
    from the first publish until the clients' final reports, less the same base.
    ``bare-granian`` is the floor: ``benches.stream_memory``'s bare Granian ASGI
    app (SSE headers, one frame, then it holds the stream) with sse_fast's Granian
    settings and the same number of workers; it has no broadcast.
(b) ``delivery``: the same runs as (a) (one topic, every stream subscribed, a fixed
    publish rate): delivered events/s, p50/p99 latency (publish to client parse)
    and the server's CPU against open streams.
(c) ``notifications``: notifications/s against subscribers, one subscriber per
    topic, notifications to random topics, run by ``benches.notifications`` at each
    size: by default single requests at full speed (wrk, 16 connections), the one
    way in that every server has (``--ways`` adds sse_fast's batch and stream
    ladders). As there, the server is pinned to core 1 and the load to core 0.

Every server runs ``--workers`` processes (3 by default, at every size, for sse_fast,
Nchan and the floor alike): ``ulimit -n`` is 20,000 per process here, so 40,000
streams need at least 3. The load generator spreads its clients over processes and
127.0.0.x source addresses. A target that fails at a size is recorded as failed with
the reason, and the run goes on. Loopback only; every run is bounded in time and the
whole run by ``--max-minutes``.

Writes ``benches/results/scaling.md``, ``scaling.json``, ``scaling_memory.png``,
``scaling_delivery.png`` and ``scaling_notifications.png`` (``--out``; a temporary
directory with ``--quick`` unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benches import notifications, peers, stream_memory
from benches.compare import Runner
from benches.server_bench import RESULTS, log
from benches.system import machine
from sse_fast.loadgen import run_load

TARGET_ORDER = ["sse_fast", "nchan", "bare-granian"]
PARTS = ["memory", "delivery", "notifications"]
WAYS = ["single", "batch", "stream"]
SIZES = [1000, 2000, 5000, 10_000, 20_000, 30_000, 40_000]
QUICK_SIZES = [1000, 2000]
WORKERS = 3  # 40,000 streams at 20,000 descriptors per process
HEARTBEAT = 15.0
RATE = 2.0  # publishes/s to the one topic of (a) and (b): 80,000 deliveries/s at 40,000
CONNECTED_ENOUGH = 0.99  # a run with fewer streams connected counts as failed
SETTLE_S = 1.0  # after the server answers, before run_load reads its base RSS
SAMPLE_EVERY_S = 0.25  # RSS sampling while the broadcast runs
MAX_MINUTES = 50.0
# for the estimate printed at the start (measured here: 2 cores, a busy machine)
START_STOP_S = 4.0  # start until ready, stop, client processes spawned and joined
STREAMS_PER_S = 3000.0  # streams connected, then torn down at the stop


# ---------------------------------------------------------------- targets


@dataclasses.dataclass(eq=False)
class BareGranianTarget(peers.Target):
    """The floor of (a): ``benches.stream_memory.floor_app`` under Granian, started as
    ``benches.stream_memory`` starts it (sse_fast's Granian settings), with this
    target's workers. It delivers nothing: a "publish" is ``GET /healthz``, so that
    ``run_load``'s publisher is answered while the streams stay idle."""

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv, extra = stream_memory.floor_command(self.port)
        backpressure = max(1, peers.hard_nofile() - peers.RESERVED_FDS)  # as sse_fast's
        for flag, value in (
            ("--host", self.host),
            ("--workers", str(self.workers)),
            ("--backpressure", str(backpressure)),
        ):
            argv[argv.index(flag) + 1] = value
        return argv, peers.REPO_ROOT, peers.clean_env(extra)

    def publish_request(self, topic: str, data: str) -> tuple[str, str, dict[str, str], bytes]:
        return "GET", "/healthz", {}, b""

    def ready(self) -> bool:
        return super().ready() and len(self.server_pids()) >= self.workers

    def server_pids(self) -> list[int]:
        # the Granian workers: not the supervisor, not multiprocessing's resource tracker
        return [p for p in super().server_pids() if "resource_tracker" not in peers.cmdline(p)]

    def versions(self) -> dict[str, str]:
        out = super().versions()
        out.update(granian=peers.dist_version("granian"), uvloop=peers.dist_version("uvloop"))
        return out

    def notes(self) -> list[str]:
        return [
            f"{self.workers} Granian worker(s), ASGI, uvloop, backlog {peers.BACKLOG}, "
            "backpressure = file limit - 64, HTTP/1 buffer 8 KiB (sse_fast's settings); "
            "the app sends the SSE headers and one frame, then waits for the disconnect"
        ]


def make_targets(
    names: list[str], workers: int, heartbeat: float
) -> tuple[list[peers.Target], dict[str, str]]:
    """The targets of this run, in TARGET_ORDER, each with ``workers`` processes, and
    {name: reason} for those that cannot run here."""
    available, skipped = peers.available_targets(heartbeat=heartbeat, workers=workers)
    by_name = {t.name: t for t in available}
    out: list[peers.Target] = []
    reasons: dict[str, str] = {}
    for name in names:
        if name == "sse_fast":
            base = by_name.get("sse_fast-1w")
            if base is None:
                reasons[name] = skipped.get("sse_fast-1w", "not available")
            else:
                out.append(dataclasses.replace(base, name=name, workers=workers))
        elif name == "nchan":
            if "nchan" in by_name:
                out.append(dataclasses.replace(by_name["nchan"], workers=workers))
            else:
                reasons[name] = skipped.get("nchan", "not available")
        elif name == "bare-granian":
            port = peers.free_ports(peers.HOST, 1)[0]
            out.append(
                BareGranianTarget(name, peers.HOST, port, heartbeat=heartbeat, workers=workers)
            )
        else:
            reasons[name] = f"unknown target (choose from {', '.join(TARGET_ORDER)})"
    return out, reasons


# ---------------------------------------------------------------- plan


def plan(
    quick: bool,
    sizes: list[int] | None = None,
    runs: int = 0,
    workers: int = WORKERS,
    rate: float = RATE,
    ways: list[str] | None = None,
) -> dict[str, Any]:
    """Every condition of the run (recorded in the report as is)."""
    timing = (
        {"duration": 3.0, "warmup": 1.0, "drain": 2.0}
        if quick
        else {"duration": 8.0, "warmup": 2.0, "drain": 3.0}
    )
    return {
        "quick": quick,
        "sizes": sorted(sizes or (QUICK_SIZES if quick else SIZES)),
        "runs": runs or (1 if quick else 2),
        "workers": workers,
        "heartbeat_s": HEARTBEAT,
        "cooldown_s": 1.0 if quick else 2.0,
        "settle_s": SETTLE_S,
        "connected_enough": CONNECTED_ENOUGH,
        "broadcast": {
            "rate": rate,
            "topics": 1,
            "publishers": 1,
            "payload_bytes": 64,
            "strict_window": True,
            **timing,
        },
        # the floor only needs its idle RSS: run_load's shortest bounded run
        "floor": {"rate": 1.0, "duration": 0.5, "warmup": timing["warmup"], "drain": 0.5},
        "notifications": {
            "seconds": 3.0 if quick else 8.0,
            "ways": ways or ["single"],
        },
    }


def nchan_memory(subscribers: int) -> str:
    """Nchan's shared memory for one channel per subscriber: benches.notifications's
    512m for 10,000, and 512m more per further 10,000."""
    return f"{512 * max(1, math.ceil(subscribers / 10_000))}m"


def notification_params(p: dict[str, Any], size: int) -> dict[str, Any]:
    """``benches.notifications.params`` for ``size`` subscribers, with this run's
    heartbeat, only the chosen ways and room in Nchan for every channel."""
    n = notifications.params(p["quick"], subscribers=size, seconds=p["notifications"]["seconds"])
    n["heartbeat"] = p["heartbeat_s"]
    n["nchan_shared_memory"] = nchan_memory(size)
    ways = p["notifications"]["ways"]
    n["ladders"] = {way: (steps if way in ways else []) for way, steps in n["ladders"].items()}
    return n


def runs_planned(p: dict[str, Any], parts: list[str], names: list[str]) -> list[tuple[str, str]]:
    """(kind, target) of every run, kind = broadcast, floor or notifications, once per size
    and repetition: (a) and (b) share the broadcast runs."""
    kinds: list[tuple[str, str]] = []
    for name in names:
        if name == "bare-granian":
            if "memory" in parts:
                kinds.append(("floor", name))
        elif {"memory", "delivery"} & set(parts):
            kinds.append(("broadcast", name))
    for name in names:
        if "notifications" in parts and name != "bare-granian":
            kinds.append(("notifications", name))
    return kinds


def estimate_seconds(p: dict[str, Any], kind: str, size: int, target: str) -> float:
    """A rough duration of one run (for the estimate and the time budget); a ladder
    counts in full (it stops at its first step behind)."""
    fixed = START_STOP_S + float(p["settle_s"]) + float(p["cooldown_s"]) + size / STREAMS_PER_S
    if kind in ("broadcast", "floor"):
        t = p[kind]
        window = min(2.0, t["warmup"]) + t["warmup"] + 0.5 + t["duration"] + t["drain"]
        return fixed + float(window)
    n = notification_params(p, size)
    ways = notifications.MODES["sse_fast" if target.startswith("sse_fast") else "other"]
    steps = sum(len(steps) for way, steps in n["ladders"].items() if way in ways)
    return fixed + steps * (float(n["seconds"]) + float(n["drain"]) + 0.5)


def estimate_minutes(p: dict[str, Any], parts: list[str], names: list[str]) -> float:
    per_pass = sum(
        estimate_seconds(p, kind, size, name)
        for kind, name in runs_planned(p, parts, names)
        for size in p["sizes"]
    )
    return round(per_pass * int(p["runs"]) / 60, 1)


# ---------------------------------------------------------------- measuring


class RssSampler:
    """The summed RSS (KiB) of ``pids()`` every ``interval`` s, in a thread of its own."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = SAMPLE_EVERY_S) -> None:
        self.pids = pids
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (monotonic time, KiB)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.monotonic(), peers.rss_kb(self.pids())))
            self._done.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(5)

    def peak(self, since: float) -> int | None:
        """The highest sample taken at or after ``since`` (None without one)."""
        return max((kib for at, kib in self.samples if at >= since and kib), default=None)


def streams_row(result: dict[str, Any], size: int, run: int, peak_kb: int | None) -> dict[str, Any]:
    """One run of (a)/(b): run_load's Result as a dict, plus the size, the repetition,
    the broadcast's peak RSS and an ``error`` when too few streams connected."""
    row = {**result, "size": size, "run": run}
    connected = result["connected"]
    base = result.get("server_rss_base_kb")
    row["rss_broadcast_peak_kb"] = peak_kb
    row["rss_per_stream_broadcast_kb"] = (
        round((peak_kb - base) / connected, 2) if peak_kb and base and connected else None
    )
    if connected < CONNECTED_ENOUGH * size:
        failures = ", ".join(
            f"{n} x {k}" for k, n in sorted(result.get("connect_failures", {}).items())
        )
        row["error"] = f"only {connected:,} of {size:,} streams connected" + (
            f" ({failures})" if failures else ""
        )
    return row


def measure_streams(
    target: peers.Target, size: int, run: int, load: dict[str, Any], runner: Runner
) -> dict[str, Any]:
    """Start ``target``, open ``size`` streams on one topic, publish as ``load`` says,
    sample the server's RSS meanwhile; the run's row (the caller stops the target)."""
    target.start()
    runner.commands[target.name] = target.command_line
    time.sleep(SETTLE_S)  # every worker's imports done before the base RSS is read
    reported: list[float] = []

    def progress(line: str) -> None:
        reported.append(time.monotonic())  # the first line: every client connected
        log("    " + line.strip())

    with RssSampler(target.server_pids) as sampler:
        result = run_load(**target.load_arguments(), connections=size, progress=progress, **load)
    # run_load waits min(2, warmup) s after the connect report, then publishes
    publishing_from = reported[0] + min(2.0, load["warmup"]) if reported else math.inf
    return streams_row(dataclasses.asdict(result), size, run, sampler.peak(publishing_from))


def notification_rows(
    steps: list[dict[str, Any]], target: str, size: int, run: int, ways: list[str]
) -> list[dict[str, Any]]:
    """One row per way in: its best step (the highest kept up, else the highest run)."""
    rows = []
    for way in ways:
        top = notifications.best(steps, target, way)
        if top is not None:
            rows.append({**top, "way": way, "size": size, "run": run})
    return rows


# ---------------------------------------------------------------- aggregating


def spread(values: list[float]) -> dict[str, float] | None:
    """Median, min and max of ``values`` (None when empty)."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# metric name -> the row's key it is read from ("" for COMPUTED ones)
MEMORY_METRICS = {
    "per_stream_idle_kb": "rss_per_connection_kb",
    "per_stream_broadcast_kb": "rss_per_stream_broadcast_kb",
    "idle_mb": "server_rss_idle_kb",
    "broadcast_mb": "rss_broadcast_peak_kb",
}
DELIVERY_METRICS = {
    "publishes_per_s": "",
    "delivered_per_s": "delivered_per_second",
    "p50_ms": "p50_ms",
    "p99_ms": "p99_ms",
    "server_cores": "server_cores_used",
    "delivered_share": "",
    "lost": "lost",
    "duplicates": "duplicates",
}
NOTIFICATION_METRICS = {
    "delivered_per_s": "delivered_per_s",
    "published_per_s": "published_per_s",
    "delivery_p99_ms": "delivery_p99_ms",
    "publish_p99_ms": "publish_p99_ms",
    "server_cpu": "server_cpu",
    "load_cpu": "load_cpu",
}
COMPUTED: dict[str, Callable[[dict[str, Any]], float | None]] = {
    # publishes done per second of the measured window
    "publishes_per_s": lambda r: r["published"] / r["duration"] if r.get("duration") else None,
    "delivered_share": lambda r: r["delivered"] / r["expected"] if r.get("expected") else None,
}


def _metric(row: dict[str, Any], name: str, key: str) -> float | None:
    if not key:
        return COMPUTED[name](row)
    value = row.get(key)
    if value is None:
        return None
    if name.endswith("_mb"):  # from KiB
        return float(value) / 1024
    return float(value)


def aggregate(
    rows: list[dict[str, Any]], metrics: dict[str, str], series: Callable[[dict[str, Any]], str]
) -> list[dict[str, Any]]:
    """One point per (series, size): how many runs, the failed runs' reasons, and each
    metric's median/min/max over the runs that did not fail."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((series(row), row["size"]), []).append(row)
    points = []
    for (name, size), group in groups.items():
        ok = [r for r in group if not r.get("error")]
        point: dict[str, Any] = {
            "series": name,
            "size": size,
            "runs": len(group),
            "ok": len(ok),
            "failed": [r["error"] for r in group if r.get("error")],
        }
        for metric, key in metrics.items():
            values = [v for v in (_metric(r, metric, key) for r in ok) if v is not None]
            point[metric] = spread(values)
        points.append(point)
    return sorted(points, key=lambda p: (_series_order(p["series"]), p["size"]))


def _series_order(name: str) -> tuple[int, str]:
    target = name.split(" ")[0]
    index = TARGET_ORDER.index(target) if target in TARGET_ORDER else len(TARGET_ORDER)
    return index, name


def summarise(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The points of every part, from the report's rows."""
    streams = report["rows"]["broadcast"] + report["rows"]["floor"]
    return {
        "memory": aggregate(streams, MEMORY_METRICS, lambda r: r["target"]),
        "delivery": aggregate(report["rows"]["broadcast"], DELIVERY_METRICS, lambda r: r["target"]),
        "notifications": aggregate(
            report["rows"]["notifications"],
            NOTIFICATION_METRICS,
            lambda r: f"{r['target']} {r['way']}",
        ),
    }


# ---------------------------------------------------------------- report


def cell(value: dict[str, float] | None, spec: str = ",.1f") -> str:
    """``median (min-max)``, or the median alone for a single run, or ``-``."""
    if value is None:
        return "-"
    if value["min"] == value["max"]:
        return f"{value['median']:{spec}}"
    return f"{value['median']:{spec}} ({value['min']:{spec}}-{value['max']:{spec}})"


def _runs(point: dict[str, Any]) -> str:
    text = f"{point['ok']}/{point['runs']}"
    if point["failed"]:
        text += " **failed**: " + "; ".join(dict.fromkeys(point["failed"]))
    return text


def memory_table(points: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| target | streams | runs ok | KB/stream idle | KB/stream broadcast "
        "| server RSS idle MB | server RSS broadcast MB |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for pt in points:
        lines.append(
            f"| {pt['series']} | {pt['size']:,} | {_runs(pt)} "
            f"| {cell(pt['per_stream_idle_kb'])} | {cell(pt['per_stream_broadcast_kb'])} "
            f"| {cell(pt['idle_mb'], ',.0f')} | {cell(pt['broadcast_mb'], ',.0f')} |"
        )
    return lines


def delivery_table(points: list[dict[str, Any]], rate: float) -> list[str]:
    lines = [
        "| target | streams | runs ok | asked /s (rate x streams) | publishes/s done "
        "| delivered /s | delivered/expected | p50 ms | p99 ms | server cores | lost | dup |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pt in points:
        lines.append(
            f"| {pt['series']} | {pt['size']:,} | {_runs(pt)} | {rate * pt['size']:,.0f} "
            f"| {cell(pt['publishes_per_s'], '.2f')} "
            f"| {cell(pt['delivered_per_s'], ',.0f')} | {cell(pt['delivered_share'], '.1%')} "
            f"| {cell(pt['p50_ms'])} | {cell(pt['p99_ms'])} | {cell(pt['server_cores'], '.2f')} "
            f"| {cell(pt['lost'], ',.0f')} | {cell(pt['duplicates'], ',.0f')} |"
        )
    return lines


def notifications_table(points: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| target, way | subscribers | runs ok | notifications delivered /s | published /s "
        "| delivery p99 ms | publish p99 ms | server CPU | load CPU |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for pt in points:
        lines.append(
            f"| {pt['series']} | {pt['size']:,} | {_runs(pt)} "
            f"| {cell(pt['delivered_per_s'], ',.0f')} | {cell(pt['published_per_s'], ',.0f')} "
            f"| {cell(pt['delivery_p99_ms'])} | {cell(pt['publish_p99_ms'])} "
            f"| {cell(pt['server_cpu'], '.2f')} | {cell(pt['load_cpu'], '.2f')} |"
        )
    return lines


def command_line(report: dict[str, Any]) -> str:
    return "python -m benches.scaling" + "".join(f" {a}" for a in report.get("argv", []))


def conditions(report: dict[str, Any]) -> list[str]:
    """The run's conditions, as Markdown bullets."""
    p = report["conditions"]
    b, f, n = p["broadcast"], p["floor"], p["notifications"]
    return [
        f"- Sizes {', '.join(f'{s:,}' for s in p['sizes'])} open streams; each point run "
        f"{p['runs']} time(s), a fresh server each time; figures are the median "
        "(min-max) of the runs that did not fail. A run fails when an exception stops it "
        f"or fewer than {p['connected_enough']:.0%} of its streams connect.",
        f"- Every server runs **{p['workers']} worker processes at every size** (sse_fast "
        f"`--workers {p['workers']}` with its relay process, Nchan `worker_processes "
        f"{p['workers']}`, the floor `granian --workers {p['workers']}`): 20,000 "
        "descriptors per process here. Heartbeat (Nchan: ping) every "
        f"{p['heartbeat_s']:g} s. {p['cooldown_s']:g} s pause between runs.",
        f"- (a) and (b), one run each: every stream on one topic; {p['settle_s']:g} s after "
        "the server answers its base RSS is read, the streams connect, "
        f"{min(2.0, b['warmup']):g} s later the idle RSS is read, then one publisher "
        f"publishes {b['rate']:g} events/s of {b['payload_bytes']} bytes of JSON "
        f"(publish wall time, publisher, sequence): {b['warmup']:g} s warm-up, "
        f"{b['duration']:g} s measured (strict window), {b['drain']:g} s drain.",
        "- RSS = the summed VmRSS of the processes that hold the streams (sse_fast: Granian "
        "workers + relay; Nchan: nginx workers; floor: Granian workers; never the "
        "supervisor or master). Per stream = (RSS - base) / streams connected; idle: "
        "`sse_fast.loadgen`'s reading; broadcast: the peak of samples every "
        f"{SAMPLE_EVERY_S:g} s from the first publish to the clients' final reports. "
        "Nchan's shared memory is counted in each worker that touched it. KB and MB are "
        "VmRSS's KiB and MiB.",
        f"- Floor (bare-granian): the same run with {f['duration']:g} s of `GET /healthz` "
        "in place of publishes: idle RSS only.",
        "- Latency = client parse time - publish wall time (same clock); server cores = "
        "server CPU-seconds / measured window. Clients: `sse_fast.loadgen` (one process "
        "per 9,000 streams, one source address 127.0.0.x per 8,000), sharing the 2 cores "
        "with the server: at the largest sizes the clients may be what falls behind.",
        f"- (c) `benches.notifications` at each size: one subscriber per topic `user/<n>`, "
        f"ways {', '.join(n['ways'])} (Nchan: single only), steps of {n['seconds']:g} s "
        "with 2 s drain; server pinned to core 1, load to core 0. Nchan's "
        "`nchan_shared_memory_size` is 512m per 10,000 channels (at least 512m). "
        "Its conditions:",
        *(
            "  " + line
            for line in notifications.conditions(
                {**notifications.params(p["quick"]), "heartbeat": p["heartbeat_s"]}
            )[1:-1]
        ),
    ]


def write_markdown(report: dict[str, Any], path: Path) -> None:
    p = report["conditions"]
    points = report["points"]
    parts = report["parts"]
    stem = path.stem
    lines = [
        f"# How cost grows: {min(p['sizes']):,} to {max(p['sizes']):,} open streams",
        "",
        f"Generated by `{command_line(report)}` with `sse_fast/loadgen/` "
        "(one server at a time, on the same 2-core machine as the clients)"
        + (". **Quick smoke run: not for comparison.**" if p["quick"] else ".")
        + (" **Interrupted: partial results.**" if report.get("interrupted") else ""),
        "",
        "## Conditions",
        "",
        *conditions(report),
    ]
    lines += [f"- {k}: {v}" for k, v in report["machine"].items()]
    if "load_average_after" in report:
        lines.append(f"- load_average_after: {report['load_average_after']}")
    for name, versions in report["versions"].items():
        lines.append(f"- {name}: {versions}")
        for note in report["notes"].get(name, []):
            lines.append(f"  - {note}")
        if name in report["commands"]:
            lines.append(f"  - command: `{report['commands'][name]}`")
    for name, reason in report["skipped"].items():
        lines.append(f"- **skipped {name}**: {reason}")
    for failure in report["failures"]:
        lines.append(
            f"- **failed** {failure['scenario']} on {failure['target']}: {failure['error']}"
        )
    lines += [
        f"- estimated {report.get('estimate_minutes', '?')} min, took "
        f"{report.get('total_minutes', '?')} min",
        "",
    ]
    if "memory" in parts:
        lines += [
            "## (a) Server memory per open stream",
            "",
            "Idle: every stream connected, nothing published. Broadcast: the peak while "
            f"{p['broadcast']['rate']:g} events/s go to every stream. bare-granian is the "
            "floor: what Granian and the event loop cost for a held stream, with no "
            "state of sse_fast's. At the small sizes the figure is coarse: RSS grows by "
            "whole heap arenas, and memory a server freed after its imports is reused "
            "before its RSS grows.",
            "",
            *memory_table(points["memory"]),
            "",
            f"![memory]({stem}_memory.png)",
            "",
        ]
    if "delivery" in parts:
        lines += [
            f"## (b) Delivery at {p['broadcast']['rate']:g} publishes/s to one topic",
            "",
            "Asked = publish rate x streams. The publisher waits for each publish's answer, "
            "so a server slow to answer publishes fewer than asked (publishes/s done). "
            "Expected = publishes done x streams; delivered/expected under 100 % with no "
            "loss means events were still unread when the run stopped (the server or the "
            "clients fell behind).",
            "",
            *delivery_table(points["delivery"], p["broadcast"]["rate"]),
            "",
            f"![delivery]({stem}_delivery.png)",
            "",
        ]
    if "notifications" in parts:
        lines += [
            "## (c) Notifications against subscribers, one topic each",
            "",
            "Per way in, the best step of each run (the highest kept up, else the highest "
            "run; with single requests, wrk's one step at full speed). One subscriber per "
            "topic: notifications delivered/s = events delivered/s.",
            "",
            *notifications_table(points["notifications"]),
            "",
            f"![notifications]({stem}_notifications.png)",
            "",
        ]
    path.write_text("\n".join(lines))


def _line(ax: Any, points: list[dict[str, Any]], metric: str, **style: Any) -> None:
    """Medians joined, min-max as error bars."""
    pts = [pt for pt in points if pt[metric] is not None]
    if not pts:
        return
    x = [pt["size"] for pt in pts]
    mid = [pt[metric]["median"] for pt in pts]
    err = [
        [m - pt[metric]["min"] for m, pt in zip(mid, pts, strict=True)],
        [pt[metric]["max"] - m for m, pt in zip(mid, pts, strict=True)],
    ]
    ax.errorbar(x, mid, yerr=err, marker="o", capsize=3, **style)


def plot(report: dict[str, Any], path: Path) -> list[Path]:
    """One PNG per part run: ``<path>_memory.png``, ``_delivery.png``, ``_notifications.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    p = report["conditions"]
    points = report["points"]
    colors = {name: f"C{i}" for i, name in enumerate(TARGET_ORDER)}
    # whole numbers as such, 12.5 as 12.5 (not rounded to a neighbour's label)
    plain = ticker.FuncFormatter(
        lambda v, _: f"{v:,.0f}" if v == int(v) else (f"{v:,.1f}" if v >= 1 else f"{v:g}")
    )
    title = f"{report['machine']['cpu']}, {report['machine']['date']}" + (
        " (quick smoke run)" if p["quick"] else ""
    )
    workers = f"{p['workers']} workers each"
    written = []

    def finish(fig: Any, axes: list[Any], name: str, heading: str) -> None:
        for ax in axes:
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
            ax.set_xscale("log")
            ax.set_xticks(p["sizes"])
            if ax.get_yscale() == "log":  # labels at 1, 2 and 5 of every decade
                ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(plain)
                axis.set_minor_formatter(ticker.NullFormatter())
            ax.tick_params(axis="x", labelrotation=30)
        fig.suptitle(f"{heading}; {title}", fontsize=10)
        fig.tight_layout()
        out = path.parent / f"{path.name}_{name}.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)

    def series(part: str) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for pt in points[part]:
            out.setdefault(pt["series"], []).append(pt)
        return out

    if "memory" in report["parts"] and points["memory"]:
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
        for name, pts in series("memory").items():
            c = colors.get(name, "black")
            _line(left, pts, "per_stream_idle_kb", color=c, label=f"{name} idle")
            _line(right, pts, "idle_mb", color=c, label=f"{name} idle")
            if name != "bare-granian":
                style = {"color": c, "linestyle": "--", "label": f"{name} broadcast"}
                _line(left, pts, "per_stream_broadcast_kb", **style)
                _line(right, pts, "broadcast_mb", **style)
        left.set(title="Server RSS per open stream", xlabel="open streams (log)", ylabel="KB")
        left.set_ylim(bottom=0)
        right.set(title="Server RSS in all", xlabel="open streams (log)", ylabel="MB (log)")
        right.set_yscale("log")
        finish(
            fig,
            [left, right],
            "memory",
            f"Memory against open streams ({workers}; broadcast {p['broadcast']['rate']:g}/s)",
        )

    if "delivery" in report["parts"] and points["delivery"]:
        fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
        rate = p["broadcast"]["rate"]
        axes[0].plot(p["sizes"], [rate * s for s in p["sizes"]], ":", color="grey", label="asked")
        for name, pts in series("delivery").items():
            c = colors.get(name, "black")
            _line(axes[0], pts, "delivered_per_s", color=c, label=name)
            _line(axes[1], pts, "p99_ms", color=c, label=f"{name} p99")
            _line(axes[1], pts, "p50_ms", color=c, linestyle="--", label=f"{name} p50")
            _line(axes[2], pts, "server_cores", color=c, label=name)
        axes[0].set(
            title="Delivered events/s", xlabel="open streams (log)", ylabel="events/s (log)"
        )
        axes[0].set_yscale("log")
        axes[1].set(
            title="Latency, publish to client", xlabel="open streams (log)", ylabel="ms (log)"
        )
        axes[1].set_yscale("log")
        axes[2].set(title="Server CPU", xlabel="open streams (log)", ylabel="cores")
        axes[2].set_ylim(bottom=0)
        finish(
            fig,
            list(axes),
            "delivery",
            f"Delivery against open streams, one topic, {rate:g} publishes/s ({workers})",
        )

    if "notifications" in report["parts"] and points["notifications"]:
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
        for i, (name, pts) in enumerate(series("notifications").items()):
            target, way = name.split(" ", 1)
            c = colors.get(target, f"C{i + 3}")
            style = {"color": c, "linestyle": {"single": "-", "batch": "--"}.get(way, ":")}
            _line(left, pts, "delivered_per_s", label=name, **style)
            _line(right, pts, "delivery_p99_ms", label=f"{name} delivery p99", **style)
        left.set(
            title="Notifications delivered/s (server on one core)",
            xlabel="subscribers, one topic each (log)",
            ylabel="notifications/s",
        )
        left.set_ylim(bottom=0)
        right.set(
            title="Delivery p99 (publish to subscriber)",
            xlabel="subscribers, one topic each (log)",
            ylabel="ms (log)",
        )
        right.set_yscale("log")
        finish(
            fig,
            [left, right],
            "notifications",
            f"Notifications to random topics against subscribers ({workers})",
        )
    return written


def write_outputs(report: dict[str, Any], out: Path) -> None:
    """The JSON, the Markdown report and the plots under the prefix ``out``."""
    report["points"] = summarise(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    write_markdown(report, out.with_suffix(".md"))
    try:
        for written in plot(report, out):
            log(f"wrote {written}")
    except Exception as exc:  # the tables are the results; a plot failure is reported
        log(f"plot failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


# ---------------------------------------------------------------- main


def ensure_wrk() -> str | None:
    """wrk (benches.notifications' single requests), from apt when missing; an error or None."""
    if shutil.which("wrk"):
        return None
    return peers.apt_install(["wrk"], 600.0) or (None if shutil.which("wrk") else "wrk missing")


def run_all(
    report: dict[str, Any],
    targets: list[peers.Target],
    parts: list[str],
    budget_s: float,
) -> None:
    """Every run of the plan, repetitions outermost (so drift spreads over all points);
    rows go into ``report`` as they come."""
    p = report["conditions"]
    names = [t.name for t in targets]
    by_name = {t.name: t for t in targets}
    plan_runs = runs_planned(p, parts, names)
    runner = Runner(len(plan_runs) * len(p["sizes"]) * p["runs"], p["cooldown_s"])
    report["failures"] = runner.failures
    report["commands"] = runner.commands
    started = time.monotonic()
    for run in range(1, p["runs"] + 1):
        for size in p["sizes"]:
            for kind, name in plan_runs:
                target = by_name[name]
                left = budget_s - (time.monotonic() - started)
                if estimate_seconds(p, kind, size, name) > left:
                    error = "not run: the time budget (--max-minutes) is spent"
                    log(f"    {kind} {size:,} on {name}: {error}")
                    report["rows"][kind].append(
                        {"target": name, "size": size, "run": run, "way": "single", "error": error}
                    )
                    continue
                known = len(runner.failures)
                rows = run_one(runner, target, kind, size, run, p)
                if rows is None:  # the runner recorded why
                    error = runner.failures[-1]["error"] if len(runner.failures) > known else "?"
                    rows = [{"target": name, "size": size, "run": run, "way": "single"}]
                    rows[0]["error"] = error
                for row in rows:
                    if row.get("error") and len(runner.failures) == known:
                        runner.failures.append(
                            {"scenario": f"{kind} {size:,}", "target": name, "error": row["error"]}
                        )
                report["rows"][kind] += rows


def run_one(
    runner: Runner, target: peers.Target, kind: str, size: int, run: int, p: dict[str, Any]
) -> list[dict[str, Any]] | None:
    """One run of ``kind`` at ``size`` (None when it failed: the runner has the reason)."""
    scenario = f"{kind} {size:,} (run {run})"
    if kind == "notifications":
        n = notification_params(p, size)
        prepared = notifications.prepared(target, n)

        def ladders() -> list[dict[str, Any]]:
            try:
                steps = notifications.run_target(
                    prepared, n, progress=lambda s: log("  " + s.strip())
                )
            finally:
                runner.commands[f"{target.name} (notifications)"] = prepared.command_line
            return notification_rows(steps, target.name, size, run, p["notifications"]["ways"])

        shown = f"{size:,} subscribers, one topic each"
        return runner.attempt(prepared, scenario, shown, ladders)
    load = p[kind]
    shown = f"{size:,} streams, {load['rate']:g}/s"

    def streams() -> list[dict[str, Any]]:
        row = measure_streams(target, size, run, load, runner)
        if kind == "floor":  # its "publishes" are GET /healthz: no broadcast figure
            row["rss_broadcast_peak_kb"] = row["rss_per_stream_broadcast_kb"] = None
        return [row]

    return runner.attempt(target, scenario, shown, streams)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="1,000 and 2,000 streams, one run")
    parser.add_argument("--sizes", help="comma-separated stream counts (default 1,000 to 40,000)")
    parser.add_argument("--targets", default=",".join(TARGET_ORDER), help="comma-separated")
    parser.add_argument("--runs", type=int, default=0, help="repetitions (default 2, quick 1)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated")
    parser.add_argument("--workers", type=int, default=WORKERS, help="per server, every size")
    parser.add_argument("--rate", type=float, default=RATE, help="publishes/s for (a) and (b)")
    parser.add_argument(
        "--ways", default="single", help=f"(c) sse_fast's ways in: {','.join(WAYS)}"
    )
    parser.add_argument("--max-minutes", type=float, default=MAX_MINUTES, help="time budget")
    parser.add_argument("--no-install", action="store_true", help="do not install missing peers")
    parser.add_argument("--out", help="path prefix (default benches/results/scaling)")
    parser.add_argument("--replot", action="store_true", help="report and plots from the JSON")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else RESULTS / "scaling"
    if args.replot:
        write_outputs(json.loads(out.with_suffix(".json").read_text()), out)
        return 0
    if args.quick and not args.out:
        out = Path(tempfile.mkdtemp(prefix="scaling-")) / "scaling"
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    ways = [s.strip() for s in args.ways.split(",") if s.strip()]
    wanted = [s.strip() for s in args.targets.split(",") if s.strip()]
    if set(parts) - set(PARTS) or set(ways) - set(WAYS) or set(wanted) - set(TARGET_ORDER):
        parser.error(f"parts from {PARTS}, ways from {WAYS}, targets from {TARGET_ORDER}")
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")] if args.sizes else None
    # SIGTERM -> SystemExit, so that finally blocks and atexit stop the servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    p = plan(args.quick, sizes, args.runs, args.workers, args.rate, ways)
    info = machine()
    log(f"machine: {info}")
    install: dict[str, str] = {}
    if not args.no_install:
        log("installing missing peers (benches.peers.ensure_peers_installed) ...")
        install = peers.ensure_peers_installed()
        if "notifications" in parts and "single" in ways:
            problem = ensure_wrk()
            if problem:
                log(f"wrk: {problem}: (c) single requests will fail")
    targets, skipped = make_targets(
        [n for n in TARGET_ORDER if n in wanted], p["workers"], p["heartbeat_s"]
    )
    for name, err in install.items():
        if name in wanted:
            skipped.setdefault(name, f"install failed: {err}")
    targets = [t for t in targets if t.name not in skipped]
    for name, reason in skipped.items():
        log(f"SKIPPED {name}: {reason}")
    if not targets:
        log("no target can run")
        return 2
    names = [t.name for t in targets]
    estimate = estimate_minutes(p, parts, names)
    log(
        f"targets {', '.join(names)}; parts {', '.join(parts)}; sizes "
        f"{', '.join(f'{s:,}' for s in p['sizes'])}; {p['runs']} run(s) each; "
        f"{p['workers']} workers per server"
    )
    log(f"estimated duration: {estimate} min (budget {args.max_minutes:g} min)")
    report: dict[str, Any] = {
        "argv": list(sys.argv[1:] if argv is None else argv),
        "machine": info,
        "parts": parts,
        "targets": names,
        "skipped": skipped,
        "failures": [],
        "versions": {t.name: t.versions() for t in targets},
        "notes": {t.name: t.notes() for t in targets},
        "commands": {},
        "conditions": p,
        "estimate_minutes": estimate,
        "rows": {"broadcast": [], "floor": [], "notifications": []},
    }
    started = time.monotonic()
    try:
        run_all(report, targets, parts, args.max_minutes * 60)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (the handler above)
        log("interrupted: writing what ran so far")
        report["interrupted"] = True
    report["total_minutes"] = round((time.monotonic() - started) / 60, 1)
    report["load_average_after"] = os.getloadavg()
    write_outputs(report, out)
    for failure in report["failures"]:
        print(f"FAILED {failure['scenario']} on {failure['target']}: {failure['error']}")
    log(f"done in {report['total_minutes']} min (estimated {estimate} min)")
    return 1 if report["failures"] or report.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
