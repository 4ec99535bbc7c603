"""A start restoring a full data directory, as an orchestrator sees it: how slow
``/livez`` gets, and how long a SIGTERM takes to stop the server.

    python -m benches.restore_stop [--events 1500000] [--workers 4] [--rounds 2]
        [--before DIR] [--out benches/results/restore_stop]

The data directory is filled once with ``EventLog`` (fsync never; 1,000 events a
topic, ~200-byte frames like ``benches/persistence.py``) under ``/tmp``. Each round
starts ``sse-fast serve --workers N`` on it, for each checkout (``--before``: another
checkout of sse_fast, its native core built, run with ``PYTHONPATH``; then this one):

1. **Liveness through the restore.** ``/livez`` asked every 100 ms (each on a new
   connection, a task of its own, so one slow answer delays no other) from the start
   until every worker reports in ``/stats``: the worst answer, p99 and median, and
   the time to every worker ready.
2. **A stop during it.** Started again and sent SIGTERM ``--stop-at`` seconds after
   ``Popen`` (2, 5 and 8 s by default, a start each: issue 53's probe stopped at 8 s
   into a slower start); the seconds from SIGTERM to the process's exit, and what
   ``/readyz`` said half a second before.

Experiment, kept as the record of a decision (``benches/README.md``):

Question: Does a start's restore of 1.5 million events with 4 workers on 2 cores keep
    ``/livez`` within 1 s at every moment, and does a SIGTERM during it stop the
    server within ``--drain-timeout`` (5 s) plus 1 s (issue 53, items 3 and 4)?
Result: not before (main at 7da14ee): the worst ``/livez`` answer 1.8-2.2 s on a quiet
    machine, 5.1-5.4 s with other tests running (the reading thread held the GIL for a
    whole 64 MiB segment; full collections over the 1.5 million events read back), and
    6.8-7.4 s from a SIGTERM 2 s into the start to the exit (17.7 s at 8 s with other
    tests running): each worker read its whole directory first. After (the segments
    read a slice at a time, the collector paused while the events are held, the
    reading thread stopped by the stop, SIGTERM held while a worker is forked): the
    worst answer 0.06-0.18 s (0.12-0.61 s with other tests running), exits 0.33-1.2 s
    after SIGTERM at 2, 5 and 8 s, and every worker ready after 10 s instead of 15-19 s.
Date: 2026-11-28 (benches/results/restore_stop.md)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benches.system import machine
from sse_fast.brokers._sequencing import Sequenced
from sse_fast.brokers.durable import EventLog
from sse_fast.testing import HOST, free_port, http_request

RESULTS = Path(__file__).resolve().parent / "results"
#: the liveness probe's period here (the figure is the worst answer, not the median)
POLL_EVERY = 0.1


def fill(path: Path, events: int) -> None:
    """``events`` events of ~200-byte frames, 1,000 a topic (skipped when done)."""
    done = path.with_name(path.name + ".filled")
    if done.exists() and done.read_text() == str(events):
        return
    path.mkdir(parents=True, exist_ok=True)
    log = EventLog(str(path), fsync="never", max_bytes=1 << 34)
    log.open()
    first = log.next_position
    pad = "x" * 150
    for start in range(0, events, 10_000):
        log.append(
            [
                Sequenced(
                    first + n,
                    f"e{n}",
                    (f"t{n // 1000}",),
                    f"id: e{n}\ndata: {pad} {n}\n\n".encode(),
                    0.0,
                )
                for n in range(start, min(events, start + 10_000))
            ]
        )
    log.close()
    done.write_text(str(events))


def start(tree: str, data: Path, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "SSE_FAST_ALLOW_ANONYMOUS_PUBLISH": "1"}
    if tree:
        env["PYTHONPATH"] = tree
    command = [sys.executable, "-m", "sse_fast", "serve", "--port", str(port)]
    command += ["--workers", str(workers), "--data-dir", str(data)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd="/")
    return proc, port


async def _ask(port: int, path: str, timeout: float = 60) -> tuple[int | str, float, bytes]:
    asked = time.monotonic()
    try:
        status, _, body = await http_request(HOST, port, "GET", path, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__, time.monotonic() - asked, b""
    return status, time.monotonic() - asked, body


async def liveness(tree: str, data: Path, workers: int, log: Path) -> dict[str, Any]:
    """Round 1: ``/livez`` every ``POLL_EVERY`` s until every worker is ready."""
    proc, port = start(tree, data, workers, log)
    began = time.monotonic()
    answers: list[tuple[float, int | str, float]] = []
    ready_after = None

    async def livez() -> None:
        asked = time.monotonic() - began
        status, took, _ = await _ask(port, "/livez")
        answers.append((asked, status, took))

    async def watch() -> None:
        nonlocal ready_after
        while time.monotonic() - began < 600:
            status, _, body = await _ask(port, "/stats", 60)
            if status == 200 and json.loads(body)["workers_reporting"] == workers:
                ready_after = time.monotonic() - began
                return
            await asyncio.sleep(0.5)

    try:
        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(watch())
            while not watcher.done():
                group.create_task(livez())
                await asyncio.sleep(POLL_EVERY)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    served = [a for a in answers if a[1] == 200]
    first = min(a[0] for a in served)
    times = sorted(a[2] for a in served)
    worst = max(served, key=lambda a: a[2])
    return {
        "ready_after_s": round(ready_after or -1, 2),
        "livez_first_200_s": round(first, 2),
        "livez_answers": len(served),
        "livez_failures_after_first": sum(1 for a in answers if a[0] >= first and a[1] != 200),
        "livez_worst_s": round(worst[2], 3),
        "livez_worst_asked_at_s": round(worst[0], 1),
        "livez_p99_s": round(times[int(0.99 * (len(times) - 1))], 3),
        "livez_median_s": round(statistics.median(times), 3),
        "livez_over_1s": sum(1 for t in times if t > 1.0),
    }


async def stop(tree: str, data: Path, workers: int, at: float, log: Path) -> dict[str, Any]:
    """Round 2: SIGTERM ``at`` seconds after the start; seconds to exit."""
    proc, port = start(tree, data, workers, log)
    began = time.monotonic()
    while time.monotonic() - began < at - 0.5:
        await asyncio.sleep(0.05)
    ready = asyncio.create_task(_ask(port, "/readyz", 30))
    while time.monotonic() - began < at:
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    while proc.poll() is None and time.monotonic() - sent < 120:
        await asyncio.sleep(0.01)
    took = time.monotonic() - sent
    if proc.poll() is None:
        proc.kill()
    status, _, body = await ready
    said = json.loads(body).get("reason", "") if body else f"(no answer: {status})"
    return {
        "sigterm_at_s": at,
        "exit_after_s": round(took, 2),
        "status": proc.wait(),
        "readyz": said,
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        "# A start's restore: liveness and a stop during it",
        "",
        f"`python -m benches.restore_stop` ({results['events']:,} events of ~200-byte frames,"
        f" {results['data_mib']} MiB, `--workers {results['workers']}`; `/livez` every"
        f" {POLL_EVERY * 1000:.0f} ms on new connections; SIGTERM at the times shown).",
        "",
        "| checkout | round | ready after | `/livez` worst (asked at) | p99 | median | > 1 s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        live = row["liveness"]
        lines.append(
            f"| {row['checkout']} | {row['round']} | {live['ready_after_s']} s |"
            f" {live['livez_worst_s']} s ({live['livez_worst_asked_at_s']} s) |"
            f" {live['livez_p99_s']} s | {live['livez_median_s']} s | {live['livez_over_1s']} |"
        )
    lines += [
        "",
        "| checkout | round | SIGTERM at | exit after | status | `/readyz` just before |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in results["rows"]:
        for stopped in row["stops"]:
            lines.append(
                f"| {row['checkout']} | {row['round']} | {stopped['sigterm_at_s']} s |"
                f" {stopped['exit_after_s']} s | {stopped['status']} | {stopped['readyz']} |"
            )
    lines += ["", "Machine: " + json.dumps(results["machine"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_500_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stop-at", type=float, nargs="+", default=[2.0, 5.0, 8.0])
    parser.add_argument("--before", default="", help="another checkout, measured first")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "restore-stop"))
    parser.add_argument("--out", default=str(RESULTS / "restore_stop"))
    args = parser.parse_args()
    data = Path(args.data) / f"events-{args.events}"
    fill(data, args.events)
    size = sum(f.stat().st_size for f in data.iterdir() if f.is_file())
    here = str(Path(__file__).resolve().parent.parent)
    checkouts = [("before", args.before)] if args.before else []
    checkouts.append(("this", here))
    results: dict[str, Any] = {
        "events": args.events,
        "workers": args.workers,
        "data_mib": round(size / 2**20),
        "machine": machine(),
        "rows": [],
    }
    log = Path(args.data) / "server.log"
    for round_ in range(1, args.rounds + 1):
        for name, tree in checkouts:
            live = asyncio.run(liveness(tree, data, args.workers, log))
            stops = [asyncio.run(stop(tree, data, args.workers, at, log)) for at in args.stop_at]
            row = {"checkout": name, "round": round_, "liveness": live, "stops": stops}
            print(json.dumps(row), flush=True)
            results["rows"].append(row)
    Path(args.out + ".json").write_text(json.dumps(results, indent=2) + "\n")
    Path(args.out + ".md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
