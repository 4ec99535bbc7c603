"""Durable history's cost: start-up on a full data directory, bytes on disk, throughput.

    python -m benches.persistence            # the full run (~30 min on 2 cores)
    python -m benches.persistence --quick    # smoke run (~6 min), smaller everything

Three measurements, all against ``sse-fast serve`` (Granian) on loopback, each server
with a data directory of its own under ``/tmp`` (never ``~/.local/state/sse-fast``):

1. **Start-up.** Data directories are filled directly with ``EventLog`` (fsync never,
   batches of 1,000, topics in turn like real traffic): the default limits (100 topics
   x 1,024 events = ``ring_max_frames``) and 1,000,000 events (1,000 topics x 1,000),
   ~200-byte frames. Each is served with 1 and 4 workers, timed from ``Popen`` to the
   first ``/readyz`` 200 (and, with 4 workers, to every worker in ``/stats``), against
   an empty directory and ``--persistence off``; the phases come from the server's
   log (its main process checks the directory, then the sequencer, the worker or the
   relay, loads it: "N events restored ... in X s"); the RSS of each process once
   ready. In-process: ``read(events=False)`` (the main process's check) and
   ``EventLog.open()`` alone, each in a fresh Python, with its RSS.
2. **Bytes on disk** per event (segment files' sizes / events) for several frame sizes.
3. **Throughput, persistence off vs interval / always / never, in the same run**:
   (a) per-user notifications (``benches.notifications``: N subscribers on ``user/<n>``,
   batches of 100 events per ``POST /publish``, the server pinned to core 1 and the
   load to core 0, a ladder of rising rates per server start; modes in turn, the
   order reversed in the next round); (b) broadcast fan-out saturation
   (``benches.compare``'s broadcast ramp: one topic, N subscribers, 8 publishers at
   rising rates, ``sse_fast.loadgen``; at each rate every mode in turn). Reported:
   best sustained rate and its ratio to off, server CPU per event at a common step
   (the steadier figure on a noisy machine), lost and duplicates.

Writes ``benches/results/persistence.md`` and ``persistence.json`` (``--out`` for
another prefix; ``--quick`` writes there too, marked quick).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benches import compare, notifications, peers
from benches.system import machine
from sse_fast import encode
from sse_fast.brokers._sequencing import Sequenced
from sse_fast.brokers.durable import EventLog

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ["off", "interval", "always", "never"]
FILL_BATCH = 1000
#: ratio of off the issue asks of persistence
TARGET_RATIO = 0.9


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def params(quick: bool) -> dict[str, Any]:
    """Every condition of a run (recorded in the report as is)."""
    n = notifications.params(quick)
    n["ladders"] = {
        "single": [],
        "batch": [10_000, 20_000, 30_000]
        if quick
        else [10_000, 20_000, 25_000, 30_000, 35_000, 40_000, 50_000, 60_000, 80_000],
        "stream": [],
    }
    n["rounds"] = 1 if quick else 2
    return {
        "frame_bytes": 200,
        "startup": {
            "cases": {
                # name: (topics, events per topic, ring_max_frames, repeats (0: "repeats"))
                "default limits": (100, 1024, 1024, 0),
                "1M events" if not quick else "200k events": (
                    1000,
                    1000 if not quick else 200,
                    1024,
                    0,
                ),
                # about what the data_max_bytes default (1 GiB) holds of such frames
                **({} if quick else {"4M events (~1 GiB)": (4000, 1000, 1024, 1)}),
            },
            "workers": [1, 4],
            "repeats": 1 if quick else 3,
            "timeout_s": 180.0,
            "poll_s": 0.01,
        },
        "disk": {"frame_bytes": [64, 200, 1024, 4096], "events": 20_000, "topics": 100},
        "append": {"batch": 100, "batches": 200, "topics": 1000, "rounds": 5},
        "notifications": n,
        "broadcast": {
            "connections": 1000 if quick else 2000,
            "rates": [40, 160] if quick else [40, 80, 160, 240],
            "publishers": 8,
            "timing": compare.plan(quick)["timing"],
            "cooldown_s": 0.5 if quick else 2.0,
            "rounds": 1 if quick else 2,
        },
        "modes": MODES,
        "fsync_interval": 1.0,
    }


# ---------------------------------------------------------------- servers


@dataclass(eq=False)
class PersistentTarget(peers.SseFastTarget):
    """``sse_fast-1w`` of ``benches.peers`` with its persistence: a data directory of
    its own (in its work directory, removed on stop) unless ``data_dir`` names one."""

    persistence: str = "interval"
    data_dir: str = ""
    extra: tuple[str, ...] = field(default_factory=tuple)

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv, cwd, env = super().command(workdir)
        argv += ["--persistence", self.persistence, "--log-level", "info"]
        if self.data_dir:  # else the start's own directory (``peers.SseFastTarget``)
            argv += ["--data-dir", self.data_dir]
        argv += list(self.extra)
        return argv, cwd, env


def _target(mode: str, workers: int = 1, **fields: Any) -> PersistentTarget:
    port = peers.free_ports(peers.HOST, 1)[0]
    return PersistentTarget(
        f"sse_fast-{workers}w-{mode}", peers.HOST, port, workers=workers, persistence=mode, **fields
    )


# ---------------------------------------------------------------- filling


def frame_for(position: int, topic: int, size: int) -> bytes:
    """An SSE frame of exactly ``size`` bytes (``id: <position>``, JSON data)."""
    head = encode(f'{{"u":{topic},"s":{position},"p":""}}', id=str(position))
    pad = max(0, size - len(head))
    frame = encode(f'{{"u":{topic},"s":{position},"p":"{"x" * pad}"}}', id=str(position))
    return frame


def fill(
    path: str, topics: int, per_topic: int, frame_bytes: int, ring_frames: int
) -> dict[str, Any]:
    """Write ``topics`` x ``per_topic`` events into a new data directory with
    ``EventLog`` (fsync never), the topics in turn; its figures."""
    os.makedirs(path, exist_ok=True)
    started = time.perf_counter()
    store = EventLog(path, fsync="never", max_bytes=1 << 40, ring_frames=ring_frames)
    store.open()
    position = store.next_position
    batch: list[Sequenced] = []
    sizes = 0
    for _ in range(per_topic):
        for topic in range(topics):
            frame = frame_for(position, topic, frame_bytes)
            sizes += len(frame)
            batch.append(Sequenced(position, str(position), (f"user/{topic}",), frame, 0.0))
            position += 1
            if len(batch) == FILL_BATCH:
                store.append(batch)
                batch = []
    if batch:
        store.append(batch)
    store.close()
    events = topics * per_topic
    size, files = directory_bytes(path)
    return {
        "events": events,
        "topics": topics,
        "per_topic": per_topic,
        "frame_bytes_mean": sizes / max(1, events),
        "bytes": size,
        "files": files,
        "bytes_per_event": size / max(1, events),
        "fill_s": time.perf_counter() - started,
    }


def directory_bytes(path: str) -> tuple[int, int]:
    """Total size of the segment files and how many there are."""
    total = files = 0
    for name in os.listdir(path):
        if name.endswith(".log"):
            total += os.path.getsize(os.path.join(path, name))
            files += 1
    return total, files


# ---------------------------------------------------------------- 1. start-up

LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ sse_fast(?:\.\w+)?\[(\d+)\] (.*)$", re.M
)


def _log_phases(text: str, wall0: float) -> dict[str, Any]:
    """The server's own figures from its log: when the main process had checked the
    directory, the load time the sequencer logs, when each line came (s from Popen)."""
    out: dict[str, Any] = {}
    loads: list[dict[str, Any]] = []
    for stamp, pid, message in LOG_LINE.findall(text):
        at = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000
        since = round(at - wall0, 3)
        if re.match(r"data directory .*: \d+ events kept", message):
            out["checked_at_s"] = since
        elif m := re.match(r"data directory .*: (\d+) events restored.* in ([\d.]+) s", message):
            # a worker: from the log itself (1 worker), or from the relay's history
            loads.append({"pid": int(pid), "events": int(m[1]), "s": float(m[2]), "at_s": since})
        elif m := re.match(r"relay: data directory .*: (\d+) events", message):
            out["relay_events"] = int(m[1])
        elif message.startswith("relay for"):
            out["relay_ready_at_s"] = since  # the relay listens once it has read the log
        elif message.startswith("persistence off"):
            out["checked_at_s"] = since
    if loads:
        out["worker_loads"] = loads
        out["restored"] = max(x["events"] for x in loads)
        out["load_logged_s"] = max(x["s"] for x in loads)
        out["restored_at_s"] = max(x["at_s"] for x in loads)
    return out


def timed_start(target: PersistentTarget, timeout: float, poll: float) -> dict[str, Any]:
    """Start ``target``'s command, time it to /readyz 200 (and every worker reporting in
    /stats), note its processes' RSS and log phases, stop it (SIGTERM, then SIGKILL)."""
    workdir = Path(tempfile.mkdtemp(prefix="persistence-start-"))
    argv, cwd, env = target.command(workdir)
    log_path = workdir / "server.log"
    out: dict[str, Any] = {"workers": target.workers, "persistence": target.persistence}
    with open(log_path, "wb") as server_log:
        wall0 = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            peers.nofile_wrapper(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=server_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = t0 + timeout
            while time.perf_counter() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(OSError, ValueError):
                    if "ready_s" not in out:
                        status, _ = peers.http_get(target.host, target.port, "/readyz")
                        if status == 200:
                            out["ready_s"] = time.perf_counter() - t0
                    if "ready_s" in out:
                        if target.workers == 1:
                            out["all_workers_s"] = out["ready_s"]
                            break
                        status, body = peers.http_get(target.host, target.port, "/stats")
                        if status == 200:
                            stats = json.loads(body)
                            if stats.get("workers_reporting", 0) >= target.workers:
                                out["all_workers_s"] = time.perf_counter() - t0
                                break
                time.sleep(poll)
            else:
                raise TimeoutError(f"not ready in {timeout:.0f} s: {log_path.read_text()[-2000:]}")
            time.sleep(0.3)  # the loggers flush; RSS settles
            relay = 0
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError, TypeError):
                status, body = peers.http_get(target.host, target.port, "/stats")
                relay = int(json.loads(body)["workers"][0]["relay"]["pid"])
            rss = [{"pid": proc.pid, "kind": "main", "rss_mib": peers.rss_kb([proc.pid]) / 1024}]
            for pid in peers.descendants(proc.pid):
                if "resource_tracker" in peers.cmdline(pid):
                    continue
                kind = "relay" if pid == relay else "worker"
                rss.append({"pid": pid, "kind": kind, "rss_mib": peers.rss_kb([pid]) / 1024})
            out["rss"] = rss
        finally:
            _stop(proc)
            out.update(_log_phases(log_path.read_text(errors="replace"), wall0))
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    members = set(peers.session_members(proc.pid)) | {proc.pid}
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(peers.pid_alive(p) for p in members):
        time.sleep(0.05)
    for pid in members:
        if peers.pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


IN_PROCESS = r"""
import json, resource, sys, time
from sse_fast.brokers.durable import EventLog, read
path, ring = sys.argv[1], int(sys.argv[2])
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
base = rss()
t = time.perf_counter(); loaded = read(path, events=False); check = time.perf_counter() - t
t = time.perf_counter(); store = EventLog(path, ring_frames=ring, max_bytes=1 << 40)
full = store.open(); opened = time.perf_counter() - t
print(json.dumps({"check_s": check, "open_s": opened, "events": len(full.events),
                  "rss_before_mib": base, "rss_after_open_mib": rss(),
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
store.close()
"""


def in_process(path: str, ring_frames: int, repeats: int) -> dict[str, Any]:
    """``read(events=False)`` and ``EventLog.open()`` each in a fresh Python (best of
    ``repeats``, warm page cache), and the RSS after opening."""
    runs: list[dict[str, Any]] = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", IN_PROCESS, path, str(ring_frames)],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
            cwd=peers.REPO_ROOT,
        )
        runs.append(json.loads(done.stdout))
    best: dict[str, Any] = min(runs, key=lambda r: float(r["open_s"]))
    best["check_s"] = min(r["check_s"] for r in runs)
    best["open_runs_s"] = [r["open_s"] for r in runs]
    return best


def run_startup(p: dict[str, Any], root: str) -> dict[str, Any]:
    s = p["startup"]
    out: dict[str, Any] = {"fills": {}, "in_process": {}, "starts": []}
    dirs: dict[str, tuple[str, int, int]] = {}
    for name, (topics, per_topic, ring, repeats) in s["cases"].items():
        path = os.path.join(root, re.sub(r"\W+", "-", name))
        log(f"fill {name}: {topics} topics x {per_topic} events of {p['frame_bytes']} B")
        out["fills"][name] = fill(path, topics, per_topic, p["frame_bytes"], ring)
        log(
            f"  {out['fills'][name]['events']:,} events, {out['fills'][name]['bytes'] / 2**20:.1f} MiB"
            f" in {out['fills'][name]['fill_s']:.1f} s"
        )
        dirs[name] = (path, ring, repeats or s["repeats"])
        out["in_process"][name] = in_process(path, ring, repeats or s["repeats"])
        log(f"  in process: {out['in_process'][name]}")
    cases: list[tuple[str, str, str, int, int]] = [
        ("empty", "off", "", 1024, s["repeats"]),
        ("empty", "interval", "", 1024, s["repeats"]),
    ]
    cases += [(name, "interval", path, ring, times) for name, (path, ring, times) in dirs.items()]
    for repeat in range(s["repeats"]):
        for workers in s["workers"]:
            for name, mode, path, ring, times in cases:
                if repeat >= times:
                    continue
                extra = ("--ring-max-frames", str(ring), "--data-max-bytes", str(1 << 40))
                target = _target(mode, workers, data_dir=path, extra=extra)
                try:
                    row = timed_start(target, s["timeout_s"], s["poll_s"])
                except Exception as exc:  # reported, the run goes on
                    log(f"  start {name} {mode} {workers}w FAILED: {exc!r}")
                    row = {"workers": workers, "persistence": mode, "error": repr(exc)[-1500:]}
                row.update(case=name, repeat=repeat)
                out["starts"].append(row)
                log(
                    f"  start {name:14s} {mode:8s} {workers}w: ready {row.get('ready_s', 0):.2f} s"
                    f" all {row.get('all_workers_s', 0):.2f} s, logged load "
                    f"{row.get('load_logged_s', '-')} s, restored {row.get('restored', row.get('relay_events', '-'))}"
                )
                time.sleep(0.5)
    return out


# ---------------------------------------------------------------- 2. bytes on disk


def run_disk(p: dict[str, Any], root: str) -> list[dict[str, Any]]:
    d = p["disk"]
    rows = []
    for size in d["frame_bytes"]:
        path = os.path.join(root, f"disk-{size}")
        row = fill(path, d["topics"], d["events"] // d["topics"], size, 1024)
        row["frame_bytes"] = size
        row["overhead_per_event"] = row["bytes_per_event"] - row["frame_bytes_mean"]
        rows.append(row)
        log(f"disk: {size} B frames: {row['bytes_per_event']:.1f} B/event")
        shutil.rmtree(path, ignore_errors=True)
    return rows


def run_append(p: dict[str, Any], root: str) -> dict[str, Any]:
    """Where a batch's storing goes, in process: ``EventLog.append`` of batches of 100
    events (as a ``POST /publish`` of 100 gives the broker) split into its parts:
    building the records (``sequenced_records``: the native codec's ``pack_events``), the ``write``, the whole ``append``
    (also the per-topic counters) under fsync never, and the ``fdatasync`` that
    ``always`` adds per batch. Best of 5 rounds."""
    from sse_fast.brokers.durable._records import sequenced_records

    a = p["append"]
    path = os.path.join(root, "append")
    os.makedirs(path, exist_ok=True)
    size, batch, batches, topics = p["frame_bytes"], a["batch"], a["batches"], a["topics"]
    store = EventLog(path, fsync="never", max_bytes=1 << 40)
    store.open()
    base = store.next_position

    def items_for(round_index: int) -> list[list[Sequenced]]:
        first = base + round_index * batch * batches
        out = []
        for b in range(batches):
            out.append(
                [
                    Sequenced(
                        pos,
                        str(pos),
                        (f"user/{pos % topics}",),
                        frame_for(pos, pos % topics, size),
                        0.0,
                    )
                    for pos in range(first + b * batch, first + (b + 1) * batch)
                ]
            )
        return out

    figures: dict[str, list[float]] = {
        "records": [],
        "write": [],
        "append_never": [],
        "fdatasync": [],
    }
    for round_index in range(a["rounds"]):
        work = items_for(round_index)
        t = time.perf_counter()
        blobs = [sequenced_records(w, 0.0) for w in work]
        figures["records"].append(time.perf_counter() - t)
        fd = os.open(
            os.path.join(root, "append-write"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        t = time.perf_counter()
        for blob in blobs:
            os.write(fd, blob)
        figures["write"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for blob in blobs:
            os.write(fd, blob)
            os.fdatasync(fd)
        figures["fdatasync"].append(time.perf_counter() - t - figures["write"][-1])
        os.close(fd)
        os.unlink(os.path.join(root, "append-write"))
        t = time.perf_counter()
        for w in work:
            store.append(w)
        figures["append_never"].append(time.perf_counter() - t)
    store.close()
    shutil.rmtree(path, ignore_errors=True)
    events = batch * batches
    out = {k: min(v) / events * 1e6 for k, v in figures.items()}  # us per event, best round
    out["fdatasync_per_batch_us"] = min(figures["fdatasync"]) / batches * 1e6
    out["events"] = events
    log(f"append: {', '.join(f'{k} {v:.2f}' for k, v in out.items())}")
    return out


# ---------------------------------------------------------------- 3. throughput


def _orders(modes: list[str], rounds: int) -> list[list[str]]:
    """The modes' order in each round: as given, then reversed, and so on."""
    return [modes if r % 2 == 0 else modes[::-1] for r in range(rounds)]


def run_notifications(p: dict[str, Any]) -> list[dict[str, Any]]:
    n = p["notifications"]
    rows: list[dict[str, Any]] = []
    for round_index, order in enumerate(_orders(p["modes"], n["rounds"])):
        for mode in order:
            target = notifications.prepared(
                _target(mode, extra=("--fsync-interval", str(p["fsync_interval"]))), n
            )
            load_before = os.getloadavg()[0]
            log(f"notifications round {round_index + 1}: {target.name} (load {load_before:.2f})")
            try:
                got = notifications.run_target(target, n, progress=lambda s: log("  " + s.strip()))
            except Exception as exc:  # reported, the run goes on
                log(f"  FAILED: {exc!r}")
                got = [{"target": target.name, "error": repr(exc)[:500], "behind": True}]
            for row in got:
                row.update(persistence=mode, round=round_index + 1, loadavg_1m_before=load_before)
            rows += got
            time.sleep(2)
    return rows


def run_broadcast(p: dict[str, Any]) -> list[dict[str, Any]]:
    b = p["broadcast"]
    runner = compare.Runner(len(b["rates"]) * len(p["modes"]) * b["rounds"], b["cooldown_s"])
    rows: list[dict[str, Any]] = []
    for round_index, order in enumerate(_orders(p["modes"], b["rounds"])):
        for rate in b["rates"]:
            for mode in order:
                target = _target(mode, extra=("--fsync-interval", str(p["fsync_interval"])))
                row = runner.run(
                    target,
                    "broadcast",
                    connections=b["connections"],
                    rate=rate,
                    publishers=b["publishers"],
                    **b["timing"],
                )
                if row is None:
                    rows.append(
                        {
                            "target": target.name,
                            "persistence": mode,
                            "scenario_rate": rate,
                            "error": runner.failures[-1]["error"] if runner.failures else "failed",
                        }
                    )
                    continue
                row.update(
                    persistence=mode,
                    scenario_rate=rate,
                    round=round_index + 1,
                    loadavg_1m=os.getloadavg()[0],
                )
                row["saturated"] = compare.saturated(row, rate)
                rows.append(row)
                log(
                    f"    {mode}: {row['delivered_per_second']:,.0f} delivered/s, p99 "
                    f"{row['p99_ms']:.0f} ms, lost {row['lost']} dup {row['duplicates']}"
                    f"{' SATURATED' if row['saturated'] else ''}"
                )
    return rows


# ---------------------------------------------------------------- report


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _f(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def startup_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| data directory | events | MiB on disk | persistence | workers | to /readyz 200 s "
        "| to every worker s | main checked at s | relay listening at s | workers loaded at s "
        "| load time logged s | events restored per worker | RSS MiB once ready |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    fills = result["fills"]
    keys = list(
        dict.fromkeys((r["case"], r["persistence"], r["workers"]) for r in result["starts"])
    )
    for case, mode, workers in keys:
        mine = [
            r
            for r in result["starts"]
            if (r["case"], r["persistence"], r["workers"]) == (case, mode, workers)
        ]
        runs = [r for r in mine if "error" not in r]
        failed = len(mine) - len(runs)
        fill_info = fills.get(case, {"events": 0, "bytes": 0})

        def med(key: str, rows: list[dict[str, Any]] = runs) -> float | None:
            return _median([r[key] for r in rows if r.get(key) is not None])

        restored, rss = "-", "-"
        if runs:
            last = runs[-1]
            restored = str(last.get("restored", "-"))
            parts = []
            for kind in ("main", "relay", "worker"):
                sizes = [x["rss_mib"] for x in last.get("rss", []) if x["kind"] == kind]
                if sizes:
                    parts.append(f"{kind} " + "/".join(f"{v:.0f}" for v in sizes))
            rss = ", ".join(parts)
        ready = [r["ready_s"] for r in runs]
        span = f" ({min(ready):.2f}-{max(ready):.2f})" if len(ready) > 1 else ""
        lines.append(
            f"| {case} | {fill_info['events']:,} | {fill_info['bytes'] / 2**20:.1f} | {mode} | {workers} "
            f"| {_f(_median(ready))}{span} | {_f(med('all_workers_s'))} | {_f(med('checked_at_s'))} "
            f"| {_f(med('relay_ready_at_s'))} | {_f(med('restored_at_s'))} | {_f(med('load_logged_s'))} "
            f"| {restored} | {rss} |"
            + (f" {failed} of {len(mine)} failed: {_why(mine)}" if failed else "")
        )
    return lines


def _why(rows: list[dict[str, Any]]) -> str:
    """The server's own ERROR line of a failed start, else the start of the error."""
    for row in rows:
        if "error" in row:
            found = re.findall(r"ERROR sse_fast\[\d+\] ([^\\\n]*)", row["error"])
            return f"`{found[-1]}`" if found else row["error"][:200]
    return ""


def in_process_table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| data directory | events | MiB on disk | segments | `read(events=False)` s "
        "| `EventLog.open()` s | events/s opened | RSS before / after open MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["in_process"].items():
        fill_info = result["fills"][name]
        lines.append(
            f"| {name} | {fill_info['events']:,} | {fill_info['bytes'] / 2**20:.1f} | {fill_info['files']} "
            f"| {r['check_s']:.3f} | {r['open_s']:.3f} | {fill_info['events'] / r['open_s']:,.0f} "
            f"| {r['rss_before_mib']:.0f} / {r['rss_after_open_mib']:.0f} |"
        )
    return lines


def disk_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| frame B | events | bytes on disk | bytes per event | overhead per event B | x frame |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['frame_bytes_mean']:.0f} | {r['events']:,} | {r['bytes']:,} | {r['bytes_per_event']:.1f} "
            f"| {r['overhead_per_event']:.1f} | {r['bytes_per_event'] / r['frame_bytes_mean']:.2f} |"
        )
    return lines


def append_section(report: dict[str, Any]) -> list[str]:
    a = report.get("append")
    if not a:
        return []
    q = report["params"]["append"]
    return [
        "### Where storing goes (in process)",
        "",
        f"`EventLog.append` of {a['events']:,} events in batches of {q['batch']} (one `POST /publish` "
        f"of {q['batch']} is one append), {report['params']['frame_bytes']} B frames over "
        f"{q['topics']:,} topics; best of {q['rounds']} rounds; us per event.",
        "",
        "| building the records (`sequenced_records`) | `os.write` | whole `append` (fsync never) "
        "| `fdatasync` per batch (what `always` adds), per event | per batch |",
        "|---:|---:|---:|---:|---:|",
        f"| {a['records']:.2f} | {a['write']:.2f} | {a['append_never']:.2f} | {a['fdatasync']:.2f} "
        f"| {a['fdatasync_per_batch_us']:,.0f} us |",
        "",
    ]


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value and base else "-"


def notification_summary(
    rows: list[dict[str, Any]], modes: list[str]
) -> tuple[list[str], dict[str, Any]]:
    """Per mode: best sustained (the highest step kept up: over the rounds, and the
    mean of each round's), the most delivered in any step, and server CPU per event
    at the rates every mode kept up in every round (median over the rounds)."""
    good = [r for r in rows if "error" not in r]
    kept = {m: [r for r in good if r["persistence"] == m and not r["behind"]] for m in modes}
    rounds = sorted({r["round"] for r in good})
    steady = [
        rate
        for rate in sorted({r["offered_per_s"] for r in good})
        if all(
            any(r["offered_per_s"] == rate and r["round"] == rnd for r in kept[m])
            for m in modes
            for rnd in rounds
        )
    ][-2:]  # the two highest
    figures: dict[str, Any] = {"cpu_rates": steady, "modes": {}}
    for m in modes:
        mine = [r for r in good if r["persistence"] == m]
        best = max(kept[m], key=lambda r: r["delivered_per_s"], default=None)
        per_round = {
            rnd: max((r["delivered_per_s"] for r in kept[m] if r["round"] == rnd), default=0.0)
            for rnd in rounds
        }
        cpu = {
            rate: _median(
                [
                    r["server_cpu"] / r["delivered_per_s"] * 1e6
                    for r in mine
                    if r["offered_per_s"] == rate and r["delivered_per_s"]
                ]
            )
            for rate in steady
        }
        figures["modes"][m] = {
            "best_delivered_per_s": best["delivered_per_s"] if best else None,
            "best_offered_per_s": best["offered_per_s"] if best else None,
            "best_per_round": per_round,
            "mean_of_round_bests": statistics.mean(per_round.values()) if per_round else None,
            "most_delivered_per_s": max((r["delivered_per_s"] for r in mine), default=None),
            "cpu_us_per_event": cpu,
            "lost": sum(r["lost"] for r in mine),
            "missing": sum(r.get("missing", 0) for r in mine),
            "duplicates": sum(r["duplicates"] for r in mine),
            "errors": sum(r["errors"] for r in mine),
            "failed_starts": sum(1 for r in rows if r.get("persistence") == m and "error" in r),
        }
    off = figures["modes"].get("off", {})
    cpu_head = "".join(f"| server CPU us/event at {rate:,} /s | vs off " for rate in steady)
    lines = [
        "| persistence | best sustained delivered /s (offered) | vs off | each round's best "
        "| mean of the rounds' bests | vs off | most delivered /s, any step "
        + cpu_head
        + "| lost | missing | dup | errors |",
        "|---|---:|---:|---|---:|---:|---:|" + "---:|---:|" * len(steady) + "---:|---:|---:|---:|",
    ]
    for m in modes:
        f = figures["modes"][m]
        cpu_cells = "".join(
            f"| {_f(f['cpu_us_per_event'][rate], '.1f')} "
            f"| {_ratio(f['cpu_us_per_event'][rate], off.get('cpu_us_per_event', {}).get(rate))} "
            for rate in steady
        )
        lines.append(
            f"| {m} | {_f(f['best_delivered_per_s'], ',.0f')} ({_f(f['best_offered_per_s'], ',')}) "
            f"| {_ratio(f['best_delivered_per_s'], off.get('best_delivered_per_s'))} "
            f"| {' / '.join(f'{v:,.0f}' for v in f['best_per_round'].values())} "
            f"| {_f(f['mean_of_round_bests'], ',.0f')} "
            f"| {_ratio(f['mean_of_round_bests'], off.get('mean_of_round_bests'))} "
            f"| {_f(f['most_delivered_per_s'], ',.0f')} "
            + cpu_cells
            + f"| {f['lost']} | {f['missing']} | {f['duplicates']} | {f['errors']}"
            + (f" ({f['failed_starts']} failed)" if f["failed_starts"] else "")
            + " |"
        )
    return lines, figures


def broadcast_summary(
    rows: list[dict[str, Any]], modes: list[str]
) -> tuple[list[str], dict[str, Any]]:
    good = [r for r in rows if "error" not in r]
    kept_rates = {
        m: sorted(r["scenario_rate"] for r in good if r["persistence"] == m and not r["saturated"])
        for m in modes
    }
    common = [
        rate
        for rate in sorted({r["scenario_rate"] for r in good})
        if all(rate in kept_rates[m] for m in modes)
    ]
    at = common[-1] if common else None
    figures: dict[str, Any] = {"common_rate": at, "modes": {}}
    for m in modes:
        mine = [r for r in good if r["persistence"] == m]
        kept = [r for r in mine if not r["saturated"]]
        best = max(kept, key=lambda r: r["delivered_per_second"], default=None)
        per_core = [
            r["delivered_per_server_core_second"]
            for r in mine
            if r["scenario_rate"] == at and r.get("delivered_per_server_core_second")
        ]
        figures["modes"][m] = {
            "highest_rate_kept_up": kept_rates[m][-1] if kept_rates[m] else None,
            "best_delivered_per_s": best["delivered_per_second"] if best else None,
            "most_delivered_per_s": max((r["delivered_per_second"] for r in mine), default=None),
            "delivered_per_core_s_at_common": _median(per_core),
            "p99_ms_at_common": _median([r["p99_ms"] for r in mine if r["scenario_rate"] == at]),
            "lost": sum(r["lost"] for r in mine),
            "duplicates": sum(r["duplicates"] for r in mine),
            "failed": sum(1 for r in rows if r.get("persistence") == m and "error" in r),
        }
    off = figures["modes"].get("off", {})
    lines = [
        "| persistence | highest rate kept up /s | best delivered /s kept up | vs off "
        "| most delivered /s, any step | vs off "
        f"| delivered per server core-s at {at or '-'} /s | vs off | p99 ms at {at or '-'} /s "
        "| lost | dup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in modes:
        f = figures["modes"][m]
        lines.append(
            f"| {m} | {_f(f['highest_rate_kept_up'], ',')} | {_f(f['best_delivered_per_s'], ',.0f')} "
            f"| {_ratio(f['best_delivered_per_s'], off.get('best_delivered_per_s'))} "
            f"| {_f(f['most_delivered_per_s'], ',.0f')} "
            f"| {_ratio(f['most_delivered_per_s'], off.get('most_delivered_per_s'))} "
            f"| {_f(f['delivered_per_core_s_at_common'], ',.0f')} "
            f"| {_ratio(f['delivered_per_core_s_at_common'], off.get('delivered_per_core_s_at_common'))} "
            f"| {_f(f['p99_ms_at_common'], '.1f')} | {f['lost']} | {f['duplicates']}"
            + (f" ({f['failed']} failed)" if f["failed"] else "")
            + " |"
        )
    return lines, figures


def broadcast_steps(rows: list[dict[str, Any]]) -> list[str]:
    good = [dict(r, target=f"{r['persistence']}") for r in rows if "error" not in r]
    lines = compare.broadcast_table(good)
    lines += [
        f"- {r['persistence']} at {r['scenario_rate']}/s failed: {r['error']}"
        for r in rows
        if "error" in r
    ]
    return lines


def write_report(report: dict[str, Any], path: Path) -> None:
    m = report["machine"]
    p = report["params"]
    n = p["notifications"]
    b = p["broadcast"]
    lines = [
        "# Durable history: start-up, bytes on disk, throughput with persistence on vs off",
        "",
        f"`python -m benches.persistence{' --quick' if report['quick'] else ''}` "
        f"(`benches/persistence.py`), {m['date']}, on {m['cores']} cores ({m['cpu']}), "
        f"kernel {m['kernel']}, Python {m['python']}; git {report['versions'].get('sse_fast_git', m['git'])}.",
        ""
        if not report["quick"]
        else "\n**Quick run**: smaller and shorter than the full one; figures are a smoke test.\n",
        *([f"Note: {report['merged']}.", ""] if report.get("merged") else []),
        *(
            ["## Findings", "", *[f"- {x}" for x in report["findings"]], ""]
            if report.get("findings")
            else []
        ),
        "## Conditions",
        "",
        "- Versions: " + "; ".join(f"{k} {v}" for k, v in sorted(report["versions"].items())),
        f"- Data directories under `{report['data_root_parent']}` on `{report['filesystem']}` "
        "(a virtual disk: fsync costs are this machine's, not a physical disk's); page cache warm "
        "(each directory was just written or read).",
        f"- Load average before {m['load_average_before']}, after {report['load_average_after']}; "
        f"`ulimit -n` {m['ulimit_n']}. Loopback only; every server start and step is bounded in time.",
        "- Servers: `python -m sse_fast serve` (Granian, uvloop) as `benches.peers` runs "
        "sse_fast-1w (anonymous publish, per-IP and rate limits off) plus `--persistence MODE "
        "--data-dir <temp dir> --log-level info` (`--persistence off`: no directory) and "
        f"`--fsync-interval {p['fsync_interval']:g}` for the throughput runs.",
        f"- Frames: SSE frames of {p['frame_bytes']} B (`id: <position>` + JSON data), one topic each.",
        "",
        "## 1. Start-up on a full data directory",
        "",
        'Directories filled with `EventLog(path, fsync="never")` (batches of '
        f"{FILL_BATCH:,}, topics in turn); served with `--ring-max-frames 1024 --data-max-bytes 2^40` "
        f"so that every event is kept. {p['startup']['repeats']} start(s) per row (the ~1 GiB case: "
        "1), interleaved; "
        "medians (min-max for /readyz). Times from `Popen` of `sse-fast serve`; /readyz polled every "
        f"{p['startup']['poll_s'] * 1000:.0f} ms. *main process checked at*: its log line "
        '"data directory ...: N events kept" (it reads the directory with `events=False` '
        "before Granian starts); *relay listening at* (4 workers): the main process's \"relay for N "
        'workers" line, logged once the relay has read the whole log (`EventLog.open()`; the '
        "supervisor allows 10 s plus 60 s per GiB of the directory) and listens; *workers loaded at*: the last "
        'worker\'s "N events restored ... in X s" line (1 worker: `EventLog.open()` and applying '
        "the events to the rings; 4 workers: each worker reads the whole directory itself "
        "(`read()`) and applies it to its rings, the 4 in parallel on the 2 cores); *load time "
        "logged*: the largest X. "
        "RSS once ready: the main process (Granian's, which checked the directory), the relay "
        "(4 workers) and each worker.",
        "",
        *startup_table(report["startup"]),
        "",
        "In-process, each in a fresh Python (best of the repeats): the main process's check and "
        "`EventLog.open()` alone (reads and parses every record into `Event` objects; no rings).",
        "",
        *in_process_table(report["startup"]),
        "",
        "## 2. Bytes on disk per event",
        "",
        f"{p['disk']['events']:,} events over {p['disk']['topics']} topics (`user/<n>`) per frame size, "
        "written with `EventLog`; bytes = the segment files' sizes (a record: 8 B length + CRC, "
        "26 B header, the id, the topic names, the frame; 36 B per segment header).",
        "",
        *disk_table(report["disk"]),
        "",
        *append_section(report),
        "## 3. Throughput, persistence off vs on (same run)",
        "",
        f"Target: at least {TARGET_RATIO:g}x of off. Ratios are within this run; the machine has 2 "
        "cores shared by server and load, so single figures are noisy.",
        "",
        "### 3a. Per-user notifications, batches of 100 per POST",
        "",
        *notifications.conditions(n)[:2],
        f"- Only the batch way in: {notifications.BATCH} events per `POST /publish`, "
        f"{notifications.CONNECTIONS} connections; ladder {', '.join(f'{x:,}' for x in n['ladders']['batch'])} "
        "events/s per server start, stopping at the first step behind (under 95 % published or "
        "delivered, a loss, an error, or delivery p99 over "
        f"{n['max_delivery_p99_ms']:,} ms).",
        f"- {n['rounds']} round(s); each round starts one server per mode, in the order "
        f"{', '.join(p['modes'])}, reversed in the next round. *Best sustained*: the highest "
        "delivered/s of a step kept up (over the rounds, and each round's). *Server CPU per event*: "
        "server CPU seconds / delivered events at the (two highest) offered rates every mode kept "
        "up in every round, median over the rounds: the steadier figure, as the ladder's steps "
        "are coarse and on a shared machine one bad step ends a ladder.",
        "",
        *report["notifications_summary"],
        "",
        "Every step:",
        "",
        *notifications.steps_table(
            [
                dict(r, target=f"{r['persistence']} r{r['round']}")
                for r in report["notifications"]
                if "error" not in r
            ]
        ),
        "",
        "### 3b. Broadcast fan-out saturation",
        "",
        f"- One topic, {b['connections']:,} subscribers (`sse_fast.loadgen`, one client process), "
        f"{b['publishers']} concurrent publishers sharing each rate: {', '.join(map(str, b['rates']))} "
        f"publishes/s; warm-up {b['timing']['warmup']:g} s, measured {b['timing']['duration']:g} s, "
        f"drain {b['timing']['drain']:g} s; a fresh server per step, no CPU pinning (as "
        "`benches.compare`'s broadcast). At each rate every mode in turn. *Saturated*: publishes "
        f"or deliveries under {compare.SATURATED:.0%} of what was asked; a saturated step may be "
        "the client process falling behind (it shares the 2 cores).",
        "- *Delivered per server core-s*: delivered events / server CPU seconds, at the highest "
        "rate every mode kept up.",
        "",
        *report["broadcast_summary"],
        "",
        "Every step (target = persistence mode):",
        "",
        *broadcast_steps(report["broadcast"]),
        "",
    ]
    if report.get("failures"):
        lines += ["## Failures", ""] + [f"- {f}" for f in report["failures"]] + [""]
    path.write_text("\n".join(lines))


def filesystem(path: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = (
            subprocess.run(
                ["df", "-T", path], capture_output=True, text=True, timeout=10, check=True
            )
            .stdout.splitlines()[-1]
            .split()
        )
        return f"{out[0]} ({out[1]}, mounted on {out[-1]})"
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.persistence", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller, shorter smoke run")
    parser.add_argument("--out", default=str(RESULTS / "persistence"), help="path prefix")
    parser.add_argument(
        "--only", default="startup,disk,append,notifications,broadcast", help="parts to run"
    )
    parser.add_argument(
        "--merge", action="store_true", help="keep the other parts' figures from the JSON at --out"
    )
    parser.add_argument("--replot", action="store_true", help="redo the report from the JSON")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.replot:
        saved = json.loads(out.with_suffix(".json").read_text())
        modes = saved["params"]["modes"]
        saved["notifications_summary"], saved["notifications_figures"] = notification_summary(
            saved["notifications"], modes
        )
        saved["broadcast_summary"], saved["broadcast_figures"] = broadcast_summary(
            saved["broadcast"], modes
        )
        out.with_suffix(".json").write_text(json.dumps(saved, indent=2, default=str))
        write_report(saved, out.with_suffix(".md"))
        return 0
    p = params(args.quick)
    parts = args.only.split(",")
    root = tempfile.mkdtemp(prefix="persistence-bench-")
    info = machine()
    report: dict[str, Any] = {
        "quick": args.quick,
        "machine": info,
        "params": p,
        "versions": _target("off").versions(),
        "data_root_parent": os.path.dirname(root),
        "filesystem": filesystem(root),
        "startup": {"fills": {}, "in_process": {}, "starts": []},
        "disk": [],
        "append": {},
        "notifications": [],
        "broadcast": [],
    }
    if args.merge:
        saved = json.loads(out.with_suffix(".json").read_text())
        report.update(
            {
                k: saved[k]
                for k in (
                    "startup",
                    "disk",
                    "append",
                    "notifications",
                    "broadcast",
                    "quick",
                    "machine",
                    "params",
                    "versions",
                )
                if k in saved
            }
        )
        report["params"].setdefault("append", p["append"])
        report["merged"] = (
            f"{', '.join(parts)} run on {info['date']} (git {info['git']}), merged into the run of {saved['machine']['date']}"
        )
    log(f"machine: {info}; data under {root} on {report['filesystem']}")
    started = time.monotonic()
    try:
        if "disk" in parts:
            report["disk"] = run_disk(p, root)
        if "append" in parts:
            report["append"] = run_append(p, root)
        if "startup" in parts:
            report["startup"] = run_startup(p, root)
        shutil.rmtree(root, ignore_errors=True)
        if "notifications" in parts:
            report["notifications"] = run_notifications(p)
        if "broadcast" in parts:
            report["broadcast"] = run_broadcast(p)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["load_average_after"] = os.getloadavg()
    report["minutes"] = (time.monotonic() - started) / 60
    report["notifications_summary"], report["notifications_figures"] = notification_summary(
        report["notifications"], p["modes"]
    )
    report["broadcast_summary"], report["broadcast_figures"] = broadcast_summary(
        report["broadcast"], p["modes"]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    write_report(report, out.with_suffix(".md"))
    log(f"wrote {out.with_suffix('.md')} in {report['minutes']:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
