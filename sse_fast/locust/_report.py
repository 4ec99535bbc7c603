"""The run's figures at the end, the thresholds, and the exit code.

Listeners on locust's events, registered when ``sse_fast.locust`` is imported; they
act only when a user class of this package (or a subclass) runs:

* ``init``: the options are checked (a bad one ends the run before it starts, exit
  2), ``PublisherUser.fixed_count`` is set from ``--publishers``, and gevent's clock
  is brought up to date (else ``--run-time`` ends the run early by the seconds locust
  took to start);
* ``test_start`` (master or single process): the rows that must show even at 0
  (``event``, ``first event``, ``lost`` ...) are created;
* ``quitting`` (after the master has the workers' last figures): the failures are
  sorted into lost, duplicates, publish failures, refusals and stream errors, each
  compared with its threshold, a summary is logged (published, delivered, lost, not
  delivered nor lost, may have been published: see ``summary``), and
  ``environment.process_exit_code`` is set: ``--exit-code-on-error`` (1) when a
  threshold is exceeded, when fewer than ``--sse-min-events`` events counted, or
  when a row outside these kinds failed (locust's own rule for those), else 0;
* ``quit``: ``PREFIX_stats.csv`` and ``PREFIX_failures.csv`` are rewritten with
  the final figures (locust refreshes them every 2 s, not at exit).
"""

from __future__ import annotations

import csv
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import gevent
from locust import events
from locust.runners import WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from ..protocol import DISCONNECT, MISSED
from . import _options
from ._publisher import PUBLISHED_THROUGH, UNANSWERED, PublisherUser
from ._subscriber import BEFORE_RUN, LAST_SEEN, SSE, UNTIMED, SSEUser

log = logging.getLogger("sse_fast.locust")

# rows that exist even at zero, so a clean run shows "lost 0" in the CSV/HTML
ALWAYS_SHOWN = ("event", "first event", "lost", "duplicate", "reconnect", MISSED)


@dataclass
class Kind:
    """One kind of failure: how many, out of how many attempts, and its rows."""

    option: str
    found: int = 0
    attempts: int = 0
    detail: str = ""  # what ``found`` is made of, when more than one thing


_environment: Any = None


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    _options.add_arguments(parser)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    global _environment
    _environment = environment
    # before any user: an event stamped earlier was sent before this run (SSEUser)
    environment.sse_run_began = time.time()
    # gevent's loop caches "now" and has not run since locust's imports began: a timer
    # set from it (locust's --run-time) would fire early by the seconds those took
    gevent.get_hub().loop.update_now()
    try:
        _options.check(environment)
        # a worker has its options (and --host) from the master later, when users start
        on_worker = isinstance(environment.runner, WorkerRunner)
        subscribers, publishers = ([], []) if on_worker else _ours(environment)
        for cls in subscribers:  # a path needs a host; a bad class attribute shows now
            _options.subscription(cls, environment, cls.host or environment.host)
        for publisher in publishers:
            host = publisher.host or environment.host
            if (
                host
                or publisher.publish is not None
                or _options.option(environment, "sse_publish_url", None)
            ):
                _options.publish(publisher, environment, host)
    except ValueError as exc:  # TemplateError too
        print(f"sse_fast.locust: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # the master (or the single process) dispatches users, so fixed_count is read here
    PublisherUser.fixed_count = max(0, int(_options.option(environment, "publishers", 1)))


def _ours(environment: Any) -> tuple[list[type[SSEUser]], list[type[PublisherUser]]]:
    classes = list(environment.user_classes or ())
    return (
        [c for c in classes if issubclass(c, SSEUser)],
        [c for c in classes if issubclass(c, PublisherUser)],
    )


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return  # workers only send what happened; the master keeps the table
    if _ours(environment)[0]:
        for name in ALWAYS_SHOWN:
            environment.stats.get(name, SSE)  # creates the row with 0 requests


def tally(environment: Any) -> tuple[dict[str, Kind], int, set[tuple[str, str]]]:
    """The kinds of failure by threshold option, the counted events, and every row a
    kind covers."""
    entries = environment.stats.entries
    subscribers, publishers = _ours(environment)

    def failures(*keys: tuple[str, str]) -> int:
        return sum(getattr(entries.get(key), "num_failures", 0) for key in keys)

    def requests(*keys: tuple[str, str]) -> int:
        return sum(getattr(entries.get(key), "num_requests", 0) for key in keys)

    opens = {(_options.subscribe_row(c, environment), "GET") for c in subscribers}
    publishes = {(n, t) for t, n in (_options.publish_row(c, environment) for c in publishers)}
    lost_rows = {("lost", SSE), (MISSED, SSE)}
    stream_rows = {("stream end", SSE), (DISCONNECT, SSE)}
    events_counted = requests(("event", SSE), (UNTIMED, SSE))
    kinds = {
        "--sse-max-lost": Kind(
            "--sse-max-lost",
            failures(*lost_rows),
            events_counted + requests(("lost", SSE)),
            f" ({failures(('lost', SSE))} lost events, {failures((MISSED, SSE))} refused resumes)",
        ),
        "--sse-max-duplicates": Kind(
            "--sse-max-duplicates", failures(("duplicate", SSE)), events_counted
        ),
        "--sse-max-publish-failures": Kind(
            "--sse-max-publish-failures", failures(*publishes), requests(*publishes)
        ),
        "--sse-max-refusals": Kind("--sse-max-refusals", failures(*opens), requests(*opens)),
        "--sse-max-stream-errors": Kind(
            "--sse-max-stream-errors", failures(*stream_rows), requests(("stream end", SSE))
        ),
    }
    covered = lost_rows | stream_rows | opens | publishes | {("duplicate", SSE)}
    return kinds, events_counted, covered


def verdict(environment: Any) -> list[str]:
    """What fails this run (empty: it passes), each saying which option to change."""
    subscribers, _ = _ours(environment)
    kinds, counted, covered = tally(environment)
    limits = _options.thresholds(environment)
    problems = []
    for name, kind in kinds.items():
        if limits[name].exceeded(kind.found, kind.attempts):
            problems.append(
                f"{kind.found} of {kind.attempts}{kind.detail} over {name} {limits[name]} "
                f"(raise {name} to accept them)"
            )
    wanted = int(_options.option(environment, "sse_min_events", 1))
    if subscribers and counted < wanted:
        problems.append(
            f"{counted} events counted, fewer than --sse-min-events {wanted}: check that the "
            "server sent any, --sse-url, --sse-event and the --sse-*-field paths"
        )
    for (name, kind), entry in environment.stats.entries.items():
        if entry.num_failures and (name, kind) not in covered:
            problems.append(f"{entry.num_failures} failures in {kind} {name} (no threshold)")
    return problems


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    """Log the summary and set the exit code from the thresholds (see the module doc)."""
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return
    subscribers, publishers = _ours(environment)
    if not subscribers and not publishers:
        return  # none of our users ran: locust's own rule
    log.info("SSE summary: %s", summary(environment))
    problems = verdict(environment)
    for problem in problems:
        log.warning("SSE threshold: %s", problem)
    if problems or getattr(runner, "exceptions", None):
        environment.process_exit_code = int(_options.option(environment, "exit_code_on_error", 1))
    else:
        environment.process_exit_code = 0


def summary(environment: Any) -> str:
    """One line of the run's figures: published (confirmed), delivered, lost, not
    delivered nor lost, may have been published (sent, the answer lost), and the events
    sent before this run (counted apart) when there were any."""
    entries = environment.stats.entries
    kinds, counted, _ = tally(environment)
    parts = [f"{counted} events"]
    event = entries.get(("event", SSE))
    if event is not None and event.num_requests:
        p50 = event.get_response_time_percentile(0.5)
        p99 = event.get_response_time_percentile(0.99)
        parts[0] += f" (latency p50 {p50} ms, p99 {p99} ms)"
    first = entries.get(("first event", SSE))
    if first is not None and first.num_requests:
        parts.append(f"first event p50 {first.get_response_time_percentile(0.5)} ms")

    def count(name: str) -> int:
        return getattr(entries.get((name, SSE)), "num_requests", 0)

    confirmed = sum(
        entry.num_requests - entry.num_failures
        for key, entry in entries.items()
        if key in tally_publishes(environment)
    )
    parts[0] = f"published {confirmed}, delivered {parts[0]}"
    parts.append(f"lost {count('lost')} in {count('gap')} gaps")
    parts.append(f"not delivered, not lost {not_delivered_not_lost(entries)}")
    parts.append(f"may have been published {count(UNANSWERED)}")
    if count(BEFORE_RUN):
        parts.append(f"sent before this run {count(BEFORE_RUN)} (counted apart)")
    parts.append(f"duplicate {count('duplicate')}")
    parts.append(f"reconnect {count('reconnect')}")
    parts.append(f"{MISSED} {count(MISSED)}")
    for label, option in (
        ("refused", "--sse-max-refusals"),
        ("publish failures", "--sse-max-publish-failures"),
        ("stream errors", "--sse-max-stream-errors"),
    ):
        parts.append(f"{label} {kinds[option].found}/{kinds[option].attempts}")
    return ", ".join(parts)


def tally_publishes(environment: Any) -> set[tuple[str, str]]:
    """The rows of the publishes of this run's publisher classes."""
    _, publishers = _ours(environment)
    return {(n, t) for t, n in (_options.publish_row(c, environment) for c in publishers)}


def not_delivered_not_lost(entries: Any) -> int:
    """Events published (confirmed) after the last one each subscriber saw of each
    publisher: neither delivered nor shown missing by a later event (streams open but
    silent, or the server gone). From the ``published through`` rows (the publishers'
    last numbers) and the ``last seen`` rows (each subscriber's, per publisher it
    followed), on the rule of one topic: every subscriber follows every publisher."""
    through = entries.get((PUBLISHED_THROUGH, SSE))
    seen = entries.get((LAST_SEEN, SSE))
    if through is None or seen is None or not through.num_requests:
        return 0
    per_publisher = seen.num_requests / through.num_requests
    owed: int = round(per_publisher * int(through.total_content_length))
    return max(0, owed - int(seen.total_content_length))


@events.quit.add_listener
def _on_quit(**_: Any) -> None:
    """At exit (after the workers' last figures): rewrite the CSV files.

    Locust refreshes ``PREFIX_stats.csv`` / ``PREFIX_failures.csv`` every 2 s and
    not at exit, so a lost event in the last seconds of a run would be missing
    from them; they are rewritten here with the final figures (the HTML report
    is written at exit anyway).
    """
    env = _environment
    if env is None or env.runner is None or isinstance(env.runner, WorkerRunner):
        return
    prefix = getattr(env.parsed_options, "csv_prefix", None)
    if prefix:
        writer = StatsCSV(env, PERCENTILES_TO_REPORT)
        for suffix, write in (
            ("_stats.csv", writer.requests_csv),
            ("_failures.csv", writer.failures_csv),
        ):
            with open(prefix + suffix, "w", newline="") as f:
                write(csv.writer(f))
