"""Benchmark scenarios shared by ``bench_core.py`` (timeit script) and
``test_bench_core.py`` (pytest-benchmark).

Every scenario is a ``Case``: one call that is timed, plus a ``check`` that
verifies what that call produces against an independent oracle (hand-built
frames, known event lists), so a broken implementation fails loudly instead of
producing a nice number. ``bench_core.py`` additionally asserts that the Cython
and the pure-Python twin return byte-identical results for every input.

Implementations:

* ``ext``  -- the Cython extensions ``sse_fast._core.encoder_ext`` / ``parser_ext`` / ``ring_ext``
* ``py``   -- the pure-Python twins ``sse_fast._core.encoder_py`` / ``parser_py`` / ``ring_py``
* ``sse_starlette`` -- ``sse_starlette.event.ServerSentEvent(...).encode()`` (encoder only)
"""

from __future__ import annotations

import itertools
import random
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sse_starlette.event import JSONServerSentEvent, ServerSentEvent

from sse_fast._core import encoder_ext as _encoder_ext
from sse_fast._core import encoder_py as _encoder_py
from sse_fast._core import parser_ext as _parser_ext
from sse_fast._core import parser_py as _parser_py
from sse_fast._core import ring_ext as _ring_ext
from sse_fast._core import ring_py as _ring_py

ENCODERS = {"ext": _encoder_ext, "py": _encoder_py}
PARSERS = {"ext": _parser_ext, "py": _parser_py}
RINGS = {"ext": _ring_ext, "py": _ring_py}

EXT, PY, SS = "ext", "py", "sse_starlette"
SS_PRESER = "sse_starlette (pre-serialised str)"
SS_JSONSSE = "sse_starlette JSONServerSentEvent"
CORE_IMPLS = (EXT, PY)
ENCODE_IMPLS = (EXT, PY, SS)

EVENT = "update"
EVENT_ID = "12345"

# ---------------------------------------------------------------- inputs

#: ~80 bytes once serialised (82 with orjson).
SMALL_JSON: dict[str, Any] = {
    "type": "price",
    "sym": "ACME",
    "bid": 101.25,
    "ask": 101.5,
    "ts": 1700000000123,
    "seq": 42,
}
SMALL_JSON_TEXT: str = orjson.dumps(SMALL_JSON).decode()
SMALL_BYTES: bytes = orjson.dumps(SMALL_JSON)  # pre-serialised, ``bytes`` data

_WORDS = [
    "event",
    "stream",
    "server",
    "sent",
    "fan",
    "out",
    "ring",
    "cursor",
    "frame",
    "parser",
    "encoder",
    "update",
    "price",
    "tick",
    "symbol",
    "market",
    "order",
    "book",
    "quote",
    "trade",
    "latency",
    "throughput",
    "buffer",
]


def ascii_text(size: int, seed: int) -> str:
    """Deterministic single-line ASCII prose of exactly ``size`` characters."""
    rng = random.Random(seed)
    parts: list[str] = []
    n = 0
    while n <= size:
        word = rng.choice(_WORDS)
        parts.append(word)
        n += len(word) + 1
    return " ".join(parts)[:size]


def lines_text(count: int, width: int, seed: int) -> str:
    """``count`` lines of ``width`` ASCII characters joined with LF (no trailing LF)."""
    return "\n".join(ascii_text(width, seed + i) for i in range(count))


LINES16: str = lines_text(16, 40, 1)  # 16 lines, 655 bytes
TEXT_4K: str = ascii_text(4096, 2)  # one line
TEXT_64K: str = ascii_text(65536, 3)  # one line
TEXT_64K_LINES: str = lines_text(1024, 63, 4)  # 1024 lines of 63 chars + LF = 65535 bytes
assert len(LINES16) == 16 * 41 - 1 and LINES16.count("\n") == 15
assert len(TEXT_4K) == 4096 and len(TEXT_64K) == 65536 and len(TEXT_64K_LINES) == 65535


def frame(data: bytes | None, event: str | None = None, id: str | None = None) -> bytes:
    """Independent oracle: the exact frame sse_fast must write (LF line ends,
    event before id, one ``data:`` line per LF-separated line)."""
    out = b""
    if event is not None:
        out += b"event: " + event.encode() + b"\n"
    if id is not None:
        out += b"id: " + id.encode() + b"\n"
    if data is not None:
        out += b"".join(b"data: " + line + b"\n" for line in data.split(b"\n"))
    return out + b"\n"


# ------------------------------------------------------------ parser inputs

SMALL_EVENT_SIZE = 100
N_SMALL_EVENTS = 10_000
CHUNK = 64 * 1024


def _small_payload(i: int) -> str:
    head = f'{{"type":"tick","seq":{i:05d},"px":101.25,"note":"'
    fixed = len(frame(b"", EVENT, f"{i:05d}")) + len(head) + 2
    return head + "x" * (SMALL_EVENT_SIZE - fixed) + '"}'


SMALL_EVENTS: list[tuple[str, str, str, None]] = [
    (EVENT, _small_payload(i), f"{i:05d}", None) for i in range(10_000, 10_000 + N_SMALL_EVENTS)
]
SMALL_FRAMES: list[bytes] = [frame(d.encode(), e, i) for e, d, i, _ in SMALL_EVENTS]
assert all(len(f) == SMALL_EVENT_SIZE for f in SMALL_FRAMES)
SMALL_STREAM: bytes = b"".join(SMALL_FRAMES)

N_BIG_EVENTS = 128  # 128 x ~64 KB = 8.4 MB
BIG_EVENTS: list[tuple[str, str, str, None]] = [
    (EVENT, TEXT_64K, f"{i:05d}", None) for i in range(N_BIG_EVENTS)
]
BIG_STREAM: bytes = b"".join(frame(d.encode(), e, i) for e, d, i, _ in BIG_EVENTS)
BIG_LINES_EVENTS: list[tuple[str, str, str, None]] = [
    (EVENT, TEXT_64K_LINES, f"{i:05d}", None) for i in range(N_BIG_EVENTS)
]
BIG_LINES_STREAM: bytes = b"".join(frame(d.encode(), e, i) for e, d, i, _ in BIG_LINES_EVENTS)


def chunks_of(stream: bytes, size: int = CHUNK) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def parse_count(parser_cls: type, chunks: list[bytes]) -> int:
    """The timed parser operation: a fresh parser over the whole stream."""
    parser = parser_cls()
    n = 0
    for chunk in chunks:
        n += len(parser.feed(chunk))
    parser.close()
    return n


def parse_all(parser_cls: type, chunks: list[bytes]) -> list[tuple[str, str, str, Any]]:
    parser = parser_cls()
    out: list[tuple[str, str, str, Any]] = []
    for chunk in chunks:
        out.extend((e.event, e.data, e.id, e.retry) for e in parser.feed(chunk))
    parser.close()
    return out


def parse_frames(raw: bytes) -> list[tuple[str, str, str, Any]]:
    """Semantic view of encoded output (used to check every encoder, sse-starlette included)."""
    return parse_all(_parser_py.Parser, [raw])


# ------------------------------------------------------------ sse-starlette


def ss_encode(data: str, event: str | None = None, id: str | None = None) -> bytes:
    return ServerSentEvent(data, event=event, id=id).encode()


def ss_encode_json(obj: Any, event: str | None = None, id: str | None = None) -> bytes:
    # sse-starlette does not serialise dicts in ServerSentEvent: serialise here (orjson).
    return ServerSentEvent(orjson.dumps(obj).decode(), event=event, id=id).encode()


def ss_encode_jsonsse(obj: Any, event: str | None = None, id: str | None = None) -> bytes:
    return JSONServerSentEvent(obj, event=event, id=id).encode()


def ss_encode_bytes(data: bytes, event: str | None = None, id: str | None = None) -> bytes:
    # ServerSentEvent would write str(b"...") == "b'...'": decode first.
    return ServerSentEvent(data.decode(), event=event, id=id).encode()


def ss_join(events: list[ServerSentEvent]) -> bytes:
    return b"".join([e.encode() for e in events])


def ss_build_join(items: list[tuple[Any, str]]) -> bytes:
    return b"".join(
        [ServerSentEvent(orjson.dumps(d).decode(), event=EVENT, id=i).encode() for d, i in items]
    )


def fast_build_join(
    event_cls: type, encode_many: Callable[[list[Any]], bytes], items: list[tuple[Any, str]]
) -> bytes:
    return encode_many([event_cls(d, event=EVENT, id=i) for d, i in items])


MANY_ITEMS: list[tuple[dict[str, Any], str]] = [
    ({**SMALL_JSON, "seq": i}, str(20_000 + i)) for i in range(100)
]
MANY_EXPECTED_BYTES: bytes = b"".join(frame(orjson.dumps(d), EVENT, i) for d, i in MANY_ITEMS)
MANY_EXPECTED: list[tuple[str, str, str, None]] = [
    (EVENT, orjson.dumps(d).decode(), i, None) for d, i in MANY_ITEMS
]


# ----------------------------------------------------------------- the Case


@dataclass
class Case:
    group: str  # "encode" | "parser" | "ring"
    scenario: str
    impl: str
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    stmt: str | None = None  # alternative to fn/args: a statement over ``ns``
    ns: dict[str, Any] = field(default_factory=dict)
    nbytes: int | None = None  # bytes processed per op (for MB/s)
    expected_bytes: bytes | None = None  # exact result (sse_fast encoders)
    expected_events: list[Any] | None = None  # semantic result (parsed frames / events)
    checker: Callable[[Case], None] | None = None  # custom check (parser, ring)
    note: str = ""
    primary: bool = True  # False: an extra variant row (not charted, not a ratio base)

    def call(self) -> Any:
        if self.stmt is not None:
            return eval(self.stmt, dict(self.ns))
        assert self.fn is not None
        return self.fn(*self.args, **self.kwargs)

    def zero_arg(self) -> Callable[[], Any]:
        if self.stmt is not None:
            return eval(f"lambda: {self.stmt}", dict(self.ns))  # type: ignore[no-any-return]
        fn, args, kwargs = self.fn, self.args, self.kwargs
        assert fn is not None
        return lambda: fn(*args, **kwargs)

    def timer(self) -> timeit.Timer:
        """A timeit.Timer running the call with every name bound to a local."""
        if self.stmt is not None:
            ns, stmt = dict(self.ns), self.stmt
        else:
            ns = {"_fn": self.fn}
            parts = []
            for i, arg in enumerate(self.args):
                ns[f"_a{i}"] = arg
                parts.append(f"_a{i}")
            for key, value in self.kwargs.items():
                ns[f"_k_{key}"] = value
                parts.append(f"{key}=_k_{key}")
            stmt = f"_fn({', '.join(parts)})"
        setup = "; ".join(f"{name} = _ns[{name!r}]" for name in ns) or "pass"
        return timeit.Timer(stmt, setup, globals={"_ns": ns})

    def check(self) -> Any:
        """Run once and verify the result; returns it."""
        result = self.call()
        if self.expected_bytes is not None:
            assert result == self.expected_bytes, (
                f"{self.scenario}/{self.impl}: wrong bytes: {result[:200]!r}"
            )
        if self.expected_events is not None:
            got = parse_frames(result)
            assert got == self.expected_events, (
                f"{self.scenario}/{self.impl}: wrong events: {got[:3]!r}"
            )
        if self.checker is not None:
            self.checker(self)
        return result


# -------------------------------------------------------------- encode cases


def _encode_case(scenario: str, impl: str) -> Case:
    spec = ENCODE_SPECS[scenario]
    data, event, id, nbytes = spec["data"], spec.get("event"), spec.get("id"), spec["nbytes"]
    kwargs = {}
    if event is not None:
        kwargs["event"] = event
    if id is not None:
        kwargs["id"] = id
    semantic = [(event or "message", spec["text"], id or "", None)]
    if impl in CORE_IMPLS:
        mod = ENCODERS[impl]
        return Case(
            "encode",
            scenario,
            impl,
            mod.encode,
            (data,),
            kwargs,
            nbytes=nbytes,
            expected_bytes=spec["expected"],
            expected_events=semantic,
        )
    if impl == SS:
        fn = {"json": ss_encode_json, "bytes": ss_encode_bytes}.get(spec["kind"], ss_encode)
        note = {
            "json": "sse-starlette gets orjson.dumps(dict).decode() inside the timed call",
            "bytes": "sse-starlette gets data.decode() inside the timed call "
            "(it would write str(bytes) = \"b'...'\")",
        }.get(spec["kind"], "")
        return Case(
            "encode",
            scenario,
            impl,
            fn,
            (data,),
            kwargs,
            nbytes=nbytes,
            expected_events=semantic,
            note=note,
        )
    if impl == SS_PRESER and spec["kind"] == "json":
        return Case(
            "encode",
            scenario,
            impl,
            ss_encode,
            (SMALL_JSON_TEXT,),
            kwargs,
            nbytes=nbytes,
            expected_events=semantic,
            primary=False,
            note="variant: JSON string serialised before timing (serialisation not counted)",
        )
    if impl == SS_JSONSSE and spec["kind"] == "json":
        return Case(
            "encode",
            scenario,
            impl,
            ss_encode_jsonsse,
            (data,),
            kwargs,
            nbytes=nbytes,
            expected_events=semantic,
            primary=False,
            note="variant: sse-starlette's own JSONServerSentEvent (stdlib json.dumps)",
        )
    raise KeyError(f"no implementation {impl!r} for {scenario}")


def _spec(kind: str, data: Any, text: str, **fields: str) -> dict[str, Any]:
    raw = text.encode()
    return {
        "kind": kind,
        "data": data,
        "text": text,
        "nbytes": len(raw),
        "expected": frame(raw, fields.get("event"), fields.get("id")),
        **fields,
    }


ENCODE_SPECS: dict[str, dict[str, Any]] = {
    "encode_small_json": _spec("json", SMALL_JSON, SMALL_JSON_TEXT, event=EVENT, id=EVENT_ID),
    "encode_small_bytes": _spec("bytes", SMALL_BYTES, SMALL_JSON_TEXT, event=EVENT, id=EVENT_ID),
    "encode_16_lines": _spec("text", LINES16, LINES16),
    "encode_text_4k": _spec("text", TEXT_4K, TEXT_4K),
    "encode_text_64k": _spec("text", TEXT_64K, TEXT_64K),
    "encode_text_64k_1024_lines": _spec("text", TEXT_64K_LINES, TEXT_64K_LINES),
}

ENCODE_NOTES = {
    "encode_small_json": f"dict -> {len(SMALL_BYTES)} B JSON, event='update', id='12345'",
    "encode_small_bytes": f"{len(SMALL_BYTES)} B pre-serialised bytes, event='update', id='12345'",
    "encode_16_lines": f"str of 16 lines x 40 chars ({len(LINES16)} B), data only",
    "encode_text_4k": "4096 B one-line ASCII str, data only",
    "encode_text_64k": "65536 B one-line ASCII str, data only",
    "encode_text_64k_1024_lines": "65535 B ASCII str of 1024 lines x 63 chars (extra scenario)",
    "encode_many_100": "100 Event objects built beforehand; sse-starlette: b''.join of 100 "
    "ServerSentEvent.encode()",
    "build_and_encode_many_100": "construct 100 Event(dict, event, id) + encode_many "
    "(extra, like-for-like with sse-starlette)",
}


def _many_case(impl: str) -> Case:
    if impl in CORE_IMPLS:
        mod = ENCODERS[impl]
        events = [mod.Event(d, event=EVENT, id=i) for d, i in MANY_ITEMS]
        return Case(
            "encode",
            "encode_many_100",
            impl,
            mod.encode_many,
            (events,),
            nbytes=len(MANY_EXPECTED_BYTES),
            expected_bytes=MANY_EXPECTED_BYTES,
            expected_events=MANY_EXPECTED,
            note="frames were encoded when the Events were built: this is a join of 100 cached "
            "frames",
        )
    if impl == SS:
        events = [
            ServerSentEvent(orjson.dumps(d).decode(), event=EVENT, id=i) for d, i in MANY_ITEMS
        ]
        return Case(
            "encode",
            "encode_many_100",
            impl,
            ss_join,
            (events,),
            nbytes=len(MANY_EXPECTED_BYTES),
            expected_events=MANY_EXPECTED,
            note="ServerSentEvent objects built beforehand; each .encode() formats the frame",
        )
    raise KeyError(impl)


def _build_many_case(impl: str) -> Case:
    if impl in CORE_IMPLS:
        mod = ENCODERS[impl]
        return Case(
            "encode",
            "build_and_encode_many_100",
            impl,
            fast_build_join,
            (mod.Event, mod.encode_many, MANY_ITEMS),
            nbytes=len(MANY_EXPECTED_BYTES),
            expected_bytes=MANY_EXPECTED_BYTES,
            expected_events=MANY_EXPECTED,
        )
    if impl == SS:
        return Case(
            "encode",
            "build_and_encode_many_100",
            impl,
            ss_build_join,
            (MANY_ITEMS,),
            nbytes=len(MANY_EXPECTED_BYTES),
            expected_events=MANY_EXPECTED,
            note="orjson.dumps inside the timed call",
        )
    raise KeyError(impl)


# -------------------------------------------------------------- parser cases

PARSER_SPECS: dict[str, tuple[bytes, list[Any], str]] = {
    "parse_small_10k": (
        SMALL_STREAM,
        SMALL_EVENTS,
        f"{N_SMALL_EVENTS} events x {SMALL_EVENT_SIZE} B (event, id, one data line), "
        f"{len(SMALL_STREAM)} B stream, 64 KiB chunks",
    ),
    "parse_64k_events": (
        BIG_STREAM,
        BIG_EVENTS,
        f"{N_BIG_EVENTS} events x 64 KiB one-line data, {len(BIG_STREAM)} B stream, 64 KiB chunks",
    ),
    "parse_64k_events_1024_lines": (
        BIG_LINES_STREAM,
        BIG_LINES_EVENTS,
        f"{N_BIG_EVENTS} events x 64 KiB data in 1024 lines, {len(BIG_LINES_STREAM)} B stream, "
        "64 KiB chunks (extra scenario)",
    ),
}


def _parser_case(scenario: str, impl: str) -> Case:
    stream, expected, note = PARSER_SPECS[scenario]
    chunks = chunks_of(stream)
    parser_cls = PARSERS[impl].Parser

    def checker(case: Case) -> None:
        got = parse_all(parser_cls, chunks)
        assert len(got) == len(expected), f"{scenario}/{impl}: {len(got)} events"
        assert got == expected, f"{scenario}/{impl}: events differ from the generated ones"
        assert parse_count(parser_cls, chunks) == len(expected)

    return Case(
        "parser",
        scenario,
        impl,
        parse_count,
        (parser_cls, chunks),
        nbytes=len(stream),
        checker=checker,
        note=note,
    )


# ---------------------------------------------------------------- ring cases

RING_FRAME = SMALL_FRAMES[0]  # 100 bytes
PUBLISH_RING_FRAMES = 1024
READ_RING_FRAMES = 2048
N_IDS = 4096  # > ring size: ids stay unique within the retained window


def _ring_publish_case(impl: str, with_id: bool) -> Case:
    ring = RINGS[impl].Ring(max_frames=PUBLISH_RING_FRAMES, max_bytes=16 * 1024 * 1024)
    ids = [f"id-{i}" for i in range(N_IDS)]
    # Warm and full: two laps, so every further publish evicts the oldest frame.
    for i in range(2 * PUBLISH_RING_FRAMES):
        ring.publish(RING_FRAME, ids[i % N_IDS] if with_id else None)
    scenario = "ring_publish_with_id" if with_id else "ring_publish"

    def checker(case: Case) -> None:
        head = ring.head
        assert len(ring) == PUBLISH_RING_FRAMES, repr(ring)
        assert ring.nbytes == PUBLISH_RING_FRAMES * len(RING_FRAME), repr(ring)
        assert ring.evicted == head - PUBLISH_RING_FRAMES, repr(ring)
        data, cursor = ring.read_since(head - PUBLISH_RING_FRAMES)
        assert cursor == head and data == RING_FRAME * PUBLISH_RING_FRAMES
        if with_id:
            assert ring.resume(ids[(head - 1) % N_IDS]) == head

    if with_id:
        nxt = itertools.cycle(ids).__next__
        for _ in range(ring.head % N_IDS):  # keep the id cycle aligned with the sequence
            nxt()
        return Case(
            "ring",
            scenario,
            impl,
            stmt="publish(frame, nxt())",
            ns={"publish": ring.publish, "frame": RING_FRAME, "nxt": nxt},
            checker=checker,
            note=f"full ring of {PUBLISH_RING_FRAMES} x 100 B, distinct str ids (each publish "
            "evicts one frame and one id); includes an itertools.cycle next() call",
        )
    return Case(
        "ring",
        scenario,
        impl,
        ring.publish,
        (RING_FRAME,),
        checker=checker,
        note=f"full ring of {PUBLISH_RING_FRAMES} x 100 B frames, no event id; every publish "
        "evicts the oldest frame",
    )


def _ring_read_case(impl: str, pending: int) -> Case:
    ring = RINGS[impl].Ring(max_frames=READ_RING_FRAMES, max_bytes=16 * 1024 * 1024)
    for i in range(READ_RING_FRAMES):  # full, nothing evicted yet
        ring.publish(SMALL_FRAMES[i], SMALL_EVENTS[i][2])
    cursor = ring.head - pending
    expected = (b"".join(SMALL_FRAMES[READ_RING_FRAMES - pending : READ_RING_FRAMES]), ring.head)

    def checker(case: Case) -> None:
        assert ring.evicted == 0
        got = ring.read_since(cursor)
        assert got == expected, f"read_since({pending}) returned wrong frames"

    return Case(
        "ring",
        f"ring_read_since_{pending}",
        impl,
        ring.read_since,
        (cursor,),
        nbytes=pending * SMALL_EVENT_SIZE,
        checker=checker,
        note=f"{pending} pending distinct 100 B frames in a {READ_RING_FRAMES}-slot ring "
        "(nothing lost)",
    )


# ---------------------------------------------------------------- registry

SCENARIOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "encode_small_json": ("encode", (EXT, PY, SS, SS_PRESER, SS_JSONSSE)),
    "encode_small_bytes": ("encode", ENCODE_IMPLS),
    "encode_16_lines": ("encode", ENCODE_IMPLS),
    "encode_text_4k": ("encode", ENCODE_IMPLS),
    "encode_text_64k": ("encode", ENCODE_IMPLS),
    "encode_text_64k_1024_lines": ("encode", ENCODE_IMPLS),
    "encode_many_100": ("encode", ENCODE_IMPLS),
    "build_and_encode_many_100": ("encode", ENCODE_IMPLS),
    "parse_small_10k": ("parser", CORE_IMPLS),
    "parse_64k_events": ("parser", CORE_IMPLS),
    "parse_64k_events_1024_lines": ("parser", CORE_IMPLS),
    "ring_publish": ("ring", CORE_IMPLS),
    "ring_publish_with_id": ("ring", CORE_IMPLS),
    "ring_read_since_1": ("ring", CORE_IMPLS),
    "ring_read_since_10": ("ring", CORE_IMPLS),
    "ring_read_since_1000": ("ring", CORE_IMPLS),
}


def build_case(scenario: str, impl: str) -> Case:
    """A fresh Case (fresh ring state) for one scenario and implementation."""
    if scenario in ENCODE_SPECS:
        return _encode_case(scenario, impl)
    if scenario == "encode_many_100":
        return _many_case(impl)
    if scenario == "build_and_encode_many_100":
        return _build_many_case(impl)
    if scenario in PARSER_SPECS:
        return _parser_case(scenario, impl)
    if scenario == "ring_publish":
        return _ring_publish_case(impl, with_id=False)
    if scenario == "ring_publish_with_id":
        return _ring_publish_case(impl, with_id=True)
    if scenario.startswith("ring_read_since_"):
        return _ring_read_case(impl, int(scenario.rsplit("_", 1)[1]))
    raise KeyError(scenario)


def description(scenario: str) -> str:
    """One line describing a scenario's input."""
    if scenario in ENCODE_NOTES:
        return ENCODE_NOTES[scenario]
    if scenario in PARSER_SPECS:
        return PARSER_SPECS[scenario][2]
    return build_case(scenario, EXT).note


def all_cases() -> list[Case]:
    return [build_case(s, impl) for s, (_, impls) in SCENARIOS.items() for impl in impls]
