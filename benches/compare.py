"""One-command comparison of sse_fast with its peers, same scenarios, same load
generator, one server at a time.

    python -m benches.compare                 # the full run (~20 min on 2 cores)
    python -m benches.compare --quick         # smoke run (about 5 minutes)
    python -m benches.compare --scenarios storm,reconnect --targets sse_fast-1w,nchan

First installs missing peers (``benches.peers.ensure_peers_installed``); a peer that
cannot run is reported as skipped with the reason, in the terminal and in the
report. Then every scenario runs against every available target (sse_fast with 1
and 2 Granian workers, nchan, sse-starlette, Velithon), each run starting a fresh
server and stopping it afterwards:

* ``storm``: N clients connect at once (all connects in flight together) while a
  probe event is published every 100 ms and once more right after all are
  connected; per client: time to connected and time to its first event, from the
  moment the client process began connecting; then 10 publishes/s measured;
* ``broadcast``: one topic, 10 publishes/s at rising connection counts, then rising
  publish rates (8 concurrent publishers) until the server saturates (publishes
  or deliveries fall below 90 % of what was asked);
* ``topics``: every client on a topic of its own, publishes spread over all topics;
* ``reconnect``: publishing continues while every client drops its connection and
  reconnects at once with ``Last-Event-ID`` (the last id it saw); events lost;
* ``slow``: 10 % of the clients are slow consumers (4 KB receive buffer, reading
  0.5 s then pausing 2 s); the fast clients' p99 against an all-fast run;
* ``notifications``: per-user notifications (``benches.notifications``): 10,000
  subscribers each on a topic of its own, notifications to random users, single
  requests at full speed (wrk), and for sse_fast batches of 100 and
  ``POST /publish/stream`` at rising rates until delivery falls behind; the server
  on one core, the load on the other.

Writes ``benches/results/compare.md``, ``compare.json``, ``compare.png``,
``compare_scenarios.png`` and (with ``notifications``) ``compare_notifications.png``.
Loopback only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from benches import notifications, peers
from benches.server_bench import RESULTS, log, table
from benches.system import machine
from sse_fast.loadgen import run_load

TARGET_ORDER = ["sse_fast-1w", "sse_fast-2w", "nchan", "sse-starlette", "velithon"]
SCENARIOS = ["storm", "broadcast", "topics", "reconnect", "slow", "notifications"]
HEARTBEAT = 15.0
SATURATED = 0.9  # a step saturates when publishes or deliveries fall below 90 %
T = TypeVar("T")


def plan(quick: bool) -> dict[str, Any]:
    """Every condition of every scenario (recorded in the report as is)."""
    timing = (
        {"duration": 1.5, "warmup": 0.5, "drain": 1.0, "strict_window": True}
        if quick
        else {"duration": 5.0, "warmup": 2.0, "drain": 3.0, "strict_window": True}
    )
    storm_n = 1000 if quick else 5000
    conns = 1000 if quick else 2000
    return {
        "timing": timing,
        "cooldown_s": 0.5 if quick else 2.0,
        "storm": {
            "connections": storm_n,
            "connect_concurrency": storm_n,
            "first_event_probe": True,
            "probe_interval": 0.1,
            "rate": 10,
            "publishers": 1,
        },
        "broadcast": {
            "connection_steps": [conns] if quick else [500, conns],
            "connection_rate": 10,
            "rate_connections": conns,
            "rates": [10, 40] if quick else [10, 40, 160],
            "publishers": 8,
        },
        "topics": {
            "connections": 500 if quick else conns,
            "topics": 500 if quick else conns,
            "rate": 200 if quick else 1000,
            "publishers": 8,
        },
        "reconnect": {
            "connections": 500 if quick else conns,
            "rate": 20,
            "publishers": 4,
            "duration": 3.0 if quick else 8.0,
            "reconnect_after": 1.0 if quick else 3.0,
        },
        "slow": {
            "connections": 500 if quick else conns,
            "rate": 40,
            "publishers": 8,
            "payload_bytes": 512,
            "slow_every": 10,
            "slow_read": 0.5,
            "slow_pause": 2.0,
            "slow_rcvbuf": 4096,
            "duration": 3.0 if quick else 6.0,
        },
        "notifications": notifications.params(quick),
    }


# ---------------------------------------------------------------- running


class Runner:
    """Runs one load against one fresh server; counts and shows progress."""

    def __init__(self, total: int, cooldown: float) -> None:
        self.total = total
        self.done = 0
        self.cooldown = cooldown
        self.started = time.monotonic()
        self.failures: list[dict[str, str]] = []
        self.commands: dict[str, str] = {}

    def run(self, target: peers.Target, scenario: str, **load: Any) -> dict[str, Any] | None:
        shown = ", ".join(
            f"{k}={v}"
            for k, v in load.items()
            if k in ("connections", "rate", "topics", "slow_every", "reconnect_after")
        )

        def one_load() -> dict[str, Any]:
            target.start()
            self.commands[target.name] = target.command_line
            result = run_load(
                **target.load_arguments(),
                progress=lambda s: log("    " + s.strip()),
                # no probes while connecting (the storm scenario probes by itself):
                # the conditions of the results recorded before they existed
                **{"probe": False, **load},
            )
            row = asdict(result)
            row["scenario"] = scenario
            return row

        return self.attempt(target, scenario, shown, one_load)

    def attempt(
        self, target: peers.Target, scenario: str, shown: str, body: Callable[[], T]
    ) -> T | None:
        """Show progress, run ``body`` (which starts ``target``), stop ``target``;
        a failure is recorded (None returned) and the comparison goes on."""
        self.done += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / (self.done - 1) * (self.total - self.done + 1) if self.done > 1 else 0
        log(
            f"[{self.done}/{self.total}, {elapsed / 60:.1f} min"
            + (f", ~{eta / 60:.1f} min left" if eta else "")
            + f"] {scenario} on {target.name}: {shown}"
        )
        try:
            return body()
        except Exception as exc:  # reported, the comparison goes on
            log(f"    FAILED: {type(exc).__name__}: {exc}")
            self.failures.append(
                {
                    "scenario": scenario,
                    "target": target.name,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=3),
                }
            )
            return None
        finally:
            try:
                target.stop()
            except Exception as exc:
                log(f"    stop failed: {exc}")
            time.sleep(self.cooldown)  # let the kernel finish tearing connections down


def saturated(row: dict[str, Any], rate: float) -> bool:
    published_ok = row["published"] >= SATURATED * rate * row["duration"]
    delivered_ok = row["delivered"] >= SATURATED * row["expected"] if row["expected"] else False
    return not (published_ok and delivered_ok)


def run_storm(runner: Runner, t: peers.Target, p: dict[str, Any]) -> list[dict[str, Any]]:
    s = p["storm"]
    row = runner.run(t, "storm", **s, **p["timing"])
    return [row] if row else []


def run_broadcast(runner: Runner, t: peers.Target, p: dict[str, Any]) -> list[dict[str, Any]]:
    b = p["broadcast"]
    rows = []
    steps = [(n, b["connection_rate"]) for n in b["connection_steps"]]
    steps += [(b["rate_connections"], r) for r in b["rates"] if r != b["connection_rate"]]
    by_step: dict[tuple[int, int], dict[str, Any]] = {}
    for n, rate in steps:
        if (n, rate) in by_step:
            continue
        row = runner.run(
            t, "broadcast", connections=n, rate=rate, publishers=b["publishers"], **p["timing"]
        )
        if row is None:
            continue
        row["scenario_rate"] = rate
        row["saturated"] = saturated(row, rate)
        by_step[(n, rate)] = row
        rows.append(row)
        if row["saturated"] and rate != b["connection_rate"]:
            log(f"    {t.name}: saturated at {rate} publishes/s; stopping the ramp")
            break
    return rows


def run_topics(runner: Runner, t: peers.Target, p: dict[str, Any]) -> list[dict[str, Any]]:
    row = runner.run(t, "topics", **p["topics"], **p["timing"])
    if row is None:
        return []
    row["scenario_rate"] = p["topics"]["rate"]
    return [row]


def run_reconnect(runner: Runner, t: peers.Target, p: dict[str, Any]) -> list[dict[str, Any]]:
    load = {**p["timing"], **p["reconnect"]}
    row = runner.run(t, "reconnect", **load)
    return [row] if row else []


def run_slow(runner: Runner, t: peers.Target, p: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    s = p["slow"]
    for slow in (False, True):
        load = {**p["timing"], **s}
        if not slow:
            for key in ("slow_every", "slow_read", "slow_pause", "slow_rcvbuf"):
                load.pop(key)
        row = runner.run(t, "slow", **load)
        if row is not None:
            row["variant"] = f"{100 // s['slow_every']}% slow" if slow else "all fast"
            rows.append(row)
    return rows


def run_notifications(runner: Runner, t: peers.Target, p: dict[str, Any]) -> list[dict[str, Any]]:
    n = p["notifications"]
    target = notifications.prepared(t, n)  # Nchan with room for every channel

    def ladders() -> list[dict[str, Any]]:
        try:
            return notifications.run_target(target, n, progress=lambda s: log("  " + s.strip()))
        finally:
            runner.commands[t.name] = target.command_line

    shown = f"subscribers={n['subscribers']}, one topic each"
    rows = runner.attempt(target, "notifications", shown, ladders) or []
    for row in rows:
        row["scenario"] = "notifications"
    return rows


RUNNERS = {
    "storm": run_storm,
    "broadcast": run_broadcast,
    "topics": run_topics,
    "reconnect": run_reconnect,
    "slow": run_slow,
    "notifications": run_notifications,
}


def count_runs(scenarios: list[str], p: dict[str, Any], targets: int) -> int:
    b = p["broadcast"]
    per = {
        "storm": 1,
        "broadcast": len(b["connection_steps"])
        + len([r for r in b["rates"] if r != b["connection_rate"]]),
        "topics": 1,
        "reconnect": 1,
        "slow": 2,
        "notifications": 1,  # one server, every way in and every step
    }
    return targets * sum(per[s] for s in scenarios)


# ---------------------------------------------------------------- report


def fmt(value: Any, spec: str = ".1f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{unit}"


def rows_of(report: dict[str, Any], scenario: str, target: str) -> list[dict[str, Any]]:
    return [r for r in report["scenarios"].get(scenario, []) if r["target"] == target]


def firsts(
    report: dict[str, Any], scenario: str, names: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    """(target, its first row) of a scenario, for the targets that have one."""
    out = []
    for name in names:
        rows = rows_of(report, scenario, name)
        if rows:
            out.append((name, rows[0]))
    return out


def summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    p = report["conditions"]
    for name in report["targets"]:
        row: dict[str, Any] = {"target": name}
        storm = rows_of(report, "storm", name)
        if storm:
            s = storm[0]
            row["storm_all_live_s"] = (
                round(s["first_event_max_ms"] / 1e3, 2)
                if s.get("first_event_clients") == s["connections"]
                else None
            )
            row["storm_live"] = f"{s.get('first_event_clients') or 0:,}/{s['connections']:,}"
        bc = rows_of(report, "broadcast", name)
        if bc:
            base = [
                r
                for r in bc
                if r["connections"] == p["broadcast"]["rate_connections"]
                and r["scenario_rate"] == p["broadcast"]["connection_rate"]
            ]
            if base:
                row["broadcast_p99_ms"] = base[0]["p99_ms"]
            best = max(bc, key=lambda r: r["delivered_per_second"])
            row["broadcast_best_per_s"] = best["delivered_per_second"]
            ok = [r["scenario_rate"] for r in bc if not r.get("saturated")]
            row["highest_unsaturated_rate"] = max(ok) if ok else None
            rss = [r["rss_per_connection_kb"] for r in bc if r.get("rss_per_connection_kb")]
            row["rss_per_connection_kb"] = round(max(rss), 1) if rss else None
        tp = rows_of(report, "topics", name)
        if tp:
            row["topics_delivered"] = f"{tp[0]['delivered'] / max(1, tp[0]['expected']):.0%}"
            row["topics_p99_ms"] = tp[0]["p99_ms"]
        rc = rows_of(report, "reconnect", name)
        if rc:
            row["reconnect_lost"] = rc[0]["lost"]
            row["reconnect_dup"] = rc[0]["duplicates"]
        sl = rows_of(report, "slow", name)
        fast = [r for r in sl if r.get("variant") == "all fast"]
        mixed = [r for r in sl if r.get("variant") != "all fast"]
        if fast:
            row["fast_p99_all_fast_ms"] = fast[0]["p99_ms"]
        if mixed:
            row["fast_p99_with_slow_ms"] = mixed[0]["p99_ms"]
        nt = rows_of(report, "notifications", name)
        kept = [r for r in nt if not r["behind"]] or nt
        if kept:
            top = max(kept, key=lambda r: r["delivered_per_s"])
            row["notifications_best_per_s"] = top["delivered_per_s"]
            row["notifications_best_way"] = top["mode"]
        out.append(row)
    return out


def summary_table(rows: list[dict[str, Any]], p: dict[str, Any]) -> list[str]:
    b = p["broadcast"]
    head = [
        "target",
        f"storm {p['storm']['connections']:,}: all connected + first event",
        f"broadcast {b['rate_connections']:,} x {b['connection_rate']}/s p99",
        "best delivered/s",
        "highest rate kept up (/s)",
        f"{p['topics']['topics']:,} topics: delivered, p99",
        "reconnect: lost / dup",
        "fast p99: all fast -> 10% slow",
        "RSS/conn KB",
        f"notifications {p.get('notifications', {}).get('subscribers', 0):,} users: "
        "best kept up /s (way)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        storm = "-"
        if "storm_live" in r:
            storm = (
                f"{r['storm_all_live_s']:.2f} s"
                if r.get("storm_all_live_s") is not None
                else f"not all ({r['storm_live']} got an event)"
            )
        cells = [
            r["target"],
            storm,
            fmt(r.get("broadcast_p99_ms"), ".0f", " ms"),
            fmt(r.get("broadcast_best_per_s"), ",.0f"),
            fmt(r.get("highest_unsaturated_rate"), "g"),
            f"{r['topics_delivered']}, {r['topics_p99_ms']:.0f} ms"
            if "topics_p99_ms" in r
            else "-",
            f"{r['reconnect_lost']:,} / {r['reconnect_dup']:,}" if "reconnect_lost" in r else "-",
            f"{fmt(r.get('fast_p99_all_fast_ms'), '.0f')} -> "
            f"{fmt(r.get('fast_p99_with_slow_ms'), '.0f')} ms",
            fmt(r.get("rss_per_connection_kb")),
            f"{r['notifications_best_per_s']:,.0f} ({r['notifications_best_way']})"
            if "notifications_best_per_s" in r
            else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def storm_table(rows: list[dict[str, Any]]) -> list[str]:
    head = [
        "target",
        "connected",
        "connect errors",
        "all connected s",
        "connect p50 / p99 ms",
        "got first event",
        "first event p50 / p99 ms",
        "all live (last first event) s",
        "then 10/s: p99 ms",
        "RSS/conn KB",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        all_live = (
            fmt(r["first_event_max_ms"] / 1e3, ".2f")
            if r.get("first_event_clients") == r["connections"]
            else "not all"
        )
        cells = [
            r["target"],
            f"{r['connected']:,}/{r['connections']:,}",
            str(r["connect_errors"]),
            fmt(r.get("storm_connect_seconds"), ".2f"),
            f"{fmt(r.get('connect_p50_ms'), '.0f')} / {fmt(r.get('connect_p99_ms'), '.0f')}",
            f"{r.get('first_event_clients') or 0:,}",
            f"{fmt(r.get('first_event_p50_ms'), '.0f')} / {fmt(r.get('first_event_p99_ms'), '.0f')}",
            all_live,
            fmt(r["p99_ms"], ".0f"),
            fmt(r.get("rss_per_connection_kb")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def reconnect_table(rows: list[dict[str, Any]]) -> list[str]:
    head = [
        "target",
        "connected",
        "reconnected",
        "sent Last-Event-ID",
        "reconnect errors",
        "reconnect s",
        "delivered/expected",
        "**lost**",
        "dup",
        "p99 ms",
        "max ms",
        "connected at end",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["target"],
            f"{r['connected']:,}/{r['connections']:,}",
            f"{r.get('reconnected') or 0:,}",
            f"{r.get('reconnected_with_last_event_id') or 0:,}",
            str(r.get("reconnect_errors")),
            fmt(r.get("reconnect_seconds"), ".2f"),
            f"{r['delivered']:,}/{r['expected']:,}",
            f"**{r['lost']:,}**",
            f"{r['duplicates']:,}",
            fmt(r["p99_ms"], ".0f"),
            fmt(r["max_ms"], ".0f"),
            f"{r.get('connected_at_end') or 0:,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def slow_table(rows: list[dict[str, Any]]) -> list[str]:
    head = [
        "target",
        "run",
        "fast p50 ms",
        "**fast p99 ms**",
        "fast max ms",
        "slow clients",
        "slow p50 / p99 ms",
        "delivered/expected",
        "closed by server",
        "server cores",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["target"],
            r.get("variant", ""),
            fmt(r["p50_ms"], ".1f"),
            f"**{fmt(r['p99_ms'], '.1f')}**",
            fmt(r["max_ms"], ".0f"),
            f"{r.get('slow_connections') or 0:,}",
            f"{fmt(r.get('slow_p50_ms'), '.0f')} / {fmt(r.get('slow_p99_ms'), '.0f')}"
            if r.get("slow_connections")
            else "-",
            f"{r['delivered']:,}/{r['expected']:,}",
            str(r["closed_by_server"]),
            fmt(r.get("server_cores_used"), ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def broadcast_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = table(rows, "requested rate")
    lines[0] += " saturated | closed by server |"
    lines[1] += "---|---|"
    for i, r in enumerate(rows):
        lines[i + 2] += (" **yes** |" if r.get("saturated") else " no |") + (
            f" {r['closed_by_server']:,} |"
        )
    return lines


def topics_table(rows: list[dict[str, Any]]) -> list[str]:
    # loadgen's per-publisher sequence spans all topics, so its gap count is not a
    # loss count with one topic per client: delivered/expected is the loss measure.
    shown = [{**r, "lost": "n/a", "duplicates": "n/a", "scenario_rate": r["topics"]} for r in rows]
    return table(shown, "topics")


def notifications_tables(rows: list[dict[str, Any]]) -> list[str]:
    targets = notifications.targets_of(rows)
    return [
        "Best sustained rate per way in:",
        "",
        *notifications.best_table(rows, targets),
        "",
        "Every step:",
        "",
        *notifications.steps_table(rows),
    ]


def write_markdown(report: dict[str, Any], path: Path, quick: bool) -> None:
    p = report["conditions"]
    t = p["timing"]
    lines = [
        "# sse_fast vs its peers: one-command comparison",
        "",
        "Generated by `python -m benches.compare"
        + (" --quick" if quick else "")
        + (f" --scenarios {','.join(report['scenario_names'])}" if report["partial"] else "")
        + "` with `sse_fast/loadgen/` (Python/uvloop clients using sse_fast's parser, "
        "HTTP/1.1, on the same 2-core machine as the servers; one server at a time, "
        "a fresh server process for every run). How to read it: `benches/COMPARE.md`.",
        "",
        "## Summary",
        "",
    ]
    lines += summary_table(report["summary"], p)
    lines += [
        "",
        "Storm: seconds from the start of the connection storm until the last client "
        "had its first event. Broadcast p99: delivery latency (publish to client "
        "parse). Highest rate kept up: the highest requested publish rate at which "
        f"publishes and deliveries stayed above {SATURATED:.0%} of the target. "
        "Reconnect lost: events never delivered after every client dropped and "
        "reconnected with Last-Event-ID. RSS/conn: server memory growth per idle "
        "connection (largest broadcast run).",
        "",
        "## Conditions",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in report["machine"].items()]
    for name, versions in report["versions"].items():
        lines.append(f"- {name}: {versions}")
        for note in report["notes"].get(name, []):
            lines.append(f"  - {note}")
        if name in report["commands"]:
            lines.append(f"  - command: `{report['commands'][name]}`")
    if report["skipped"]:
        for name, reason in report["skipped"].items():
            lines.append(f"- **skipped {name}**: {reason}")
    else:
        lines.append("- skipped: none (every peer ran)")
    for failure in report["failures"]:
        lines.append(
            f"- **failed** {failure['scenario']} on {failure['target']}: {failure['error']}"
        )
    lines += [
        f"- every run: warm-up {t['warmup']:g} s of publishing, measured window "
        f"{t['duration']:g} s (unless stated; publishers stop at its end: strict_window), "
        f"{t['drain']:g} s for deliveries in flight; "
        f"heartbeat {HEARTBEAT:g} s; payload a 64-byte JSON string (publish wall time, "
        "publisher, sequence) unless stated; one client process; "
        f"{p['cooldown_s']:g} s pause between runs",
        "- latency = client parse time - publish wall time (same clock); server cores = "
        "server CPU-seconds / measured window; RSS/conn = (server RSS with the clients "
        "idle - before they connected) / connections",
        f"- scenario parameters: `{json.dumps({k: v for k, v in p.items() if k != 'timing'})}`",
        "",
    ]
    sections = {
        "storm": (
            f"Connection storm: {p['storm']['connections']:,} clients connect at once",
            "All connects are in flight together (backlog 4096). A probe event is "
            f"published every {p['storm']['probe_interval'] * 1e3:.0f} ms during the storm "
            "and once more right after all clients are connected; times are per client "
            "from the moment its process began connecting. nchan's "
            "`first_message newest` hands a new subscriber the last probe at once.",
            storm_table,
        ),
        "broadcast": (
            "Broadcast: one topic, rising connections, then rising publish rates",
            f"{p['broadcast']['publishers']} concurrent publishers share the rate; the "
            "ramp stops at the first saturated step. At a saturated step the single "
            "Python client process (sharing the two cores with the server) may itself "
            "be what falls behind: delivered/expected below 100 % with nothing closed "
            "by the server means events were still unread when the run stopped.",
            broadcast_table,
        ),
        "topics": (
            f"Many topics: {p['topics']['connections']:,} clients, each on its own topic",
            f"{p['topics']['rate']} publishes/s in all, topic by topic round-robin over "
            f"{p['topics']['topics']:,} topics ({p['topics']['publishers']} publishers); "
            "each client expects rate/topics events/s. Lost/dup are not counted here "
            "(the sequence spans topics): delivered/expected is the measure.",
            topics_table,
        ),
        "reconnect": (
            "Reconnect storm with Last-Event-ID",
            f"{p['reconnect']['connections']:,} clients, {p['reconnect']['rate']} publishes/s "
            f"continue throughout; {p['reconnect']['reconnect_after']:g} s into the "
            f"{p['reconnect']['duration']:g} s window every client drops its connection "
            "(RST) and reconnects at once, sending the last event id it saw as "
            "`Last-Event-ID` (only when the server gave ids). Lost = sequence gaps seen "
            "by the clients afterwards. Peers without ids or resume lose what was "
            "published while their clients were away.",
            reconnect_table,
        ),
        "slow": (
            "Mixed slow and fast consumers",
            f"{p['slow']['connections']:,} clients, {p['slow']['rate']} publishes/s of "
            f"{p['slow']['payload_bytes']}-byte events; in the second run every "
            f"{p['slow']['slow_every']}th client is slow ({p['slow']['slow_rcvbuf']}-byte "
            f"receive buffer, reads {p['slow']['slow_read']:g} s then pauses "
            f"{p['slow']['slow_pause']:g} s). The fast clients' latencies are reported "
            "apart: compare their p99 with the all-fast run.",
            slow_table,
        ),
        "notifications": (
            "Per-user notifications: every subscriber on a topic of its own",
            "Run by `benches.notifications` (also standalone: "
            "`python -m benches.notifications`), in one fresh server per target; "
            "its own conditions, not the timing above:\n\n"
            + "\n".join(notifications.conditions(p["notifications"]))
            if "notifications" in p
            else "",
            notifications_tables,
        ),
    }
    for name in report["scenario_names"]:
        title, text, render = sections[name]
        lines += [f"## {title}", "", text, ""]
        rows = report["scenarios"].get(name, [])
        lines += render(rows) if rows else ["(no results)"]
        lines.append("")
    lines += [
        "## Plots",
        "",
        "![scaling](compare.png)",
        "",
        "![scenarios](compare_scenarios.png)",
        "",
    ]
    if report["scenarios"].get("notifications"):
        lines += [f"![notifications]({path.stem}_notifications.png)", ""]
    path.write_text("\n".join(lines))


def plot(report: dict[str, Any], path: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    p = report["conditions"]
    names = report["targets"]
    colors = {n: f"C{i}" for i, n in enumerate(TARGET_ORDER)}
    written = []

    # scaling: delivered/s and p99 against connections and against publish rate; RSS
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    rate0 = p["broadcast"]["connection_rate"]
    for name in names:
        # against connections: broadcast at the base rate + the storm's measured window
        pts = [
            r
            for r in rows_of(report, "broadcast", name)
            if r["scenario_rate"] == rate0 and r["publish_rate"] == rate0
        ]
        pts += [r for r in rows_of(report, "storm", name) if r["publish_rate"] == rate0]
        pts.sort(key=lambda r: r["connections"])
        if pts:
            x = [r["connections"] for r in pts]
            axes[0][0].plot(
                x, [r["delivered_per_second"] for r in pts], "o-", label=name, color=colors[name]
            )
            axes[1][0].plot(x, [r["p99_ms"] for r in pts], "o-", label=name, color=colors[name])
        pts = [
            r
            for r in rows_of(report, "broadcast", name)
            if r["connections"] == p["broadcast"]["rate_connections"]
        ]
        pts.sort(key=lambda r: r["scenario_rate"])
        if pts:
            x = [r["scenario_rate"] for r in pts]
            axes[0][1].plot(
                x, [r["delivered_per_second"] for r in pts], "o-", label=name, color=colors[name]
            )
            axes[1][1].plot(x, [r["p99_ms"] for r in pts], "o-", label=name, color=colors[name])
            sat = [r for r in pts if r.get("saturated")]
            axes[0][1].plot(
                [r["scenario_rate"] for r in sat],
                [r["delivered_per_second"] for r in sat],
                "x",
                color="black",
                markersize=10,
            )
    axes[0][0].set(
        title=f"Delivered events/s vs connections ({rate0} publishes/s)",
        xlabel="connections (log)",
        ylabel="events/s",
        xscale="log",
    )
    axes[1][0].set(
        title=f"p99 latency vs connections ({rate0} publishes/s)",
        xlabel="connections (log)",
        ylabel="ms (log)",
        xscale="log",
        yscale="log",
    )
    n = p["broadcast"]["rate_connections"]
    axes[0][1].set(
        title=f"Delivered events/s vs publish rate ({n:,} conns; x = saturated)",
        xlabel="requested publishes/s (log)",
        ylabel="events/s",
        xscale="log",
    )
    axes[1][1].set(
        title=f"p99 latency vs publish rate ({n:,} conns)",
        xlabel="requested publishes/s (log)",
        ylabel="ms (log)",
        xscale="log",
        yscale="log",
    )
    # RSS per connection: the largest broadcast / storm run of each target
    rss_names, rss_values, rss_labels = [], [], []
    for name in names:
        rows = [
            r
            for r in rows_of(report, "broadcast", name) + rows_of(report, "storm", name)
            if r.get("rss_per_connection_kb")
        ]
        if rows:
            r = max(rows, key=lambda r: r["connected"])
            rss_names.append(name)
            rss_values.append(r["rss_per_connection_kb"])
            rss_labels.append(f"{name}\n{r['connected']:,} conns")
    ax = axes[0][2]
    bars = ax.bar(range(len(rss_names)), rss_values, color=[colors[n] for n in rss_names])
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(rss_names)), rss_labels, rotation=30, ha="right", fontsize=8)
    ax.set(title="Server RSS per idle connection (largest run)", ylabel="KB")
    # many topics: delivered/s and p99
    ax = axes[1][2]
    tp = firsts(report, "topics", names)
    if tp:
        bars = ax.bar(
            range(len(tp)), [r["p99_ms"] for _, r in tp], color=[colors[n] for n, _ in tp]
        )
        ax.bar_label(
            bars,
            labels=[f"{r['delivered'] / max(1, r['expected']):.0%} delivered" for _, r in tp],
            fontsize=7,
        )
        ax.set_xticks(range(len(tp)), [n for n, _ in tp], rotation=30, ha="right", fontsize=8)
    ax.set(
        title=f"{p['topics']['topics']:,} topics, one per client, "
        f"{p['topics']['rate']}/s: p99 latency",
        ylabel="ms",
    )
    plain = ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    for ax in (axes[0][0], axes[1][0], axes[0][1], axes[1][1]):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(ticker.NullFormatter())
    fig.suptitle(f"sse_fast vs peers, {report['machine']['cpu']}, {report['machine']['date']}")
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    written.append(out)

    # scenarios: storm, reconnect losses, slow consumers
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    st = firsts(report, "storm", names)
    width = 0.27
    for k, (key, label) in enumerate(
        [
            ("connect_p99_ms", "connect p99"),
            ("first_event_p99_ms", "first event p99"),
            ("first_event_max_ms", "last first event (all live)"),
        ]
    ):
        ax.bar(
            [i + (k - 1) * width for i in range(len(st))],
            [(r.get(key) or 0) / 1e3 for _, r in st],
            width,
            label=label,
        )
    ax.set_xticks(range(len(st)), [n for n, _ in st], rotation=30, ha="right", fontsize=8)
    ax.set(
        title=f"Connection storm: {p['storm']['connections']:,} clients at once",
        ylabel="seconds from storm start",
    )
    ax.legend(fontsize=8)
    ax = axes[1]
    rc = firsts(report, "reconnect", names)
    bars = ax.bar(
        range(len(rc)),
        [r["lost"] / max(1, r["expected"]) * 100 for _, r in rc],
        color=[colors[n] for n, _ in rc],
    )
    ax.bar_label(bars, labels=[f"{r['lost']:,} lost" for _, r in rc], fontsize=8)
    ax.set_xticks(range(len(rc)), [n for n, _ in rc], rotation=30, ha="right", fontsize=8)
    ax.set(
        title=f"Reconnect storm with Last-Event-ID ({p['reconnect']['connections']:,} clients)",
        ylabel="events lost, % of expected",
    )
    ax = axes[2]
    sl = [(name, rows_of(report, "slow", name)) for name in names]
    sl = [(name, rows) for name, rows in sl if rows]
    for k, variant in enumerate(["all fast", f"{100 // p['slow']['slow_every']}% slow"]):
        ax.bar(
            [i + (k - 0.5) * 0.4 for i in range(len(sl))],
            [next((r["p99_ms"] for r in rows if r.get("variant") == variant), 0) for _, rows in sl],
            0.4,
            label=f"fast clients' p99, {variant}",
        )
    ax.set_xticks(range(len(sl)), [n for n, _ in sl], rotation=30, ha="right", fontsize=8)
    ax.set(
        title=f"Slow consumers ({p['slow']['connections']:,} clients, {p['slow']['rate']}/s)",
        ylabel="ms (log)",
        yscale="log",
    )
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out = path.parent / (path.name + "_scenarios.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    written.append(out)

    rows = report["scenarios"].get("notifications")
    if rows:
        out = path.parent / (path.name + "_notifications.png")
        notifications.plot({"targets": notifications.targets_of(rows), "rows": rows}, out)
        written.append(out)
    return written


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, fast smoke run")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated: {','.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--targets", default=",".join(TARGET_ORDER), help="comma-separated target names"
    )
    parser.add_argument("--no-install", action="store_true", help="do not install missing peers")
    parser.add_argument("--out", default=str(RESULTS / "compare"), help="path without suffix")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in RUNNERS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {SCENARIOS}")
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    # SIGTERM -> SystemExit, so that finally blocks and atexit stop the servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    info = machine()
    log(f"machine: {info}")
    install_errors: dict[str, str] = {}
    if not args.no_install:
        log("installing missing peers (benches.peers.ensure_peers_installed) ...")
        install_errors = peers.ensure_peers_installed()
    available, skipped = peers.available_targets(heartbeat=HEARTBEAT, workers=1)
    for name, err in install_errors.items():
        skipped.setdefault(name, f"install failed: {err}")
    targets = {t.name: t for t in available}
    order = [n for n in TARGET_ORDER if n in wanted] + [n for n in wanted if n not in TARGET_ORDER]
    for name in order:
        if name not in targets and name not in skipped:
            skipped[name] = "unknown target name"
    skipped = {k: v for k, v in skipped.items() if k in wanted}
    for name, reason in skipped.items():
        log(f"SKIPPED {name}: {reason}")
    names = [n for n in order if n in targets]
    if not names:
        log("no target can run")
        return 2
    log(f"targets: {', '.join(names)}; scenarios: {', '.join(chosen)}")

    p = plan(args.quick)
    runner = Runner(count_runs(chosen, p, len(names)), p["cooldown_s"])
    report: dict[str, Any] = {
        "machine": info,
        "quick": args.quick,
        "partial": chosen != SCENARIOS,
        "scenario_names": chosen,
        "targets": names,
        "skipped": skipped,
        "failures": runner.failures,
        "versions": {n: targets[n].versions() for n in names},
        "notes": {n: targets[n].notes() for n in names},
        "commands": runner.commands,
        "conditions": {**p, "heartbeat_s": HEARTBEAT, "saturated_below": SATURATED},
        "scenarios": {},
    }
    log(f"{runner.total} runs planned")
    try:
        for scenario in chosen:
            log(f"== scenario {scenario}")
            report["scenarios"][scenario] = []
            for name in names:
                report["scenarios"][scenario] += RUNNERS[scenario](runner, targets[name], p)
    except KeyboardInterrupt:
        log("interrupted: writing what ran so far")
        report["interrupted"] = True
    report["summary"] = summary(report)
    report["total_minutes"] = round((time.monotonic() - runner.started) / 60, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    write_markdown(report, out.with_suffix(".md"), args.quick)
    try:
        for written in plot(report, out):
            log(f"wrote {written}")
    except Exception as exc:  # the tables are the results; a plot failure is reported
        log(f"plot failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    print()
    print("\n".join(summary_table(report["summary"], p)))
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    for failure in runner.failures:
        print(f"FAILED {failure['scenario']} on {failure['target']}: {failure['error']}")
    log(f"done in {report['total_minutes']} min")
    return 1 if runner.failures else 0


if __name__ == "__main__":
    sys.exit(main())
