"""Where a worker's event loop spends its time: py-spy samples, by stage.

``benches.notifications --profile`` records every sse_fast step with
:func:`start` (py-spy attached to the Granian worker for the step's middle,
native frames included, so that the Cython core, the garbage collector and the
calls into Granian show) and :func:`summarize` turns the samples of the worker's
main thread (the event loop: the Python side) into shares by stage, which the
step's own CPU figure (``loop_us_per_event``) turns into microseconds per event.

py-spy pauses the worker for each sample (native stacks need it): at
``RATE`` samples a second the worker loses a little time to the sampler, the
same for every target of a run, so a before/after in one run (``--compare-with``)
compares like with like; the figures of a profiled run are not those of an
unprofiled one (the report says which steps were sampled).

Stages are decided by the innermost frame that names one (:data:`STAGES`, in
order): a sample in the parser called from the stream's reading counts as
parsing, one in Granian's ``send`` called from the flush as sending. Frames are
py-spy's ``function (file:line)`` for Python and ``function (library)`` for
native code.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RATE = 100  # samples per second
#: (stage, what it is, patterns: a frame that contains one names the stage).
#: Checked from the innermost frame outwards; the first stage found wins.
STAGES: list[tuple[str, str, tuple[str, ...]]] = [
    ("gc", "Python's garbage collector", ("gc_collect", "collect_with_callback")),
    (
        "send",
        "the flush: one message per topic handed to its subscribers' sends "
        "(FanOut.flush, TopicTable.flush, Granian's send)",
        (
            "FanOut.flush ",
            "FanOut._merge ",
            "FanOut.write_all ",
            "TopicTable__flush",
            "flush (topic_ext.pyx",
            "FanOut._write_events ",
        ),
    ),
    (
        "store",
        "storing in the topics' rings (FanOut.apply, TopicTable.store, the budget)",
        (
            "FanOut.apply ",
            "TopicTable__store",
            "TopicTable__keep",
            "store (topic_ext.pyx",
            "keep_to_budget",
        ),
    ),
    (
        "durable",
        "the data directory's log (records, its write)",
        ("sse_fast/brokers/durable/",),
    ),
    (
        "redis",
        "a node's reading of its Redis subscription (redis-py's get_message, hiredis, the "
        "bulk take, each message's parse; the delivery's store and flush are theirs)",
        ("sse_fast/brokers/redis/", "redis/asyncio/", "redis/_parsers/", "hiredis"),
    ),
    (
        "sequence",
        "positions, ids and frames (the broker, sequencing, the encoder)",
        ("sse_fast/brokers/", "encoder_ext"),
    ),
    (
        "parse",
        "the request's body: lines, JSON, checks",
        ("_Stream.split ", "_Stream.take ", "requests_of", "sse_fast/publishing.py"),
    ),
    (
        "answer",
        "answering: the stream's acks (built and sent), a request's response (Granian's "
        "send included)",
        (
            "_Stream.write ",
            "send_json ",
            "sse_fast/app/_http.py",
            "ack_lines",
            "publish_ext__ack",
        ),
    ),
    (
        "receive",
        "waiting on and taking the request body from Granian (receive)",
        ("PublishEndpoint.read_body ", "BodyDeadlines.read "),
    ),
    (
        "app",
        "the rest of our code (routing, the hub's publish, admission, checks)",
        (
            "sse_fast/app/",
            "sse_fast/hub/",
            "sse_fast/_core/",
            "sse_fast/_tasks",
            "sse_fast/publish",
        ),
    ),
]
#: frames whose stage depends on what they called: (pattern, stage, inner patterns):
#: the stage when a frame inside it matches one of the inner patterns (the stream's
#: loop awaiting Granian's receive), else the frame counts as the stages above say
BY_CALLEE: list[tuple[str, str, tuple[str, ...]]] = [
    ("_Stream.run ", "receive", ("granian/", "ensure_future", "asyncio/")),
]
#: for a sample in none of the stages above (checked the same way)
OUTSIDE: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "granian",
        "Granian's own work on the loop thread (its request tasks, the scope, waking)",
        ("granian/",),
    ),
    (
        "loop",
        "the event loop (uvloop, asyncio: callbacks, tasks, futures)",
        ("uvloop", "asyncio", "loop.c", "Loop__", "uv_run", "uv__"),
    ),
]
OTHER = ("other", "everything else")
#: waiting, not CPU time, left out of the shares: the event loop for work, the
#: thread for the GIL or a lock (one of the innermost frames)
IDLE = ("epoll_pwait", "epoll_wait", "pthread_cond_timedwait", "pthread_cond_wait", "sem_wait")
GRANIAN = "granian/_granian"
_THREAD = re.compile(r"^thread \((\d+)\)(?:: [^;]*)?;(.*) (\d+)$")


def available() -> bool:
    return shutil.which("py-spy") is not None


def start(pid: int, seconds: float, out: Path, rate: int = RATE) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` for ``seconds`` into ``out`` (raw, one stack a line)."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy)")
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--native",
            "--threads",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def read(path: Path, thread: int) -> collections.Counter[tuple[str, ...]]:
    """The stacks of ``thread`` (outermost frame first) and their sample counts."""
    stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        match = _THREAD.match(line)
        if match is None or int(match.group(1)) != thread:
            continue
        stacks[tuple(match.group(2).split(";"))] += int(match.group(3))
    return stacks


def stage_of(stack: Iterable[str]) -> str:
    """The stage of one sample: the innermost frame that names one of
    :data:`STAGES` (or of :data:`BY_CALLEE`), else of :data:`OUTSIDE`, else ``other``."""
    frames = list(stack)[::-1]
    for index, frame in enumerate(frames):
        for pattern, name, inner in BY_CALLEE:
            if pattern in frame and any(p in f for f in frames[:index] for p in inner):
                return name
        for name, _, patterns in STAGES:
            if any(p in frame for p in patterns):
                return name
    for frame in frames:
        for name, _, patterns in OUTSIDE:
            if any(p in frame for p in patterns):
                return name
    return OTHER[0]


def _short(frame: str) -> str:
    """A frame without the path before the package (``sse_fast/...``) or the address."""
    frame = re.sub(r"\(/[^()]*/(site-packages|lib/python3\.\d+)/", "(", frame)
    frame = re.sub(r"\(/[^()]*/(sse_fast|benches)/", r"(\1/", frame)
    return re.sub(r"^0x[0-9a-f]+ ", "? ", frame)


def summarize(stacks: collections.Counter[tuple[str, ...]], top: int = 12) -> dict[str, Any]:
    """Busy samples (the loop not waiting in epoll) by stage, how many of them were
    in Granian's code (its send and receive, called from ours), and the functions
    most often on top (self samples)."""
    total = idle = granian = 0
    by_stage: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for stack, count in stacks.items():
        if any(frame.startswith(name + " ") for frame in stack[-3:] for name in IDLE):
            idle += count
            continue
        total += count
        by_stage[stage_of(stack)] += count
        leaves[_short(stack[-1])] += count
        if any(GRANIAN in frame for frame in stack[-6:]):
            granian += count
    return {
        "samples": total,
        "idle_samples": idle,
        "granian": granian,
        "stages": {name: by_stage.get(name, 0) for name, _, _ in STAGES + OUTSIDE}
        | {OTHER[0]: by_stage.get(OTHER[0], 0)},
        "top": leaves.most_common(top),
    }


def descriptions() -> list[tuple[str, str]]:
    return [(name, what) for name, what, _ in STAGES + OUTSIDE] + [OTHER]
