"""What pattern subscriptions cost the hub: publishes with 0 to 100,000 pattern streams
beside exact ones, a new topic's first publish, and a pattern that matches 1,000 topics.

In one process, the hub alone (``publish_nowait`` then ``FanOut.flush``; every stream's
``send`` is a do-nothing callable returning an "already finished" object, what
Granian's eager send returns): the network and the ASGI server cost the same whatever
the hub does, so the hub's share is what patterns can change. One hub per count of
pattern streams (``--counts``; each stream has a distinct pattern ``p/<i>/*``), built up
front; the rounds visit the hubs in turn, so the machine's noise spreads over all of
them, and each figure is the median of ``--rounds`` rounds. Scenarios:

* ``exact``: a publish to a topic of 100 exact subscribers that no pattern matches;
* ``held``: a publish to a topic one pattern stream holds (``p/7/feed``), against
  ``held-exact``, the same topic with one exact subscriber in the hub without patterns;
* ``new-topic``: the first publish to a topic that no pattern matches (``q/new-<n>``):
  what the index costs every new topic; ``new-matched``: one that ``p/7/*`` matches
  (``p/7/new-<n>``), which joins that stream (with none, no stream: the same topic
  creation alone);
* ``deliveries``: 1,000 topics ``u/<i>/inbox``, each held by one stream of ``u/<i>/*``
  (or, ``deliveries-exact``, one exact subscriber each), one event to each per round:
  events delivered per second.

Then ``subscribe`` and ``resume`` for ``big/*`` over 1,000 topics of one event each
(among 100,000 other topics): the first such stream (it builds the names' index), the
next ones, and a resume over 1,000 events of 1,000 topics created after the id.

    python -m benches.patterns [--counts 0,1000,10000,100000] [--rounds 30] [--out DIR]
    python -m benches.patterns --quick        # a smoke run, to a temporary directory

The issue's target: at 10,000 distinct patterns, a publish costs at most 1.2x what it
costs with none (the ``exact`` and ``new-topic`` ratios in the report).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benches.eager import eager_send
from benches.system import machine_and_build
from sse_fast.hub import Hub, PublishRequest
from sse_fast.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"


def _hub() -> Hub:
    return Hub(Settings(max_topics=1_000_000, max_stream_patterns=8))


async def _attach(hub: Hub, names: list[str], last_event_id: str | None = None) -> Any:
    return await hub.attach(
        names, last_event_id, eager_send, asyncio.get_running_loop().create_future
    )


async def build(patterns: int) -> dict[str, Any]:
    """A hub with ``patterns`` pattern streams and the scenarios' topics and streams."""
    hub = _hub()
    for i in range(patterns):
        await _attach(hub, [f"p/{i}/*"])
    for _ in range(100):
        await _attach(hub, ["t/x"])
    if patterns > 7:
        hub.publish_nowait([PublishRequest(("p/7/feed",), "first")])
    else:
        await _attach(hub, ["p/7/feed"])
    for i in range(1000):
        await _attach(hub, [f"u/{i}/*"] if patterns else [f"u/{i}/inbox"])
    hub.fanout.flush()
    return {"hub": hub, "patterns": patterns, "new": 0}


def _timed(hub: Hub, requests: list[PublishRequest]) -> float:
    start = time.perf_counter()
    hub.publish_nowait(requests)
    hub.fanout.flush()
    return time.perf_counter() - start


def one_round(built: dict[str, Any], timings: dict[str, list[float]], per_round: int) -> None:
    """Each scenario once on one hub, ``per_round`` publishes each (one for new topics)."""
    hub = built["hub"]
    exact = [PublishRequest(("t/x",), "x" * 40)]
    held = [PublishRequest(("p/7/feed",), "x" * 40)]
    spent = sum(_timed(hub, exact) for _ in range(per_round))
    timings.setdefault("exact", []).append(spent / per_round)
    name = "held" if built["patterns"] > 7 else "held-exact"
    spent = sum(_timed(hub, held) for _ in range(per_round))
    timings.setdefault(name, []).append(spent / per_round)
    for kind, prefix in (("new-topic", "q"), ("new-matched", "p/7")):
        spent = 0.0
        for _ in range(per_round):
            built["new"] += 1
            spent += _timed(hub, [PublishRequest((f"{prefix}/new-{built['new']}",), "x")])
        timings.setdefault(kind, []).append(spent / per_round)
    inbox = [PublishRequest((f"u/{i}/inbox",), "x" * 40) for i in range(1000)]
    spent = _timed(hub, inbox)
    kind = "deliveries" if built["patterns"] else "deliveries-exact"
    timings.setdefault(kind, []).append(1000 / spent)


async def subscribe_and_resume(others: int) -> dict[str, float]:
    """Milliseconds: the first ``big/*`` stream (building the names' index), the median of
    20 more, and a resume over 1,000 events of 1,000 topics created after its id."""
    hub = _hub()
    for i in range(others):
        hub.publish_nowait([PublishRequest((f"other/{i}",), "x")])
    for i in range(1000):
        hub.publish_nowait([PublishRequest((f"big/{i}",), "x")])
    hub.fanout.flush()
    start = time.perf_counter()
    await _attach(hub, ["big/*"])
    first = time.perf_counter() - start
    times = []
    for _ in range(20):
        start = time.perf_counter()
        await _attach(hub, ["big/*"])
        times.append(time.perf_counter() - start)
    (mark,) = hub.publish_nowait([PublishRequest(("big/0",), "mark")])
    for i in range(1000):
        hub.publish_nowait([PublishRequest((f"big/new-{i}",), "y" * 40)])
    hub.fanout.flush()
    resumes = []
    for _ in range(5):
        start = time.perf_counter()
        stream = await _attach(hub, ["big/*"], mark)
        resumes.append(time.perf_counter() - start)
        assert stream.resume == "resumed", stream.resume
    return {
        "first_subscribe_ms": first * 1e3,
        "subscribe_ms": statistics.median(times) * 1e3,
        "resume_1000_events_ms": statistics.median(resumes) * 1e3,
    }


async def run(counts: list[int], rounds: int, per_round: int, others: int) -> dict[str, Any]:
    built = [await build(count) for count in counts]
    timings: list[dict[str, list[float]]] = [{} for _ in counts]
    for _ in range(rounds):
        for one, found in zip(built, timings, strict=True):
            one_round(one, found, per_round)
    results = {
        str(count): {name: statistics.median(values) for name, values in found.items()}
        for count, found in zip(counts, timings, strict=True)
    }
    return {
        "machine": machine_and_build(),
        "conditions": {"counts": counts, "rounds": rounds, "per_round": per_round},
        "results": results,
        "one_pattern_over_1000_topics": await subscribe_and_resume(others),
        "others": others,
    }


def report(data: dict[str, Any]) -> str:
    """The markdown report: per count, each scenario's figure and its ratio to the
    first count's (with none: 1.00x)."""
    results = data["results"]
    counts = list(results)
    base = results[counts[0]]
    lines = [
        "# Pattern subscriptions: what they cost the hub",
        "",
        "`python -m benches.patterns` (the hub alone, in one process; see its docstring).",
        f"Medians of {data['conditions']['rounds']} rounds, the hubs visited in turn; "
        "ratios against the hub without pattern streams, in the same run.",
        "",
        "| pattern streams | publish, exact topic (us) | ratio | first publish, new topic "
        "(us) | ratio | new topic a pattern matches (us) | publish, topic a pattern holds "
        "(us) | deliveries/s over 1,000 topics |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for count in counts:
        one = results[count]
        held = one.get("held", one.get("held-exact", 0.0))
        rate = one.get("deliveries", one.get("deliveries-exact", 0.0))
        lines.append(
            f"| {int(count):,} | {one['exact'] * 1e6:.2f} | {one['exact'] / base['exact']:.2f}x "
            f"| {one['new-topic'] * 1e6:.2f} | {one['new-topic'] / base['new-topic']:.2f}x "
            f"| {one['new-matched'] * 1e6:.2f} | {held * 1e6:.2f} | {rate:,.0f} |"
        )
    big = data["one_pattern_over_1000_topics"]
    lines += [
        "",
        "With none, the held topic has one exact subscriber and the 1,000 topics one exact "
        "subscriber each: the same work by name.",
        "",
        f"A stream of `big/*` over 1,000 topics (among {data['others']:,} others): the first "
        f"{big['first_subscribe_ms']:.1f} ms (it builds the index of names), the next "
        f"{big['subscribe_ms']:.2f} ms each; a resume over 1,000 events of 1,000 topics "
        f"created after its id {big['resume_1000_events_ms']:.1f} ms.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in data["machine"].items()),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--counts", default="0,1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--others", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run, to a temporary directory"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.counts, args.rounds, args.per_round, args.others = "0,100", 3, 20, 1000
        args.out = Path(tempfile.mkdtemp(prefix="sse-fast-patterns-"))
    counts = [int(c) for c in args.counts.split(",")]
    data = asyncio.run(run(counts, args.rounds, args.per_round, args.others))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "patterns.json").write_text(json.dumps(data, indent=1) + "\n")
    text = report(data)
    (args.out / "patterns.md").write_text(text)
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
