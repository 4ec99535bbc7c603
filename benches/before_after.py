"""Before and after in one run: the fan-out and per-user notifications scenarios
against two checkouts of sse_fast, interleaved round by round.

    python -m benches.before_after --before ../wt-before             # 2 rounds, both
    python -m benches.before_after --before ../wt-before --quick     # smoke run (~4 min)
    python -m benches.before_after --before DIR --after DIR2 --rounds 3 --until 15:55

A change that must leave every behaviour as it was (issue 41: "the benchmarks in the
same run as before ... within noise") is measured with the scenarios of the results it
is compared with, against both builds on one machine state: each round runs each
scenario with ``--before`` (a git worktree of the old commit, its extensions built in
place), then with ``--after`` (default: this checkout), before, after, before, after.
Every run starts a fresh server from its own tree (``peers.checkout_target``), and
``peers.check_source`` refuses one whose native core was loaded from another tree.

* ``fanout``: ``server_bench``'s ``steady`` scenario (10,000 connections on one topic,
  10 publishes/s, 15 s measured, nothing pinned), as in ``results/server.md``;
* ``notifications``: ``notifications``' ladders (10,000 subscribers, each on a topic of
  its own; single requests with wrk, batches of 100, ``POST /publish/stream``; the
  server on core 1, the load on core 0), as in ``results/notifications_ab.md``.

The report (``--out``: ``.md`` and ``.json``, rewritten after every run, so that a run
cut short keeps what it measured) gives each round's figures of both trees and after /
before within the round, then the noise: a figure's *spread* over one tree's rounds,
(max - min) / mean. A figure is *within noise* when after / before of the two means
differs from 1 by no more than the larger of the two trees' spreads. ``--until HH:MM``
(UTC) starts a round only if it can end by then (as long as the last one took).
Loopback only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benches import notifications, peers, server_bench, system

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("fanout", "notifications")
TREES = ("before", "after")

#: (scenario, figure's label, its value read from one run's record: None when it has none)
Figure = tuple[str, str, Callable[[dict[str, Any]], float | None]]


def log(message: str) -> None:
    """A line of progress, with the time (UTC)."""
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- running


def tree_of(checkout: str | Path) -> dict[str, str]:
    """A checkout's path, commit and subject, as the report names it."""
    source = Path(checkout).resolve()
    shown = subprocess.run(
        ["git", "-C", str(source), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    commit, _, subject = shown.partition(" ")
    changed = subprocess.run(
        ["git", "-C", str(source), "status", "--porcelain", "--", "sse_fast", "src_ext"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return {
        "path": str(source),
        "commit": commit,
        "subject": subject,
        "uncommitted": ", ".join(line[3:] for line in changed if line.strip()) or "none",
    }


def run_fanout(target: peers.SseFastTarget, quick: bool) -> dict[str, Any]:
    """``server_bench``'s steady fan-out on a fresh server: the load generator's Result."""
    result = server_bench.run_target(target, **server_bench.steady_load(quick))
    return {"result": asdict(result)}


def run_notifications(target: peers.SseFastTarget, quick: bool, modes: list[str]) -> dict[str, Any]:
    """``notifications``' ladders on a fresh server: one row per step."""
    p = notifications.params(quick)
    p["modes"] = modes
    return {"rows": notifications.run_target(notifications.prepared(target, p), p, log)}


def run_one(
    scenario: str, tree: str, index: int, target: peers.SseFastTarget, args: argparse.Namespace
) -> dict[str, Any]:
    """One scenario on one tree: its record (figures, or the error that stopped it)."""
    record: dict[str, Any] = {
        "scenario": scenario,
        "tree": tree,
        "round": index,
        "target": target.name,
        "started": time.strftime("%H:%M:%S", time.gmtime()),
        "load_average": system.loadavg(),
    }
    log(f"round {index}, {scenario}, {tree} ({target.name})")
    began = time.monotonic()
    try:
        if scenario == "fanout":
            record.update(run_fanout(target, args.quick))
        else:
            record.update(run_notifications(target, args.quick, args.modes.split(",")))
    except Exception as exc:  # one failed run must not lose the others' figures
        log(f"  {target.name} failed: {exc!r}")
        record["error"] = repr(exc)
    record["seconds"] = round(time.monotonic() - began, 1)
    return record


def fits(until: datetime.datetime | None, last_round: float) -> bool:
    """Whether a round as long as the last one ends by ``until`` (None: no limit)."""
    if until is None:
        return True
    return datetime.datetime.now(datetime.UTC).timestamp() + last_round <= (until.timestamp())


def run_rounds(
    targets: dict[str, peers.SseFastTarget],
    args: argparse.Namespace,
    report: dict[str, Any],
    save: Callable[[], None],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Round after round, every scenario before then after; the report saved after each
    run. Stops early (between rounds) when the next round, as long as the last one by
    ``clock``, would end after ``--until``."""
    until = parse_until(args.until) if args.until else None
    last_round = 0.0
    for index in range(1, args.rounds + 1):
        if not fits(until, last_round):
            log(f"round {index} would end after {args.until} UTC: stopping")
            report["stopped_early"] = f"after round {index - 1} (--until {args.until})"
            break
        began = clock()
        for scenario in args.scenarios.split(","):
            for tree in TREES:
                report["runs"].append(run_one(scenario, tree, index, targets[tree], args))
                save()
        last_round = clock() - began


def parse_until(text: str) -> datetime.datetime:
    """``HH:MM`` (UTC) as the next such moment from now."""
    hours, minutes = (int(part) for part in text.split(":"))
    now = datetime.datetime.now(datetime.UTC)
    moment = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    return moment if moment > now else moment + datetime.timedelta(days=1)


# ---------------------------------------------------------------- figures


def _result_field(key: str, run: dict[str, Any]) -> float | None:
    value = (run.get("result") or {}).get(key)
    return None if value is None else float(value)


def _most(mode: str, run: dict[str, Any]) -> float | None:
    rows = [r for r in run.get("rows", []) if r["mode"] == mode]
    return max((float(r["delivered_per_s"]) for r in rows), default=None)


def _per_event(mode: str, rate: int | None, run: dict[str, Any]) -> float | None:
    """The server's CPU per event (event loop + I/O threads) in ``mode``'s step at
    ``rate`` (None: wrk's one step)."""
    rows = [r for r in run.get("rows", []) if r["mode"] == mode]
    row = next((r for r in rows if rate is None or r["offered_per_s"] == rate), None)
    if row is None or "loop_us_per_event" not in row:
        return None
    return float(row["loop_us_per_event"] + row.get("io_us_per_event", 0.0))


def common_rate(runs: list[dict[str, Any]], mode: str) -> int | None:
    """The highest offered rate of ``mode`` that every notifications run kept up with."""
    kept = [
        {r["offered_per_s"] for r in run.get("rows", []) if r["mode"] == mode and not r["behind"]}
        for run in runs
        if run["scenario"] == "notifications" and "error" not in run
    ]
    shared = set.intersection(*kept) if kept else set()
    return max(shared) if shared else None


FANOUT_FIGURES = (
    ("delivered_per_server_core_second", "delivered per server core-s"),
    ("delivered_per_second", "delivered /s"),
    ("server_cores_used", "server cores"),
    ("p50_ms", "delivery p50 ms"),
    ("p99_ms", "delivery p99 ms"),
    ("rss_per_connection_kb", "RSS per connection KB"),
)


def figures(runs: list[dict[str, Any]], modes: list[str]) -> list[Figure]:
    """What is compared: the fan-out's Result fields (``FANOUT_FIGURES``), and per way
    in of the notifications the most delivered per second in any step and the server's
    CPU per event (event loop + I/O threads) at the highest rate every run kept up with
    (single: wrk's one step)."""
    out: list[Figure] = [
        ("fanout", label, functools.partial(_result_field, key)) for key, label in FANOUT_FIGURES
    ]
    for mode in modes:
        label = f"{mode}: most delivered /s in any step"
        out.append(("notifications", label, functools.partial(_most, mode)))
        rate = None if mode == "single" else common_rate(runs, mode)
        if mode == "single" or rate is not None:
            at = "wrk's step" if rate is None else f"{rate:,}/s"
            label = f"{mode}: server us per event (loop + I/O) at {at}"
            out.append(("notifications", label, functools.partial(_per_event, mode, rate)))
    return out


def spread(values: list[float]) -> float | None:
    """(max - min) / mean of one tree's rounds; None under two values."""
    if len(values) < 2 or not statistics.fmean(values):
        return None
    return (max(values) - min(values)) / statistics.fmean(values)


def compare(before: list[float], after: list[float]) -> dict[str, Any]:
    """Means, spreads, after / before of the means and whether that is within noise
    (differs from 1 by no more than the larger spread)."""
    if not before or not after or not statistics.fmean(before):
        return {"ratio": None, "noise": None, "within": None}
    ratio = statistics.fmean(after) / statistics.fmean(before)
    spreads = [s for s in (spread(before), spread(after)) if s is not None]
    noise = max(spreads) if spreads else None
    return {
        "before": statistics.fmean(before),
        "after": statistics.fmean(after),
        "before_spread": spread(before),
        "after_spread": spread(after),
        "ratio": ratio,
        "noise": noise,
        "within": None if noise is None else abs(ratio - 1) <= noise + 1e-12,
    }


def values(runs: list[dict[str, Any]], figure: Figure) -> dict[tuple[str, int], float]:
    """A figure's value per (tree, round), for the runs that gave one."""
    scenario, _, read = figure
    out = {}
    for run in runs:
        if run["scenario"] == scenario and "error" not in run:
            value = read(run)
            if value is not None:
                out[(run["tree"], run["round"])] = float(value)
    return out


# ---------------------------------------------------------------- report


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def rounds_table(runs: list[dict[str, Any]], chosen: list[Figure]) -> list[str]:
    """Each figure, round by round: before, after and after / before in that round."""
    lines = ["| figure | round | before | after | after / before |", "|---|---:|---:|---:|---:|"]
    for figure in chosen:
        got = values(runs, figure)
        for index in sorted({r for _, r in got}):
            b, a = got.get(("before", index)), got.get(("after", index))
            ratio = f"{a / b:.3f}" if a is not None and b else "-"
            lines.append(f"| {figure[1]} | {index} | {_number(b)} | {_number(a)} | {ratio} |")
    return lines


def summary_table(runs: list[dict[str, Any]], chosen: list[Figure]) -> list[str]:
    """Each figure over all rounds: the means, each tree's spread, after / before of the
    means and the verdict."""
    lines = [
        "| figure | before, mean | spread | after, mean | spread | after / before "
        "| noise | within noise |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for figure in chosen:
        got = values(runs, figure)
        c = compare(
            [v for (t, _), v in sorted(got.items()) if t == "before"],
            [v for (t, _), v in sorted(got.items()) if t == "after"],
        )
        if c["ratio"] is None:
            lines.append(f"| {figure[1]} | - | - | - | - | - | - | no figures |")
            continue
        verdict = {True: "yes", False: "**no**", None: "one round: unknown"}[c["within"]]
        lines.append(
            f"| {figure[1]} | {_number(c['before'])} | {_share(c['before_spread'])} "
            f"| {_number(c['after'])} | {_share(c['after_spread'])} | {c['ratio']:.3f} "
            f"| {_share(c['noise'])} | {verdict} |"
        )
    return lines


def checks(runs: list[dict[str, Any]]) -> list[str]:
    """Runs that failed, lost or repeated events, or had failed requests."""
    out = []
    for run in runs:
        where = f"round {run['round']}, {run['scenario']}, {run['tree']}"
        if "error" in run:
            out.append(f"- {where}: **failed**: {run['error']}")
        result = run.get("result") or {}
        if result.get("lost") or result.get("duplicates"):
            out.append(f"- {where}: lost {result['lost']}, duplicates {result['duplicates']}")
        for row in run.get("rows", []):
            if row["lost"] or row["duplicates"] or row.get("missing"):
                out.append(
                    f"- {where}, {row['mode']} at {row['offered_per_s']:,}/s: lost "
                    f"{row['lost']}, missing {row.get('missing', 0)}, dup {row['duplicates']}"
                )
    return out or ["- every run: nothing lost, nothing repeated, no run failed"]


def run_order(runs: list[dict[str, Any]]) -> list[str]:
    """The runs in the order they ran: start (UTC), seconds, load average."""
    lines = ["| # | round | scenario | tree | target | started | seconds | load average |"]
    lines.append("|---:|---:|---|---|---|---|---:|---|")
    for number, run in enumerate(runs, 1):
        lines.append(
            f"| {number} | {run['round']} | {run['scenario']} | {run['tree']} | {run['target']} "
            f"| {run['started']} | {run['seconds']:g} | {' '.join(run['load_average'])} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report: conditions, each scenario's rounds and summary, checks, run order."""
    trees, modes = report["trees"], report["modes"]
    chosen = figures(report["runs"], modes)
    lines = [
        "# Before and after, interleaved in one run",
        "",
        f"`python -m benches.before_after {shlex.join(report['argv'])}`"
        f" ({report['machine']['date']}).",
        "",
        "## Conditions",
        "",
    ]
    lines += [
        f"- {tree}: `{t['commit']}` {t['subject']} (`{t['path']}`; uncommitted changes "
        f"under sse_fast/ and src_ext/: {t['uncommitted']})"
        for tree, t in trees.items()
    ]
    lines += [f"- machine: {k}: {v}" for k, v in report["machine"].items()]
    lines += [f"- versions ({tree}): {v}" for tree, v in report["versions"].items()]
    lines += [f"- {note}" for note in report["notes"]]
    if report.get("stopped_early"):
        lines.append(f"- stopped early: {report['stopped_early']}")
    lines += [
        "- order: each round runs each scenario before, then after, every run on a fresh "
        "server; every server checked to have loaded its native core from its own tree",
        "- spread: (max - min) / mean of one tree's rounds; noise: the larger of the two "
        "spreads; *within noise*: after / before of the means differs from 1 by at most "
        "the noise",
        "",
    ]
    scenarios = {
        "fanout": "Fan-out: `server_bench` steady (one topic, 10 publishes/s, not pinned)",
        "notifications": "Per-user notifications (server on core 1, load on core 0)",
    }
    for scenario, title in scenarios.items():
        mine = [f for f in chosen if f[0] == scenario]
        if not any(run["scenario"] == scenario for run in report["runs"]):
            continue
        lines += [f"## {title}", "", "### Summary", "", *summary_table(report["runs"], mine)]
        lines += ["", "### Round by round", "", *rounds_table(report["runs"], mine), ""]
    lines += ["## Checks", "", *checks(report["runs"]), ""]
    lines += ["## The runs, in order", "", *run_order(report["runs"]), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- command


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module doc)."""
    parser = argparse.ArgumentParser(
        prog="python -m benches.before_after", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--before",
        required=True,
        metavar="DIR",
        help="the old commit's checkout (git worktree add DIR REF; its extensions built in "
        "place, e.g. pip wheel --no-deps -w /tmp/w DIR and the .so files unpacked into "
        "DIR/sse_fast/_core/)",
    )
    parser.add_argument("--after", metavar="DIR", default=str(peers.REPO_ROOT))
    parser.add_argument("--rounds", type=int, default=2, help="runs of each tree per scenario")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--modes", default="single,batch,stream", help="notifications' ways in")
    parser.add_argument("--quick", action="store_true", help="the suites' quick sizes")
    parser.add_argument(
        "--until", metavar="HH:MM", help="start no round that would end later (UTC)"
    )
    parser.add_argument("--note", action="append", default=[], help="a line for the conditions")
    parser.add_argument("--out", default=str(RESULTS / "house_before_after"), help="path prefix")
    args = parser.parse_args(argv)
    if set(args.scenarios.split(",")) - set(SCENARIOS):
        parser.error(f"--scenarios: one or more of {', '.join(SCENARIOS)}")
    if set(args.modes.split(",")) - set(notifications.LADDERS):
        parser.error(f"--modes: one or more of {', '.join(notifications.LADDERS)}")
    if args.rounds < 1:
        parser.error("--rounds: at least 1 (2 or more give the noise)")
    if (
        "notifications" in args.scenarios.split(",")
        and "single" in args.modes.split(",")
        and shutil.which("wrk") is None
    ):  # said before any round, not as each run's failure
        parser.error(
            "the notifications' single way in needs wrk (Debian: apt-get install wrk), "
            "or --modes batch,stream"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the rounds, writing the report after every run."""
    args = parse(argv)
    trees = {"before": tree_of(args.before), "after": tree_of(args.after)}
    base = peers.SseFastTarget("sse_fast-1w", peers.HOST, peers.free_ports(peers.HOST, 1)[0])
    targets = {tree: peers.checkout_target(base, t["path"]) for tree, t in trees.items()}
    report: dict[str, Any] = {
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "machine": system.machine(),
        "trees": trees,
        "versions": {tree: target.versions() for tree, target in targets.items()},
        "modes": args.modes.split(","),
        "notes": args.note,
        "runs": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.with_suffix(".json").write_text(json.dumps(report, indent=2))
        out.with_suffix(".md").write_text(markdown(report))

    run_rounds(targets, args, report, save)
    save()
    log(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
