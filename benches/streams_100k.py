"""A hundred thousand streams on this machine, sse_fast and Nchan side by side (issue 44,
items 1 and 2).

    python -m benches.streams_100k                  # the full run (about 15 min on 2 cores)
    python -m benches.streams_100k --quick          # smoke: 2,000 streams, 2 workers, to a temp dir
    python -m benches.streams_100k --parts storm --targets sse_fast

Every target runs ``--workers`` processes (6: ``ulimit -n`` is 20,000 per process here),
the load generator ``--processes`` client processes over ``--sources`` 127.0.0.x source
addresses (``sse_fast.loadgen``), one topic that every stream subscribes to, 64-byte
events. Each part runs in a fresh server, stopped afterwards:

* ``broadcast``: ``--streams`` streams open (no event while they connect), then a
  broadcast every 5 s for 20 s: how many opened, how long that took, events delivered
  against expected, lost, p50/p99 latency (publish to client parse), the server's RSS
  per stream (idle, over its RSS before the clients) and its cores.
* ``idle``: the same streams open, nothing published for 30 s, heartbeats at the
  servers' defaults (sse_fast 15 s; Nchan's ping every 15 s as ``benches.peers``
  configures it): the server's cores. The cost of holding them.
* ``saturated``: the streams open while a broadcast goes to those already open every
  second (the load generator's probe every 1 s while connecting, then a publish every
  second): how long until all are open, connect time p50/p99 (request written to
  response head), refused or failed connects. New streams must keep opening however
  busy the fan-out keeps the workers.
* ``storm``: the streams open, a broadcast every second, and 5 s into the window the
  server is restarted: SIGTERM, wait until every process is gone, start it again on
  the same port (sse_fast with the same ``--data-dir``, so its history survives). Every
  client whose stream ends reconnects as a browser does, after the stream's ``retry``
  (sse_fast's drain sends ``retry_ms`` plus up to ``drain_retry_jitter_ms`` at random)
  with ``Last-Event-ID``, again while it fails. Reported: streams back, the time from
  SIGTERM until the last one was back, connects refused meanwhile, lost and repeated
  events (per client, by sequence number: an event published while its client was away
  and not resumed is lost), peak server RSS (sampled every 0.25 s). A stream is back
  when the clients read the 200 of its reconnect (a come-back, a 200 ended at once, is
  not); the clients' times are late by as long as their loops lag (reported: 12
  processes beside the server's 6 on 2 cores lag by seconds in the storm), so the time
  until the kernel held every connection to the server again (``ss``, each second) is
  reported beside it.
* ``storm_5s``: the same restart under a broadcast every 5 s, the load of ``broadcast``.
  At 100,000 streams a broadcast every second is 100,000 deliveries/s that the server
  and the clients on the same 2 cores already can hardly carry (latencies of tens of
  seconds in ``storm``): this part is the restart of a server under its normal load.

Writes ``benches/results/streams_100k.md`` and ``streams_100k.json`` (``--out``).
Loopback only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from benches import peers
from benches.server_bench import RESULTS, log
from benches.system import machine
from sse_fast.loadgen import run_load
from sse_fast.loadgen._procfs import rss_kb

PARTS = ["broadcast", "idle", "saturated", "storm", "storm_5s"]
#: the storm parts and their broadcast rate (publishes/s)
STORMS = {"storm": 1.0, "storm_5s": 0.2}
TARGETS = ["sse_fast", "nchan"]
STREAMS, WORKERS, PROCESSES, SOURCES = 100_000, 6, 12, 13
QUICK = {"streams": 2000, "workers": 2, "processes": 2, "sources": 2}
HEARTBEAT = 15.0


@dataclasses.dataclass(eq=False)
class RestartableSseFast(peers.SseFastTarget):
    """``SseFastTarget`` whose ``--data-dir`` outlives a restart (its history resumes)."""

    data_dir: Path | None = None
    #: more flags for ``sse-fast serve`` (``--sse-fast-flags``)
    flags: tuple[str, ...] = ()

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv, cwd, env = super().command(workdir)
        if self.data_dir is not None:
            argv[argv.index("--data-dir") + 1] = str(self.data_dir)
        return [*argv, *self.flags], cwd, env


def make_targets(names: list[str], workers: int) -> tuple[list[peers.Target], dict[str, str]]:
    """The targets, each with ``workers`` processes; {name: reason} for those missing."""
    available, skipped = peers.available_targets(heartbeat=HEARTBEAT, workers=workers)
    by_name = {t.name: t for t in available}
    out: list[peers.Target] = []
    reasons: dict[str, str] = {}
    for name in names:
        if name == "sse_fast" and "sse_fast-1w" in by_name:
            base = by_name["sse_fast-1w"]
            init = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
            out.append(RestartableSseFast(**{**init, "name": name, "workers": workers}))
        elif name == "nchan" and "nchan" in by_name:
            out.append(dataclasses.replace(by_name["nchan"], workers=workers))
        else:
            key = "sse_fast-1w" if name == "sse_fast" else name
            reasons[name] = skipped.get(key, f"unknown target (choose from {TARGETS})")
    return out, reasons


class Peak:
    """The peak RSS of a target's processes, sampled every 0.25 s in a thread; with
    ``port``, also the connections the kernel holds established to it (``ss``, every
    ``count_every`` s): when the server held all of them again after a restart, a
    time the clients' own lag does not add to."""

    def __init__(self, target: peers.Target, port: int = 0, count_every: float = 1.0) -> None:
        self.target = target
        self.kb = 0
        self.port = port
        self.count_every = count_every
        self.counts: list[tuple[float, int]] = []  # (wall time, established to port)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)]
        if port:
            self._threads.append(threading.Thread(target=self._count, daemon=True))
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.kb = max(self.kb, rss_kb(self.target.server_pids()))
            except Exception:  # a process gone between listing and reading: next sample
                continue

    def _count(self) -> None:
        while not self._stop.wait(self.count_every):
            now = time.time()
            count = established(self.port)
            if count is not None:
                self.counts.append((now, count))

    def stop(self) -> int:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.kb

    def all_back_after(self, began: float, streams: int) -> float | None:
        """Seconds from ``began`` until the kernel held as many connections to the port
        as just before it (``streams`` and the publisher's; at least ``streams``), after
        it had held fewer (the restart): None if it never did."""
        before = [count for at, count in self.counts if at < began]
        full = max(streams, before[-1]) if before else streams
        fewer = False
        for at, count in self.counts:
            if at < began:
                continue
            if count < full:
                fewer = True
            elif fewer:
                return at - began
        return None


def established(port: int) -> int | None:
    """Connections established to local ``port`` (the server's side of each), by
    ``ss`` (netlink, filtered in the kernel); None where ``ss`` is missing or fails."""
    import subprocess

    try:
        out = subprocess.run(
            ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.count(b"\n")


def restart(target: peers.Target, phases: dict[str, float] | None = None) -> None:
    """SIGTERM the server, wait until it is gone, start it again on the same port;
    ``phases`` gets the seconds from the SIGTERM until every process was gone
    (``stopped``), the port was free (``port_free``) and the new server answered
    (``ready``)."""
    port = target.port
    began = time.monotonic()
    target.stop()
    stopped = time.monotonic()
    deadline = stopped + 10
    while not peers.port_is_free(target.host, port) and time.monotonic() < deadline:
        time.sleep(0.05)
    free = time.monotonic()
    target.start()
    if phases is not None:
        phases.update(
            stopped=round(stopped - began, 2),
            port_free=round(free - began, 2),
            ready=round(time.monotonic() - began, 2),
        )
    if target.port != port:
        raise RuntimeError(f"{target.name} came back on port {target.port}, not {port}")


def _load(target: peers.Target, conditions: dict[str, Any], **options: Any) -> Any:
    return run_load(
        connections=conditions["streams"],
        processes=conditions["processes"],
        sources=conditions["sources"],
        progress=log,
        **target.load_arguments(),
        **options,
    )


def run_part(target: peers.Target, part: str, conditions: dict[str, Any]) -> dict[str, Any]:
    """One part on a fresh start of ``target``: its figures."""
    data_dir = None
    if isinstance(target, RestartableSseFast):
        data_dir = Path(tempfile.mkdtemp(prefix="streams-100k-data-"))
        target.data_dir = data_dir
    target.keep_logs = conditions.get("keep_logs", False)
    target.start()
    peak = None
    phases: dict[str, float] = {}  # the restart's, in the storms
    try:
        if part == "broadcast":
            peak = Peak(target)  # RSS while the events go out, as well as before
            r = _load(target, conditions, rate=0.2, duration=20.0, probe=False)
        elif part == "idle":
            r = _load(target, conditions, rate=1.0, duration=30.0, probe=False, no_publish=True)
        elif part == "saturated":
            r = _load(target, conditions, rate=1.0, duration=10.0, probe=True, probe_interval=1.0)
        else:
            peak = Peak(target, port=target.port)
            r = _load(
                target,
                conditions,
                rate=STORMS[part],
                duration=conditions["storm_window"],
                probe=False,
                reconnect_on_close=True,
                fault=lambda: restart(target, phases),
                fault_after=5.0,
            )
    finally:
        peak_kb = peak.stop() if peak is not None else None
        target.stop()
        if data_dir is not None:
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)
    out = {k: v for k, v in dataclasses.asdict(r).items() if not isinstance(v, dict | list)}
    out["connect_failures"] = r.connect_failures
    out["failures_in_run"] = r.failures_in_run
    out["publish_failures"] = r.publish_failures
    if peak_kb is not None:
        out["peak_rss_kb"] = peak_kb
    if part == "broadcast" and peak_kb and r.connected:
        # the peak over the run (streams open, five broadcasts out) less RSS before
        # the streams, per stream: what sizing needs, as ``scaling.py`` reads it
        base = r.server_rss_base_kb or 0
        out["rss_per_stream_broadcast_kb"] = round((peak_kb - base) / r.connected, 2)
    if peak is not None and peak.port:
        out["restart_phases"] = phases
        out["old_gone_after_s"] = phases.get("stopped")
        out["new_ready_after_s"] = phases.get("ready")
        last, began = r.reconnected_on_close_last, r.fault_began
        out["back_after_s"] = last - began if last and began else None
        out["server_all_back_after_s"] = (
            peak.all_back_after(began, r.connections) if began else None
        )
        if began:  # the kernel's count each second: (seconds from the fault, established)
            out["server_connections"] = [
                (round(at - began, 1), count) for at, count in peak.counts if at >= began - 2
            ]
    return out


def report(run: dict[str, Any]) -> str:
    """The markdown report of one run."""
    c = run["conditions"]
    results = run["results"]
    targets = [t for t in TARGETS if t in results]
    lines = [
        "# A hundred thousand streams",
        "",
        f"`python -m benches.streams_100k`: {c['streams']:,} streams, {c['workers']} worker "
        f"processes per server, {c['processes']} client processes over {c['sources']} source "
        f"addresses, one topic, 64-byte events. Machine: {run['machine']}.",
        "",
    ]

    def cell(target: str, part: str, key: str, fmt: str = "{:,.0f}") -> str:
        value = results.get(target, {}).get(part, {}).get(key)
        if value is None:
            error = results.get(target, {}).get(part, {}).get("error")
            return "failed" if error else "-"
        return fmt.format(value)

    def table(part: str, rows: list[tuple[str, str, str]]) -> None:
        lines.append("| | " + " | ".join(targets) + " |")
        lines.append("|---|" + "---|" * len(targets))
        for label, key, fmt in rows:
            lines.append(
                f"| {label} | " + " | ".join(cell(t, part, key, fmt) for t in targets) + " |"
            )
        lines.append("")

    lines += ["## Broadcast every 5 s", ""]
    table(
        "broadcast",
        [
            ("streams open", "connected", "{:,.0f}"),
            ("seconds to open them", "connect_seconds", "{:.1f}"),
            ("events expected", "expected", "{:,.0f}"),
            ("delivered", "delivered", "{:,.0f}"),
            ("lost", "lost", "{:,.0f}"),
            ("p50 latency (ms)", "p50_ms", "{:,.0f}"),
            ("p99 latency (ms)", "p99_ms", "{:,.0f}"),
            (
                "RSS per stream, all open before the first event (KB)",
                "rss_per_connection_kb",
                "{:.2f}",
            ),
            (
                "RSS per stream, peak while the events go out (KB)",
                "rss_per_stream_broadcast_kb",
                "{:.2f}",
            ),
            ("server cores while broadcasting", "server_cores_used", "{:.2f}"),
        ],
    )
    lines += ["## Idle, default heartbeats (30 s)", ""]
    table(
        "idle",
        [("streams open", "connected", "{:,.0f}"), ("server cores", "server_cores_used", "{:.3f}")],
    )
    lines += ["## Opening while a broadcast goes out every second", ""]
    table(
        "saturated",
        [
            ("streams open", "connected", "{:,.0f}"),
            ("failed connects", "connect_errors", "{:,.0f}"),
            ("seconds until all were open", "connect_seconds", "{:.1f}"),
            ("connect p50 (ms)", "connect_p50_ms", "{:,.0f}"),
            ("connect p99 (ms)", "connect_p99_ms", "{:,.0f}"),
        ],
    )

    def storm_table(part: str) -> None:
        table(
            part,
            [
                ("streams open before", "connected", "{:,.0f}"),
                ("streams ended by the server", "closed_by_server", "{:,.0f}"),
                ("streams back (open at the window's end)", "connected_at_end", "{:,.0f}"),
                ("streams counted back", "reconnected_on_close", "{:,.0f}"),
                (
                    "seconds from SIGTERM until the old server was gone",
                    "old_gone_after_s",
                    "{:.1f}",
                ),
                ("... until the new one answered", "new_ready_after_s", "{:.1f}"),
                (
                    "seconds from SIGTERM until the server held them all (kernel count)",
                    "server_all_back_after_s",
                    "{:.1f}",
                ),
                ("seconds from SIGTERM to the last one back (clients)", "back_after_s", "{:.1f}"),
                (
                    "clients' longest loop lag (ms): their own times are late by up to",
                    "client_lag_max_ms",
                    "{:,.0f}",
                ),
                ("reconnects told to come back later", "come_backs", "{:,.0f}"),
                ("reconnects refused or failed", "reconnect_errors", "{:,.0f}"),
                ("events published", "published", "{:,.0f}"),
                (
                    "publishes without an answer (neither expected nor lost)",
                    "publish_unanswered",
                    "{:,.0f}",
                ),
                ("events expected (published x streams)", "expected", "{:,.0f}"),
                ("delivered (a stream not back misses the rest)", "delivered", "{:,.0f}"),
                ("lost (gaps a stream saw once back)", "lost", "{:,.0f}"),
                ("repeated", "duplicates", "{:,.0f}"),
                ("peak server RSS (MB)", "peak_rss_mb", "{:,.0f}"),
            ],
        )
        for t in targets:
            for key, what in (("failures_in_run", "connects"), ("publish_failures", "publishes")):
                failures = results[t].get(part, {}).get(key)
                if failures:
                    why = ", ".join(
                        f"{n:,} x {k}" for k, n in sorted(failures.items(), key=lambda i: -i[1])
                    )
                    lines.extend([f"{t}'s failed {what} in {part}: {why}.", ""])

    for part, title in (
        ("storm", "A restart under a broadcast every second (SIGTERM, start again, all reconnect)"),
        ("storm_5s", "The same restart under a broadcast every 5 s (the load of the first part)"),
    ):
        if not any(part in results.get(t, {}) for t in targets):
            continue
        lines += [f"## {title}", ""]
        storm_table(part)
    errors = [
        f"- {t} {p}: {results[t][p]['error']}"
        for t in targets
        for p in PARTS
        if "error" in results[t].get(p, {})
    ]
    if errors:
        lines += ["Failed parts:", "", *errors, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=STREAMS)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--processes", type=int, default=PROCESSES)
    parser.add_argument("--sources", type=int, default=SOURCES)
    parser.add_argument("--storm-window", type=float, default=60.0)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a smoke run, to a temporary dir")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    parser.add_argument("--sse-fast-flags", default="", help="more flags for sse-fast serve")
    args = parser.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}: choose from {PARTS}")
    conditions = {
        "keep_logs": args.keep_logs,
        "streams": args.streams,
        "workers": args.workers,
        "processes": args.processes,
        "sources": args.sources,
        "storm_window": args.storm_window,
    }
    if args.quick:
        conditions.update(QUICK, storm_window=20.0)
        if args.out == RESULTS:
            args.out = Path(tempfile.mkdtemp(prefix="streams-100k-"))
    targets, reasons = make_targets(args.targets.split(","), conditions["workers"])
    for target in targets:
        if isinstance(target, RestartableSseFast):
            target.flags = tuple(args.sse_fast_flags.split())
    conditions["sse_fast_flags"] = args.sse_fast_flags
    results: dict[str, dict[str, Any]] = {name: {"skipped": why} for name, why in reasons.items()}
    for target in targets:
        for part in args.parts.split(","):
            log(f"{target.name}: {part}")
            try:
                found = run_part(target, part, conditions)
            except Exception as exc:  # recorded with the reason; the run goes on
                traceback.print_exc()
                found = {"error": f"{type(exc).__name__}: {exc}"}
            if "peak_rss_kb" in found:
                found["peak_rss_mb"] = found["peak_rss_kb"] / 1024
            results.setdefault(target.name, {})[part] = found
    run = {"machine": machine(), "conditions": conditions, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "streams_100k.json").write_text(json.dumps(run, indent=2) + "\n")
    (args.out / "streams_100k.md").write_text(report(run))
    print(report(run))


if __name__ == "__main__":
    main()
