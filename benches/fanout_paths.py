"""Which write path should an SSE fan-out use under Granian? Measure three.

Runs the three minimal apps of ``benches/fanout_apps.py`` one after the other,
each alone under the same Granian command (ASGI, uvloop, one worker)::

    granian --interface asgi --loop uvloop --workers 1 --backpressure 19000
            --backlog 4096 --http 1 --http1-buffer-size 8192
            --log-level warning --no-access-log
            --host 127.0.0.1 --port <free> benches.fanout_apps:<app>

``loop``
    one fan-out loop per publish calls every subscriber's ``send()``; Granian's
    already-finished results (``PyEmptyAwaitable``) are not awaited, anything
    else is awaited in a task (the write path sse_fast's hub uses);
``tasks``
    one task per connection awaits a shared future the publisher resolves,
    then ``await send(...)``;
``queues``
    one ``asyncio.Queue`` per subscriber, its task awaits ``get()`` then sends.

Each app is driven by ``sse_fast.loadgen.run_load`` with the same parameters
(default 5,000 connections on one topic, 10 publishes/s of 64-byte events,
2 s warm-up, 10 s measured), which reports delivered events/s, latency
percentiles, the server's CPU (main process + worker) and events delivered
per server core-second. After the clients left, the app's ``/stats`` must show
no open stream (disconnect clean-up) before the server is stopped: SIGTERM,
then SIGKILL after 5 s; the script fails if any server process survives.

Writes ``benches/results/fanout_paths.md`` and ``.json`` (machine, versions,
conditions, load average of the machine around each run)::

    python -m benches.fanout_paths                        # the full default
    python -m benches.fanout_paths --connections 1000 --duration 3 --out-dir /tmp/fo
    python -m benches.fanout_paths --apps loop,queues --repeat 3

Loopback only; every run is bounded in time.

Experiment, kept as the record of a decision (``benches/README.md``):

Question: Which write path should a fan-out under Granian use: one loop per publish, a
    task per connection, or a queue per subscriber?
Result: the loop: 75,615 deliveries per core-second and the lowest p99; tasks 0.81x,
    queues 0.51x.
Date: 2026-11-22 (benches/results/fanout_paths.md)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benches import peers, system
from benches.fanout_apps import APPS
from sse_fast import loadgen
from sse_fast.loadgen._procfs import cpu_seconds

HOST = "127.0.0.1"
RESULTS_DIR = peers.REPO_ROOT / "benches" / "results"
GRANIAN_FLAGS = [
    "--interface",
    "asgi",
    "--loop",
    "uvloop",
    "--workers",
    "1",
    "--backpressure",
    "19000",
    "--backlog",
    "4096",
    "--http",
    "1",
    "--http1-buffer-size",
    "8192",
    "--log-level",
    "warning",
    "--no-access-log",
]
STOP_TIMEOUT = 5.0  # SIGTERM, then SIGKILL after this many seconds
MAX_CONNECTIONS = 18_000  # one worker: below --backpressure and `ulimit -n` (20,000)
DESCRIPTIONS = {
    "loop": "one fan-out loop per publish, finished sends not awaited",
    "tasks": "task per connection awaiting a shared future, then await send",
    "queues": "asyncio.Queue per subscriber, task awaits get() then send",
}


@dataclass(eq=False)
class FanoutTarget(peers.Target):
    """One app of ``benches.fanout_apps`` under Granian."""

    app: str = "loop"
    stop_timeout: float = STOP_TIMEOUT
    _argv: list[str] = field(default_factory=list, init=False, repr=False)

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv = [
            sys.executable,
            "-m",
            "granian",
            *GRANIAN_FLAGS,
            "--host",
            self.host,
            "--port",
            str(self.port),
            f"benches.fanout_apps:{APPS[self.app]}",
        ]
        return argv, peers.REPO_ROOT, peers.clean_env()

    def server_pids(self) -> list[int]:
        """Granian's main process and its worker (CPU and RSS both count)."""
        if self._proc is None or not peers.pid_alive(self._proc.pid):
            return []
        return [self._proc.pid, *peers.descendants(self._proc.pid)]

    def stats(self) -> dict[str, Any]:
        status, body = peers.http_get(self.host, self.port, "/stats", timeout=5.0)
        if status != 200:
            raise RuntimeError(f"{self.name}: /stats answered {status}")
        stats: dict[str, Any] = json.loads(body)
        return stats


# --------------------------------------------------------------------------- conditions


def _busy_jiffies() -> tuple[int, int]:
    """(all, busy) CPU time of the whole machine so far, in clock ticks."""
    values = system.cpu_times()[:7]
    total = sum(values)
    return total, total - values[3] - values[4]  # minus idle and iowait


def _cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``seconds``."""
    total0, busy0 = _busy_jiffies()
    time.sleep(seconds)
    total1, busy1 = _busy_jiffies()
    return round((busy1 - busy0) / max(1, total1 - total0), 3)


def _own_cpu() -> float:
    """CPU seconds of this process and its reaped children (the load generator's)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_idle(limit: float, threshold: float, log: Any) -> tuple[float, float]:
    """Wait up to ``limit`` s until the machine is below ``threshold`` busy over 1 s
    (other benchmarks share it); returns (seconds waited, last busy fraction)."""
    started = time.monotonic()
    busy = _cpu_busy()
    while busy >= threshold and time.monotonic() - started < limit:
        log(f"machine {busy:.0%} busy: waiting for it to settle")
        time.sleep(4.0)
        busy = _cpu_busy()
    if busy >= threshold:
        log(f"machine still {busy:.0%} busy after {limit:g} s: running anyway")
    return round(time.monotonic() - started, 1), busy


def _loadavg() -> list[float]:
    return [float(v) for v in system.loadavg()]


# --------------------------------------------------------------------------- one run


def run_one(app: str, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    target = FanoutTarget(name=app, host=HOST, port=peers.free_ports(HOST, 1)[0], app=app)
    waited, busy = wait_idle(args.wait_idle, args.idle_below, log)
    before = {"loadavg": _loadavg(), "cpu_busy_1s": busy, "waited_for_idle_s": waited}
    wall0, (_, machine0), own0 = time.monotonic(), _busy_jiffies(), _own_cpu()
    target.start()
    log(f"{app}: {target.command_line}")
    try:
        result = loadgen.run_load(
            host=target.host,
            port=target.port,
            name=app,
            connections=args.connections,
            rate=args.rate,
            duration=args.duration,
            warmup=args.warmup,
            processes=args.processes,
            payload_bytes=args.payload_bytes,
            subscribe_path=target.subscribe_path,
            publish_request=target.publish_request,
            server_pids=target.server_pids,
            progress=log,
        )
        # The clients are gone (run_load aborted them): every stream must have
        # seen http.disconnect and unsubscribed.
        deadline = time.monotonic() + 5.0
        stats = target.stats()
        while stats.get("streams") and time.monotonic() < deadline:
            time.sleep(0.1)
            stats = target.stats()
        # Interference check: CPU the rest of the machine used during this run
        # (machine busy - this script and its load generator - the server).
        server_cpu = cpu_seconds(target.server_pids())
        _, machine1 = _busy_jiffies()
        wall = time.monotonic() - wall0
        others = (machine1 - machine0) / os.sysconf("SC_CLK_TCK") - (_own_cpu() - own0)
        others -= server_cpu
        during = {
            "wall_s": round(wall, 1),
            "server_cpu_s": round(server_cpu, 2),
            "loadgen_cpu_s": round(_own_cpu() - own0, 2),
            "other_processes_cores": round(max(0.0, others) / wall, 2),
        }
    finally:
        target.stop()  # SIGTERM, SIGKILL after 5 s; raises if anything survived
    if peers.session_members(target.session):
        raise RuntimeError(f"{app}: server processes left running")
    return {
        "app": app,
        "command": target.command_line,
        "result": asdict(result),
        "server_stats_after": stats,
        "machine_before": before,
        "machine_during": during,
        "loadavg_after": _loadavg(),
    }


# --------------------------------------------------------------------------- report


def _fmt(value: Any, spec: str = ",.0f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:{spec}}{suffix}"


def markdown(report: dict[str, Any]) -> str:
    cond, mach = report["conditions"], report["machine"]
    runs = report["runs"]
    base = {
        r["app"]: r["result"]["delivered_per_server_core_second"]
        for r in runs
        if r["app"] == "loop"
    }.get("loop")
    lines = [
        "# Fan-out write paths under Granian",
        "",
        "Generated by `python -m benches.fanout_paths"
        + (f" {cond['argv']}" if cond["argv"] else "")
        + f"` on {mach['date']}.",
        "Three minimal SSE apps (`benches/fanout_apps.py`) that differ only in how a "
        "publish reaches the connections, each alone under the same Granian command, "
        "driven by `sse_fast/loadgen/` with the same parameters.",
        "",
        "| app | write path | connected | delivered/s | delivered / expected | lost | "
        "p50 | p99 | p99.9 | max | server fan-out p50 / p99 | server cores | "
        "delivered per core-s | vs loop | RSS/conn | open streams after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        r = run["result"]
        per_core = r["delivered_per_server_core_second"]
        st = run["server_stats_after"]
        ratio = f"{per_core / base:.2f}x" if base and per_core else "-"
        lines.append(
            f"| `{run['app']}` | {DESCRIPTIONS[run['app']]} "
            f"| {r['connected']:,}/{r['connections']:,} "
            f"| {_fmt(r['delivered_per_second'])} | {r['delivered']:,} / {r['expected']:,} "
            f"| {r['lost']:,} | {_fmt(r['p50_ms'], '.1f', ' ms')} "
            f"| {_fmt(r['p99_ms'], '.1f', ' ms')} "
            f"| {_fmt(r['p999_ms'], '.1f', ' ms')} | {_fmt(r['max_ms'], '.1f', ' ms')} "
            f"| {_fmt(st.get('fanout_p50_ms'), '.1f')} / "
            f"{_fmt(st.get('fanout_p99_ms'), '.1f', ' ms')} "
            f"| {_fmt(r['server_cores_used'], '.2f')} | {_fmt(per_core)} | {ratio} "
            f"| {_fmt(r['rss_per_connection_kb'], '.1f', ' KB')} "
            f"| {run['server_stats_after'].get('streams', '-')} |"
        )
    lines += [
        "",
        "- *delivered/s*: events received by all subscribers during the measured window "
        "(events published in it, 1 s grace for the last ones) / window length. "
        "*delivered / expected* may fall short by up to one publish x connections with "
        "*lost* = 0: the load generator's clients reset their counters when they read the "
        "`measure` command from their pipe, so deliveries of the first measured publish "
        "that arrive before that are not counted (this hits the fastest path most).",
        "- *server cores*: CPU seconds of Granian's main process + worker over the window "
        "(+1 s grace) / that time; *delivered per core-s* = delivered / server CPU seconds "
        "(the efficiency figure; *vs loop* is its ratio to `loop`).",
        "- Latency (p50 ... max): publish wall time (in the event) to parse time in the "
        "client, same clock; it includes the load generator's own parsing of each burst.",
        "- *server fan-out*: measured inside the app, from the start of a publish's fan-out "
        "until a callback scheduled right after it runs, i.e. until every delivery it woke "
        "has handed its bytes to Granian (Granian's finished `send()` does not yield); over "
        "all publishes of the run, warm-up included.",
        "- *other processes during run*: CPU the rest of the machine used during the run "
        "(machine busy time - this script and its load generator - the server) / wall time; "
        "each run first waits (bounded) for the machine to be idle.",
        "- *open streams after*: the app's `/stats` once the load generator had closed every "
        "connection: 0 means every stream saw `http.disconnect` and unsubscribed.",
        "",
        "## Per run",
        "",
        "| app | published | connect time | client procs | load avg before "
        "| CPU busy before (1 s) | other processes during run | load avg after "
        "| server stats after |",
        "|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for run in runs:
        r = run["result"]
        lines.append(
            f"| `{run['app']}` | {r['published']} | {r['connect_seconds']} s | "
            f"{r['client_processes']} | {run['machine_before']['loadavg']} | "
            f"{run['machine_before']['cpu_busy_1s']:.0%} | "
            f"{run['machine_during']['other_processes_cores']:.2f} cores | "
            f"{run['loadavg_after']} | "
            f"`{json.dumps(run['server_stats_after'])}` |"
        )
    lines += [
        "",
        "## Conditions",
        "",
        f"- Load: {cond['connections']:,} SSE connections on one topic, {cond['rate']:g} "
        f"publishes/s of {cond['payload_bytes']}-byte JSON events (one publisher, one "
        f"keep-alive connection), {cond['warmup']:g} s warm-up, {cond['duration']:g} s "
        f"measured; subscribers over HTTP/1.1 in {cond['client_processes']} load-generator "
        "process(es) (uvloop, sse_fast's Cython parser) on the same machine.",
        "- Server: `granian " + " ".join(GRANIAN_FLAGS) + " --host 127.0.0.1 --port <free> "
        "benches.fanout_apps:<app>_app`, one app at a time, in that order"
        + (f", {cond['repeat']} rounds" if cond["repeat"] > 1 else "")
        + "; stopped (SIGTERM, SIGKILL after 5 s) before the next starts.",
        "- Every app: frame `sse_fast.encode(data)` = `data: <str>\\n\\n` built once per "
        "publish, one `http.response.body` message shared by all subscribers, `receive()` "
        "watched for `http.disconnect` (unsubscribe, cancel the delivery task).",
        f"- Machine: {mach['cpu']}, {mach['cpus']} CPUs ({mach['affinity']} usable), "
        f"{mach['memory_gb']} GB, Linux {mach['kernel']}, "
        f"`ulimit -n` {mach['ulimit_nofile_hard']}, "
        f"somaxconn {mach['somaxconn']}. Server and load generator share the CPUs; other "
        "benchmarks may run on this machine: see load average / CPU busy per run.",
        f"- Versions: Python {mach['python']}, granian {mach['granian']}, uvloop "
        f"{mach['uvloop']}, orjson {mach['orjson']}, sse_fast {mach['sse_fast']} "
        f"(Cython extensions: {'yes' if mach['sse_fast_extensions'] else 'no'}), git "
        f"{mach['git_commit']}"
        + (f" (uncommitted: {', '.join(mach['git_dirty'])})" if mach["git_dirty"] else "")
        + ".",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=10.0, help="publishes per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds")
    parser.add_argument("--payload-bytes", type=int, default=64)
    parser.add_argument("--processes", type=int, default=0, help="client processes (0 = auto)")
    parser.add_argument(
        "--apps", default=",".join(APPS), help=f"comma-separated subset of {','.join(APPS)}"
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all apps")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between runs")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=180.0,
        help="before each run, wait up to this many seconds for the machine to be idle",
    )
    parser.add_argument(
        "--idle-below", type=float, default=0.15, help="idle = CPU busy fraction below this"
    )
    args = parser.parse_args(argv)
    apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    unknown = [a for a in apps if a not in APPS]
    if unknown or not apps:
        parser.error(f"unknown app(s) {unknown}; choose from {list(APPS)}")
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be 1..{MAX_CONNECTIONS} (one worker)")
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error("--duration is bounded to 600 s, --warmup to 60 s")
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat must be 1..10")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)  # so that `finally` stops the server

    def log(text: str) -> None:
        print(text, flush=True)

    mach = system.machine_and_build()
    runs: list[dict[str, Any]] = []
    for round_index in range(args.repeat):
        for app in apps:
            if runs:
                time.sleep(args.pause)
            log(f"--- {app} (round {round_index + 1}/{args.repeat})")
            runs.append(run_one(app, args, log))
    given = [a for a in (argv if argv is not None else sys.argv[1:]) if a]
    report = {
        "benchmark": "fanout_paths",
        "machine": mach,
        "conditions": {
            "connections": args.connections,
            "rate": args.rate,
            "duration": args.duration,
            "warmup": args.warmup,
            "payload_bytes": args.payload_bytes,
            "topics": 1,
            "publishers": 1,
            "client_processes": runs[0]["result"]["client_processes"],
            "repeat": args.repeat,
            "apps": apps,
            "granian_flags": GRANIAN_FLAGS,
            "stop": f"SIGTERM, SIGKILL after {STOP_TIMEOUT:g} s",
            "argv": " ".join(given),
        },
        "runs": runs,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "fanout_paths.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out_dir / "fanout_paths.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
