"""The Cython core and its pure twins expose the same API and refuse the same
bad arguments the same way (the stubs in ``sse_fast/_*_ext.pyi`` pin the
compiled side with ``mypy.stubtest``; this pins the twins to it)."""

from __future__ import annotations

import inspect
import pickle
from types import SimpleNamespace
from typing import Any

import pytest

from sse_fast import EncodeError, EventTooLarge, Lagged, ParseError

from .conftest import PARITY_IMPLEMENTATIONS, load_implementation

IMPLS = {name: load_implementation(name) for name in PARITY_IMPLEMENTATIONS}
needs_both = pytest.mark.skipif(
    len(IMPLS) < 2,
    reason="this tree was built with SSE_FAST_NO_EXTENSIONS=1: there is no extension to compare",
)


def _public(obj: Any) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def _instances(impl: SimpleNamespace) -> dict[str, Any]:
    return {
        "Event": impl.Event({"n": 1}, event="e", id=1, retry=5, comment="c"),
        "ParsedEvent": impl.ParsedEvent("message", "d", "1", None),
        "Parser": impl.Parser(),
        "Ring": impl.Ring(),
    }


@needs_both
def test_same_public_names_and_attributes() -> None:
    ext, py = IMPLS["ext"], IMPLS["py"]
    for module in ("_encoder", "_parser", "_ring"):
        compiled = __import__(f"sse_fast.{module}_ext", fromlist=["x"])
        twin = __import__(f"sse_fast.{module}_py", fromlist=["x"])
        missing = _public(compiled) - _public(twin) - {"orjson", "utf8_error_at"}
        assert not missing, f"{module}: the twin lacks {missing}"
    for name, ext_obj in _instances(ext).items():
        py_obj = _instances(py)[name]
        assert _public(ext_obj) == _public(py_obj), name


@needs_both
@pytest.mark.parametrize("name", ["Event", "ParsedEvent", "Parser", "Ring"])
def test_the_same_attributes_are_read_only(name: str) -> None:
    outcomes = {}
    for impl_name, impl in IMPLS.items():
        obj = _instances(impl)[name]
        writable = set()
        for attribute in sorted(_public(obj)):
            value = getattr(obj, attribute)
            if callable(value):
                continue
            try:
                setattr(obj, attribute, value)
            except AttributeError:
                continue
            writable.add(attribute)
        outcomes[impl_name] = writable
    assert outcomes["ext"] == outcomes["py"]
    expected_writable = {"Parser": {"last_event_id", "retry"}}.get(name, set())
    assert outcomes["py"] == expected_writable


CALLS = [
    ("Parser(last_event_id=None)", lambda i: i.Parser(last_event_id=None)),
    ("Parser(max_event_size=None)", lambda i: i.Parser(max_event_size=None)),
    ("Parser(max_event_size=0)", lambda i: i.Parser(max_event_size=0)),
    ("Parser(max_event_size=1.5)", lambda i: i.Parser(max_event_size=1.5)),
    ("Parser().feed(None)", lambda i: i.Parser().feed(None)),
    ("Parser().feed('text')", lambda i: i.Parser().feed("text")),
    ("Ring(None)", lambda i: i.Ring(None)),
    ("Ring(max_bytes=None)", lambda i: i.Ring(max_bytes=None)),
    ("Ring().publish(None)", lambda i: i.Ring().publish(None)),
    ("Ring().publish('text')", lambda i: i.Ring().publish("text")),
    ("Ring().publish(b'x', 5)", lambda i: i.Ring().publish(b"x", 5)),
    ("Ring().read_since(None)", lambda i: i.Ring().read_since(None)),
    ("Ring().read_since(True)", lambda i: i.Ring().read_since(True)),
    ("Ring().read_since(5)", lambda i: i.Ring().read_since(5)),
    ("Ring().read_frames(None)", lambda i: i.Ring().read_frames(None)),
    ("Ring().resume(None)", lambda i: i.Ring().resume(None)),
    ("Ring().pending(-1)", lambda i: i.Ring().pending(-1)),
    ("encode()", lambda i: i.encode()),
    ("encode(None)", lambda i: i.encode(None)),
    ("encode(object())", lambda i: i.encode(object())),
    ("encode('x', event=None, id=None, retry=None)", lambda i: i.encode("x", id=None)),
    ("encode('x', id=1.5)", lambda i: i.encode("x", id=1.5)),
    ("encode('x', retry=True)", lambda i: i.encode("x", retry=True)),
    ("encode('x', event=1)", lambda i: i.encode("x", event=1)),
    ("encode(comment=1)", lambda i: i.encode(comment=1)),
    ("encode_many(None)", lambda i: i.encode_many(None)),
    ("encode_many([None])", lambda i: i.encode_many([None])),
    ("Event()", lambda i: i.Event()),
    ("Event(None, id=None)", lambda i: i.Event(None, id=None)),
]


def _outcome(call: Any, impl: SimpleNamespace) -> Any:
    try:
        result = call(impl)
    except Exception as exc:
        return type(exc).__name__
    return result if isinstance(result, (bytes, tuple, int)) or result is None else "ok"


@needs_both
@pytest.mark.parametrize(("text", "call"), CALLS, ids=[text for text, _ in CALLS])
def test_none_and_wrong_types_get_the_same_answer(text: str, call: Any) -> None:
    assert _outcome(call, IMPLS["ext"]) == _outcome(call, IMPLS["py"]), text


@pytest.mark.parametrize("impl_name", PARITY_IMPLEMENTATIONS)
def test_equal_events_hash_equal(impl_name: str) -> None:
    impl = IMPLS[impl_name]
    # equal means the same bytes on the wire
    assert impl.Event(1) != impl.Event(1.0)
    assert impl.Event("1") == impl.Event(1) and hash(impl.Event("1")) == hash(impl.Event(1))
    assert impl.Event({"a": 1}, id=2) == impl.Event({"a": 1}, id="2")
    assert len({impl.Event(1), impl.Event(1.0), impl.Event("1")}) == 2


@pytest.mark.parametrize("impl_name", PARITY_IMPLEMENTATIONS)
def test_errors_and_values_pickle(impl_name: str) -> None:
    impl = IMPLS[impl_name]
    parser = impl.Parser(max_event_size=10)
    with pytest.raises(EventTooLarge) as info:
        parser.feed(b"data: ok\n\ndata: " + b"x" * 50)
    errors: list[Exception] = [
        info.value,
        ParseError("broken", []),
        EncodeError("id", "bad"),
        Lagged(3, 7),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy.__dict__.keys() == error.__dict__.keys()
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.size, copy.limit) == (info.value.size, info.value.limit)
    assert copy.events == info.value.events
    event = impl.ParsedEvent("message", "d", "1", 3)
    assert pickle.loads(pickle.dumps(event)) == event
    sse_event = impl.Event({"n": 1}, event="e", id=1)
    assert pickle.loads(pickle.dumps(sse_event)).encode() == sse_event.encode()


@needs_both
def test_signatures_match() -> None:
    ext, py = IMPLS["ext"], IMPLS["py"]
    for name in ("encode", "Event", "Parser", "Ring"):
        try:
            compiled = inspect.signature(getattr(ext, name))
        except ValueError:  # pragma: no cover - no signature embedded
            continue
        assert list(compiled.parameters) == list(inspect.signature(getattr(py, name)).parameters)
