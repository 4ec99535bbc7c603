"""The pure parts of ``benches/loop_profile.py``: reading py-spy's collapsed stacks
of one thread, leaving out the waits, and the stage of a sample. Fast, no server, no
py-spy; run explicitly (the default test run's ``testpaths = ["tests"]``)::

    python -m pytest -n 0 benches/test_loop_profile.py
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from benches import loop_profile as L

ROOT = "<module> (/x/sse_fast/__main__.py:3);serve (/x/sse_fast/cli.py:90)"
GRANIAN = "0x7f00 (/site-packages/granian/_granian.cpython-311-x86_64-linux-gnu.so)"
FLUSH = "FanOut.flush (/x/sse_fast/hub/fanout.py:147)"
APPLY = "FanOut.apply (/x/sse_fast/hub/fanout.py:102)"
STORE = "TopicTable__store (topic_ext.pyx:337)"
LOG = "EventLog.append (/x/sse_fast/brokers/durable/log.py:349)"
TALLY = "tally_topics (records_ext.pyx:204)"
RUN = "Loop__run (loop.c:20313);uv_run (core.c:464)"
READ = "Ring__read (ring_ext.pyx:150)"
ORJSON = "0x7f02 (/site-packages/orjson/orjson.cpython-311-x86_64-linux-gnu.so)"
STREAM = "_Stream.run (/x/sse_fast/app/publish_stream.py:195)"
ACKS = "ack_lines (publish_ext.pyx:189)"
RAW = f"""\
thread (100): MainThread;{ROOT};{RUN};{FLUSH};{GRANIAN};write (libc.so.6) 7
thread (100): MainThread;{ROOT};{RUN};{LOG};{APPLY};{STORE} 5
thread (100): MainThread;{ROOT};{RUN};{LOG};{TALLY} 3
thread (100): MainThread;{ROOT};{RUN};uv__io_poll (linux.c:1452);epoll_pwait (libc.so.6) 40
thread (100): MainThread;{ROOT};{RUN};take_gil (ceval_gil.c:1);pthread_cond_timedwait (libc.so.6);0x7f01 (libc.so.6) 4
thread (100): MainThread;{ROOT};{GRANIAN};unicode_dealloc (libpython3.11.so.1.0) 2
thread (100): MainThread;{ROOT};{RUN};task_step (_asynciomodule.c:2990) 1
thread (200): {GRANIAN};sched_yield (libc.so.6) 50
thread (100): MainThread;{ROOT};{RUN};{LOG};{TALLY} 1
"""


def _stacks(tmp_path: Path) -> dict[tuple[str, ...], int]:
    path = tmp_path / "raw"
    path.write_text(RAW)
    return dict(L.read(path, 100))


def test_read_keeps_one_thread_and_adds_up_repeated_stacks(tmp_path: Path) -> None:
    stacks = _stacks(tmp_path)
    assert sum(stacks.values()) == 63  # thread 200's 50 left out
    tally = [count for stack, count in stacks.items() if stack[-1] == TALLY]
    assert tally == [4]
    assert all(stack[0].startswith("<module>") for stack in stacks)  # the thread's name dropped


@pytest.mark.parametrize(
    ("frames", "stage"),
    [
        ([ROOT, RUN, FLUSH, GRANIAN, "write (libc.so.6)"], "send"),  # Granian's send: the caller's
        ([ROOT, RUN, LOG, APPLY, STORE], "store"),  # the innermost stage wins
        ([ROOT, RUN, LOG, TALLY], "durable"),  # a native frame of no stage: the caller's
        ([ROOT, GRANIAN], "granian"),  # Granian's own, none of our stages inside
        # a node's reading of Redis; what it delivers is stored and flushed as any
        (
            [
                ROOT,
                RUN,
                "Connection._read_loop (/x/sse_fast/brokers/redis/_connection.py:1)",
                "Reader_gets (reader.c:442)",
            ],
            "redis",
        ),
        ([ROOT, RUN, "take (/x/sse_fast/brokers/redis/_buffered.py:63)", APPLY, STORE], "store"),
        (
            [
                ROOT,
                RUN,
                "PubSub.get_message (/x/site-packages/redis/asyncio/client.py:1618)",
                "timeout (asyncio/timeouts.py:145)",
            ],
            "redis",
        ),
        ([ROOT, RUN, "task_step (_asynciomodule.c:2990)"], "loop"),
        ([ROOT, "PyObject_Malloc (obmalloc.c:1)"], "other"),  # cli.py is not "app"
        ([ROOT, RUN, FLUSH, "gc_collect_main (libpython3.11.so.1.0)"], "gc"),
        # a ring read by the flush is the flush's, a ring write by the store the store's
        ([ROOT, RUN, FLUSH, "TopicTable__flush (topic_ext.pyx:379)", READ], "send"),
        ([ROOT, RUN, APPLY, "TopicTable__keep (topic_ext.pyx:285)", READ], "store"),
        # JSON is its caller's: a line parsed, a response written
        ([ROOT, STREAM, "_Stream.take (/x/sse_fast/app/publish_stream.py:254)", ORJSON], "parse"),
        ([ROOT, "send_json (/x/sse_fast/app/http.py:107)", ORJSON], "answer"),
        # the acks built natively are the answer, not the parse
        ([ROOT, STREAM, ACKS, "publish_ext__ack (publish_ext.pyx:186)"], "answer"),
        # the stream's loop: awaiting Granian's receive, or its own lines
        ([ROOT, STREAM, GRANIAN, "write (libc.so.6)"], "receive"),
        ([ROOT, STREAM, "_ensure_future (/lib/python3.11/asyncio/tasks.py:663)"], "receive"),
        ([ROOT, STREAM], "app"),
    ],
)
def test_stage_of(frames: list[str], stage: str) -> None:
    assert L.stage_of(";".join(frames).split(";")) == stage


def test_summarize_leaves_out_the_waits(tmp_path: Path) -> None:
    summary = L.summarize(collections.Counter(_stacks(tmp_path)))
    assert summary["idle_samples"] == 44  # epoll (40) and the GIL's condition wait (4)
    assert summary["samples"] == 19
    assert summary["stages"]["send"] == 7
    assert summary["stages"]["store"] == 5
    assert summary["stages"]["durable"] == 4
    assert summary["stages"]["granian"] == 2
    assert summary["stages"]["loop"] == 1
    assert summary["granian"] == 9  # send's 7 and Granian's own 2
    assert sum(summary["stages"].values()) == summary["samples"]
    assert summary["top"][0] == ("write (libc.so.6)", 7)
    assert ("tally_topics (records_ext.pyx:204)", 4) in summary["top"]
