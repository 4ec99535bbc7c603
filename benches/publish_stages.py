"""Where a single ``POST /publish`` goes: its stages under Granian, and RSGI.

    python -m benches.publish_stages                 # 3 rounds of 6 s per target
    python -m benches.publish_stages --rounds 1 --seconds 3

``benches.single_publish`` says how far one event per request is from a bare
Granian app; this says where the difference goes, measured where it is paid:
in a Granian worker pinned to one core with its I/O thread, not in a tight loop
(there, the same Python work costs a fraction: the topics' objects stay in the
cache). Every target is one Granian worker on core 1 (every thread pinned) and
``wrk`` on core 0 with the notification benchmark's request (a small JSON event
to a random one of 10,000 ``user/<n>`` topics, 16 connections, one thread):

* ``bare``, ``bare-cl``: ``benches/peers/bare_post_app.py`` (the floor of
  ``single_publish``: reading to the body's end, or stopping at its length);
* ``read`` .. ``full``: ``benches/peers/publish_stages_app.py``, the request
  answered after the first stages of a publish only (its docstring lists them):
  a stage's cost is the difference of microseconds per request to the stage
  before it;
* ``sse_fast``: ``sse-fast serve`` itself, one worker (should match ``full``);
* ``rsgi-read``, ``rsgi-hub``: the same app on Granian's RSGI interface: the
  body read and answered, and parsed and published through the same hub.

No Nchan here: without subscribers its publish is a store in shared memory, not
the work the issue compares (``benches.notifications`` has Nchan with its 10,000
subscribers).

Rounds are interleaved (every target once, then again) and the medians are
compared within the run: this machine is noisy. Results go to
``benches/results/publish_stages.{md,json}``. Loopback only, bounded in time.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import peers
from .single_publish import (
    BareTarget,
    GranianTarget,
    checkout_lines,
    main_of,
    run_rounds,
    with_checkout,
    with_python,
)

USERS = 10_000
STAGES = ("read", "parse", "sequence", "apply", "hub", "full")


@dataclass(eq=False)
class StageTarget(GranianTarget):
    """``publish_stages_app`` under Granian: ``stage`` on ``interface``."""

    stage: str = "full"
    interface: str = "asgi"

    def ready(self) -> bool:
        if not super().ready():
            return False
        peers.check_native_core(self)
        return True

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv = [
            self.python or sys.executable,
            "-m",
            "granian",
            "--interface",
            self.interface,
            "--loop",
            "uvloop",
            "--http",
            "1",
            "--workers",
            "1",
            "--backlog",
            "4096",
            "--backpressure",
            str(20_000 - 64),
            "--runtime-threads",
            "1",
            "--http1-buffer-size",
            "8192",
            "--log-level",
            "warning",
            "--no-access-log",
            "--host",
            self.host,
            "--port",
            str(self.port),
            f"publish_stages_app:{self.interface}",
        ]
        env = {
            "PUBLISH_STAGE": self.stage,
            "SSE_FAST_ALLOW_ANONYMOUS_PUBLISH": "1",
            "SSE_FAST_PUBLISH_RATE": "0",
            "SSE_FAST_HEARTBEAT_INTERVAL": "30",
            "SSE_FAST_LOG_LEVEL": "warning",
            "SSE_FAST_DATA_DIR": str(workdir / "data"),
        }
        return argv, peers.PEERS_DIR, peers.clean_env(env)


def targets(host: str) -> list[peers.Target]:
    """Every target of a round, in the order they run."""
    ports = iter(peers.free_ports(host, 12))
    out: list[peers.Target] = [
        BareTarget("bare", host, next(ports)),
        BareTarget("bare-cl", host, next(ports), stop_at_length=True),
    ]
    out += [StageTarget(stage, host, next(ports), stage=stage) for stage in STAGES]
    out.append(peers.SseFastTarget("sse_fast", host, next(ports), heartbeat=30.0))
    out.append(StageTarget("rsgi-read", host, next(ports), stage="read", interface="rsgi"))
    out.append(StageTarget("rsgi-hub", host, next(ports), stage="hub", interface="rsgi"))
    return out


def run(
    rounds: int, seconds: float, compare_with: str | None = None, compare_python: str = ""
) -> dict[str, Any]:
    chosen = with_python(with_checkout(targets(peers.HOST), compare_with), compare_python)
    return run_rounds(chosen, rounds, seconds)


def median(report: dict[str, Any], name: str) -> float:
    return float(statistics.median(r["requests_per_s"] for r in report["results"][name]))


def write_report(report: dict[str, Any], path: Path) -> None:
    m, p, results = report["machine"], report["params"], report["results"]
    bare = median(report, "bare")
    lines = [
        "# Where a single POST /publish goes: its stages under Granian, and RSGI",
        "",
        f"`python -m benches.publish_stages` on {m.get('cores', '?')} cores "
        f"({m.get('cpu', '?')}), Python {m.get('python', '?')}, {report['date']}.",
        "",
        f"- One Granian worker on core 1 (every thread pinned), no subscribers; `wrk` on core "
        f"0, {p['connections']} connections, one thread, {p['seconds']:g} s per round, "
        f"{p['rounds']} rounds interleaved; a small JSON event to a random one of "
        f"{p['users']:,} topics per request (the notification benchmark's request).",
        "- The stages (`benches/peers/publish_stages_app.py`): read, parse, sequence, apply, "
        "hub (`Hub.publish` whole, with the data directory's write), full (the app); "
        "*us/request* = 1,000,000 / the median requests/s (the worker's core is saturated "
        "in every row); *stage costs* = its us/request minus the row before it; *CPU us per "
        "request*: the worker's threads (median over the rounds): its event loop (the app), "
        "Granian's I/O thread (tokio), other threads (Python threads Granian calls into Python "
        "from; under RSGI every Granian thread is named python, so its I/O is counted there).",
        "- Versions: " + "; ".join(f"{k} {v}" for k, v in sorted(report["versions"].items())),
        "",
        "| target | requests/s per round | median | us/request | stage costs us | vs bare "
        "| CPU us per request: loop / I/O / other |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    previous = None
    for name, rows in results.items():
        if not rows:
            continue
        rates = ", ".join(f"{r['requests_per_s']:,.0f}" for r in rows)
        mid = median(report, name)
        us = 1e6 / mid
        step = ""
        if name in STAGES[1:] and previous is not None:
            step = f"{us - previous:+.1f}"
        if name in STAGES:
            previous = us
        row = (
            f"| {name} | {rates} | {mid:,.0f} | {us:.1f} | {step} | {mid / bare:.2f}x "
            f"| {per_request_cpu(rows, p['seconds'])} |"
        )
        lines.append(row)
    lines += ["", *reading(report)]
    path.write_text("\n".join(lines) + "\n")


def per_request_cpu(rows: list[dict[str, Any]], seconds: float) -> str:
    """``loop / io / other`` microseconds of CPU per request, medians over the rounds."""
    if not all("cpu_s" in row for row in rows):
        return ""
    parts = []
    if not any(row["cpu_s"]["io"] for row in rows):
        # no thread named tokio (RSGI's are all "python"): its I/O is in "other"
        rows = [{**row, "cpu_s": {**row["cpu_s"], "io": float("nan")}} for row in rows]
    for role in ("loop", "io", "other"):
        each = [
            row["cpu_s"][role] / max(1.0, row["requests_per_s"] * seconds) * 1e6 for row in rows
        ]
        middle = statistics.median(each)
        parts.append("-" if middle != middle else f"{middle:.1f}")  # NaN: not told apart
    return " / ".join(parts)


def reading(report: dict[str, Any]) -> list[str]:
    """The figures the issue asks about, from this run's medians."""
    bare, full = median(report, "bare"), median(report, "full")
    out = [
        f"- The app (`full`) is {full / bare:.2f}x bare; `sse-fast serve` "
        f"{median(report, 'sse_fast') / bare:.2f}x.",
        f"- RSGI: the bare read {median(report, 'rsgi-read') / bare:.2f}x the ASGI bare; "
        f"parse + `Hub.publish` {median(report, 'rsgi-hub') / median(report, 'hub'):.2f}x "
        "the same stage on ASGI.",
    ]
    return out + [f"- {line}" for line in checkout_lines(report)]


def main(argv: list[str] | None = None) -> int:
    return main_of("publish_stages", __doc__ or "", 6.0, run, write_report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
