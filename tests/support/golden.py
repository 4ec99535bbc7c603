"""Golden vectors: encode() keyword arguments -> exact frame bytes, and what a
spec-following parser must read back (None when the frame fires no event)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (kwargs, frame, parsed (event, data, id, retry) or None)
GOLDEN: list[tuple[dict[str, Any], bytes, tuple[str, str, str, int | None] | None]] = [
    ({"data": "hello"}, b"data: hello\n\n", ("message", "hello", "", None)),
    ({"data": ""}, b"data: \n\n", ("message", "", "", None)),
    ({"data": " leading"}, b"data:  leading\n\n", ("message", " leading", "", None)),
    ({"data": "a\nb"}, b"data: a\ndata: b\n\n", ("message", "a\nb", "", None)),
    ({"data": "a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n", ("message", "a\nb\nc", "", None)),
    ({"data": "end\n"}, b"data: end\ndata: \n\n", ("message", "end\n", "", None)),
    ({"data": "\r"}, b"data: \ndata: \n\n", ("message", "\n", "", None)),
    ({"data": "\r\n\r\n"}, b"data: \ndata: \ndata: \n\n", ("message", "\n\n", "", None)),
    ({"data": "nul\0ok"}, b"data: nul\0ok\n\n", ("message", "nul\0ok", "", None)),
    (
        {"data": "caf\u00e9 \U0001f600"},
        "data: caf\u00e9 \U0001f600\n\n".encode(),
        ("message", "caf\u00e9 \U0001f600", "", None),
    ),
    ({"data": "x", "event": "update"}, b"event: update\ndata: x\n\n", ("update", "x", "", None)),
    ({"data": "x", "event": ""}, b"event: \ndata: x\n\n", ("message", "x", "", None)),
    ({"data": "x", "id": "42"}, b"id: 42\ndata: x\n\n", ("message", "x", "42", None)),
    ({"data": "x", "id": 42}, b"id: 42\ndata: x\n\n", ("message", "x", "42", None)),
    ({"data": "x", "id": " sp"}, b"id:  sp\ndata: x\n\n", ("message", "x", " sp", None)),
    ({"data": "x", "retry": 0}, b"retry: 0\ndata: x\n\n", ("message", "x", "", 0)),
    ({"data": "x", "retry": 3000}, b"retry: 3000\ndata: x\n\n", ("message", "x", "", 3000)),
    (
        {"data": "x", "event": "e", "id": "7", "retry": 5, "comment": "c"},
        b": c\nevent: e\nid: 7\nretry: 5\ndata: x\n\n",
        ("e", "x", "7", 5),
    ),
    ({"data": b"raw\nbytes"}, b"data: raw\ndata: bytes\n\n", ("message", "raw\nbytes", "", None)),
    ({"data": bytearray(b"ba")}, b"data: ba\n\n", ("message", "ba", "", None)),
    ({"data": memoryview(b"mv")}, b"data: mv\n\n", ("message", "mv", "", None)),
    (
        {"data": {"a": 1, "b": "x\ny"}},
        b'data: {"a":1,"b":"x\\ny"}\n\n',
        ("message", '{"a":1,"b":"x\\ny"}', "", None),
    ),
    (
        {"data": [1, 2.5, None, True]},
        b"data: [1,2.5,null,true]\n\n",
        ("message", "[1,2.5,null,true]", "", None),
    ),
    ({"data": 5}, b"data: 5\n\n", ("message", "5", "", None)),
    ({"comment": ""}, b": \n\n", None),
    ({"comment": "keep-alive"}, b": keep-alive\n\n", None),
    ({"comment": "two\nlines"}, b": two\n: lines\n\n", None),
    ({"id": ""}, b"id: \n\n", None),
    ({"id": "9"}, b"id: 9\n\n", None),
    ({"retry": 2500}, b"retry: 2500\n\n", None),
    ({"event": "lonely"}, b"event: lonely\n\n", None),
]


@dataclass
class Point:
    x: int
    y: int


GOLDEN.append(
    ({"data": Point(1, 2)}, b'data: {"x":1,"y":2}\n\n', ("message", '{"x":1,"y":2}', "", None))
)

# kwargs that must raise EncodeError, with the field the error must name.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"data": "x", "event": "a\nb"}, "event"),
    ({"data": "x", "event": "a\rb"}, "event"),
    ({"data": "x", "event": 5}, "event"),
    ({"data": "x", "id": "a\nb"}, "id"),
    ({"data": "x", "id": "a\r"}, "id"),
    ({"data": "x", "id": "a\0b"}, "id"),
    ({"data": "x", "id": 1.5}, "id"),
    ({"data": "x", "id": True}, "id"),
    ({"data": "x", "retry": -1}, "retry"),
    ({"data": "x", "retry": 1.0}, "retry"),
    ({"data": "x", "retry": "10"}, "retry"),
    ({"data": "x", "retry": False}, "retry"),
    ({"data": b"\xff\xfe"}, "data"),
    ({"data": b"ok\xc3"}, "data"),
    ({"data": b"\xed\xa0\x80"}, "data"),  # UTF-8 encoded surrogate
    ({"data": "\ud800"}, "data"),
    ({"data": object()}, "data"),
    ({"data": {1j: 2}}, "data"),
    ({"data": "x", "event": "\udfff"}, "event"),
    ({"comment": 3}, "comment"),
    ({}, "frame"),
]
