"""The Starlette adapter against sse-starlette: the same app, only the import differs.

    python -m benches.starlette_adapter            # steady 1,000 x 10/s, then a saturation ladder
    python -m benches.starlette_adapter --quick    # short steps

The app is ``benches/peers/starlette_app.py`` (the common sse-starlette pattern:
one ``asyncio.Queue`` per subscriber, ``EventSourceResponse`` over a generator,
``POST /publish`` fanning out to the queues), run with ``PEER_SSE=sse_starlette``
or ``PEER_SSE=sse_fast`` (``from sse_fast.starlette import EventSourceResponse,
ServerSentEvent``). Each under uvicorn (uvloop, httptools) and under Granian
(ASGI, uvloop), one process, pinned with every thread to core 1; the load
generator (``sse_fast.loadgen``) on core 0. Steps:

* steady: 1,000 streams on one topic, 10 publishes/s (10,000 deliveries/s);
* saturation: the same 1,000 streams, 8 publishers at rising rates (doubling)
  until fewer than 90 % of the events are published or delivered, then two
  steps bisecting between the last rate kept up and the first not.

Reported per step: delivered/s, p50/p99 (publish to parse), the server's CPU
(seconds per second) and delivered/s per server core second; the summary is
each server's best delivered/s per core (a step that kept up) and the ratio
sse_fast.starlette / sse-starlette under the same server. Results:
``benches/results/starlette_adapter.{md,json}``. Loopback only, bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import peers, server_bench
from .notifications import LOAD_CORE, SERVER_CORE, pin
from .system import machine

RESULTS = Path(__file__).resolve().parent / "results"
LIBRARIES = {
    "sse-starlette": "sse_starlette",
    "sse_fast.starlette": "sse_fast",  # the drop-in's defaults: sse-starlette's bytes
    "sse_fast.starlette+options": "sse_fast_coalesce",  # coalesce=True, ping_when_idle=True
}
SERVERS = ("uvicorn", "granian")
KEPT_UP = 0.9
#: steps bisecting between the last rate of the ladder kept up and the first not
BISECT = 2


@dataclass(eq=False)
class AdapterTarget(peers.Target):
    library: str = "sse_starlette"
    server: str = "uvicorn"
    app: str = "starlette_app:app"  # module:attribute in benches/peers/

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        if self.server == "uvicorn":
            argv = [sys.executable, "-m", "uvicorn", "--host", self.host, "--port", str(self.port)]
            argv += ["--loop", "uvloop", "--http", "httptools", "--backlog", "4096"]
            argv += ["--no-access-log", "--timeout-graceful-shutdown", "3"]
        else:
            argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop"]
            argv += ["--host", self.host, "--port", str(self.port), "--backlog", "4096"]
            argv += ["--backpressure", "19000", "--log-level", "warning"]
            argv += ["--workers-kill-timeout", "3"]
        argv.append(self.app)
        env = {"PEER_HEARTBEAT": f"{self.heartbeat:g}", "PEER_SSE": self.library}
        return argv, peers.PEERS_DIR, peers.clean_env(env)

    def start(self) -> None:
        super().start()
        pin(self.server_pids(), SERVER_CORE)  # every thread, started or not yet

    def ready(self) -> bool:
        status, _ = peers.http_get(self.host, self.port, "/healthz")
        return status == 200

    def server_pids(self) -> list[int]:
        if self._proc is None or not peers.pid_alive(self._proc.pid):
            return []
        return [self._proc.pid, *peers.descendants(self._proc.pid)]

    def versions(self) -> dict[str, str]:
        out = super().versions()
        for dist in ("sse_fast", "sse-starlette", "starlette", "django", self.server, "uvloop"):
            out[dist] = peers.dist_version(dist)
        return out


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_step(target: AdapterTarget, **load: Any) -> dict[str, Any]:
    result = server_bench.run_target(target, **load)
    row = asdict(result)
    kept = result.published >= KEPT_UP * load["rate"] * result.duration and (
        result.delivered >= KEPT_UP * max(result.expected, 1)
    )
    row.update(library=target.library, server=target.server, rate=load["rate"], kept_up=kept)
    log(
        f"  {target.name:32s} rate {load['rate']:>4}/s delivered {result.delivered_per_second:>9,.0f}/s"
        f" p99 {result.p99_ms:7.1f} ms cpu {result.server_cores_used or 0:.2f}"
        f" per core {result.delivered_per_server_core_second or 0:>9,.0f}/s kept {kept}"
    )
    return row


def run(
    quick: bool, libraries: dict[str, str] = LIBRARIES, app: str = "starlette_app:app"
) -> dict[str, Any]:
    connections = 1000
    seconds = 5.0 if quick else 10.0
    ladder = [20, 80] if quick else [20, 40, 80, 160, 320, 640]
    rows: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    for server in SERVERS:
        for label, library in libraries.items():
            name = f"{label}-{server}"
            port = peers.free_ports(peers.HOST, 1)[0]
            target = AdapterTarget(name, peers.HOST, port, heartbeat=15.0)
            target.library, target.server, target.app = library, server, app
            versions.update(target.versions())
            log(f"{name}:")
            row = run_step(target, connections=connections, rate=10, duration=seconds, warmup=2)
            row["step"] = "steady"
            rows.append(row)
            kept, failed = 10, None

            def saturation(rate: int, target: AdapterTarget = target) -> bool:
                row = run_step(
                    target,
                    connections=connections,
                    rate=rate,
                    publishers=8,
                    duration=seconds,
                    warmup=2,
                )
                row["step"] = "saturation"
                rows.append(row)
                return bool(row["kept_up"])

            for rate in ladder:
                if not saturation(rate):
                    failed = rate
                    break
                kept = rate
            for _ in range(BISECT):  # between the last rate kept up and the first not
                if failed is None or failed - kept < 4:
                    break
                rate = (kept + failed) // 2
                if saturation(rate):
                    kept = rate
                else:
                    failed = rate
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "quick": quick,
        "machine": machine(),
        "params": {"connections": connections, "seconds": seconds, "ladder": ladder},
        "versions": versions,
        "libraries": libraries,
        "rows": rows,
    }


def best_per_core(
    rows: list[dict[str, Any]], library: str, server: str, kept_up: bool = True
) -> float:
    """The most delivered/s per server core of the steps that kept up (or of all)."""
    found = [
        r["delivered_per_server_core_second"] or 0.0
        for r in rows
        if r["library"] == library and r["server"] == server and (r["kept_up"] or not kept_up)
    ]
    return max(found, default=0.0)


def write_report(
    report: dict[str, Any],
    path: Path,
    title: str = "sse_fast.starlette vs sse-starlette: the same app, only the import differs",
    command: str = "python -m benches.starlette_adapter",
    app: str = "`benches/peers/starlette_app.py` (one `asyncio.Queue` per subscriber, "
    "`EventSourceResponse` over a generator), `PEER_SSE` choosing the library",
    notes: str = "`sse_fast.starlette`: the drop-in as it comes (sse-starlette's bytes, one "
    "write per item, pings every 15 s); `sse_fast.starlette+options`: with `coalesce=True, "
    "ping_when_idle=True`.",
) -> None:
    rows, p = report["rows"], report["params"]
    libraries: dict[str, str] = report.get("libraries", LIBRARIES)
    (base_label, base), *others = libraries.items()
    m = report["machine"]
    lines = [
        f"# {title}",
        "",
        f"`{command}{' --quick' if report['quick'] else ''}` on "
        f"{m.get('cores', '?')} cores ({m.get('cpu', '?')}), Python {m.get('python', '?')}, "
        f"{report['date']}.",
        "",
        f"- App: {app}. One server process, every thread pinned to core 1; the load "
        "generator on core 0.",
        f"- steady: {p['connections']:,} streams on one topic, 10 publishes/s; saturation: the "
        f"same streams, 8 publishers, rates {', '.join(map(str, p['ladder']))}/s until under "
        f"{KEPT_UP:.0%} published or delivered, then {BISECT} steps bisecting between the last "
        f"rate kept up and the first not; {p['seconds']:g} s per step.",
        "- Versions: " + "; ".join(f"{k} {v}" for k, v in sorted(report["versions"].items())),
        "",
        "## Delivered/s per server core",
        "",
        "Best of the steps that kept up, and of all steps (the saturated ones included). "
        f"{notes} Ratios are to {base_label} under the same server, in the same run.",
        "",
        f"| server | steps | {base_label} | "
        + " | ".join(f"{label} | ratio" for label, _ in others)
        + " |",
        "|---|---|---:|" + "---:|---:|" * len(others),
    ]
    for server in SERVERS:
        for kept_up in (True, False):
            theirs = best_per_core(rows, base, server, kept_up)
            cells = [f"{theirs:,.0f}"]
            for _, library in others:
                ours = best_per_core(rows, library, server, kept_up)
                cells.append(
                    f"{ours:,.0f} | {ours / theirs:.2f}x" if theirs else f"{ours:,.0f} | -"
                )
            which = "kept up" if kept_up else "all"
            lines.append(f"| {server} | {which} | {' | '.join(cells)} |")
    lines += [
        "",
        "## Every step",
        "",
        "| target | step | publishes/s asked | delivered/s | p50 ms | p99 ms | lost | server CPU | "
        "delivered/s per core | kept up |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['step']} | {r['rate']} | {r['delivered_per_second']:,.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['lost']} | "
            f"{r['server_cores_used'] or 0:.2f} | {r['delivered_per_server_core_second'] or 0:,.0f} "
            f"| {'yes' if r['kept_up'] else 'no'} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.starlette_adapter", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="5 s steps, two saturation rates")
    parser.add_argument("--out", default=str(RESULTS / "starlette_adapter"), help="path prefix")
    args = parser.parse_args(argv)
    pin([os.getpid()], LOAD_CORE)  # the load generator's processes inherit it
    report = run(args.quick)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    write_report(report, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
